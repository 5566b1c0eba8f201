"""The exporter as a process, as users run it, and what its scrapes and /proc say."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from cmx_connect_exporter.counting.dimensions import ACTIVE_SESSIONS, DIMENSIONS
from cmx_connect_exporter.exposition.names import POLL_ERRORS, TARGET_LABEL, UP
from cmx_simulator import ActiveCounts
from tool_policy import require_tool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_samples(text: str) -> Samples:
    """Exposition text to {(name, sorted labels): value}, through prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class ExporterProcess:
    """The real console script in a child process, talking to CMX over real HTTP.

    Its output is drained by a thread as it comes, so a chatty debug log can never fill the pipe and
    stall the exporter, and tests can read the log while it runs. ``command`` runs instead of
    ``python -m cmx_connect_exporter``, such as the installed console script. ``wrapper`` goes before the command
    (such as ``unshare``, which execs it, so ``pid`` stays the exporter's). ``http`` is the session
    that scrapes: set its ``verify`` and ``auth`` for an exporter serving TLS or basic auth.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, wrapper: Sequence[str] = (),
                 scheme: str = "http", command: str | None = None) -> None:
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.http.trust_env = False  # else REQUESTS_CA_BUNDLE would override http.verify
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [*wrapper, *([command] if command else [sys.executable, "-m", "cmx_connect_exporter"]),
             "--listen-address", f"127.0.0.1:{self.port}", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, name="exporter-output", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        """Everything it has logged so far."""
        return "".join(self._lines)

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        self.http.close()

    def metrics_text(self, timeout: float = 5) -> str:
        response = self.http.get(self.url + "/metrics", timeout=timeout)
        response.raise_for_status()
        return response.text

    def scrape(self) -> Samples:
        return parse_samples(self.metrics_text())

    def wait_for(self, check: Callable[[Samples], bool], timeout: float = 20) -> Samples:
        """Scrape until ``check`` holds; fails with the last scrape and the log when it never does."""
        deadline = time.monotonic() + timeout
        samples: Samples = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"exporter exited with {self.proc.returncode}:\n{self.stop()}")
            with contextlib.suppress(requests.ConnectionError):
                samples = self.scrape()
                if check(samples):
                    return samples
            time.sleep(0.1)
        pytest.fail(f"condition not met within {timeout} s; last scrape: {samples}\nlog:\n{self.log[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> str:
        """Stop the process as an orchestrator would; returns everything it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(timeout)
        self._reader.join(timeout)
        return self.log


def proc_status(pid: int) -> dict[str, int]:
    """Resident memory and its peak (kB), and thread count of a live process, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, such as the exporter's poll worker."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def of_target(samples: Samples, cmx: str | None = None) -> Samples:
    """One target's series, without their ``cmx`` label; with ``cmx`` None, the one target the scrape has."""
    names = {dict(labels)[TARGET_LABEL] for _, labels in samples if TARGET_LABEL in dict(labels)}
    if cmx is None:
        assert len(names) <= 1, f"the scrape has several targets: {sorted(names)}"
        cmx = next(iter(names), None)
    return {(name, tuple(kv for kv in labels if kv[0] != TARGET_LABEL)): value
            for (name, labels), value in samples.items() if dict(labels).get(TARGET_LABEL) == cmx}


def session_counts(samples: Samples, cmx: str | None = None) -> ActiveCounts | None:
    """The session series of a scrape in the simulator's ground-truth shape; None when there are none."""
    samples = of_target(samples, cmx)
    total = samples.get((ACTIVE_SESSIONS, ()))
    if total is None:
        return None
    by_label: dict[str, dict[str, int]] = {dimension.label: {} for dimension in DIMENSIONS}
    by_metric = {dimension.metric: dimension.label for dimension in DIMENSIONS}
    for (name, labels), value in samples.items():
        if (label := by_metric.get(name)) is not None:
            by_label[label][dict(labels)[label]] = int(value)
    return ActiveCounts(total=int(total), by_label=by_label)


def poll_errors(samples: Samples, cmx: str | None = None, query: str = "active") -> dict[str, float]:
    """``cmx_connect_poll_errors_total`` of one target's query, by reason."""
    return {dict(labels)["reason"]: value for (name, labels), value in of_target(samples, cmx).items()
            if name == f"{POLL_ERRORS.name}_total" and dict(labels)["query"] == query}


def up(samples: Samples, cmx: str | None = None) -> bool:
    return of_target(samples, cmx).get((UP.name, ()), 0) == 1


def console_script() -> str:
    """The installed ``cmx-connect-exporter`` entry point beside this interpreter, as users run it."""
    path = os.path.join(os.path.dirname(sys.executable), "cmx-connect-exporter")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing; install the package with pip install -e .")
    return path


def issued_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A CA file, and a certificate and key it issued for 127.0.0.1, as PEM files in ``folder``."""
    import trustme  # here: most users of this module need no certificate

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    paths = folder / "ca.pem", folder / "server.crt", folder / "server.key"
    ca.cert_pem.write_to_path(paths[0])
    issued.cert_chain_pems[0].write_to_path(paths[1])
    issued.private_key_pem.write_to_path(paths[2])
    return paths


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A truly self-signed certificate for ``host`` (its own CA) and its key, made by the openssl CLI."""
    cert, key = folder / "self-signed.pem", folder / "self-signed.key"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60)
    return cert, key


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process and its live children (the poll worker) have used."""
    total = 0.0
    for each in (pid, *children(pid)):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Scraper(threading.Thread):
    """GETs one URL over and over, ``every`` seconds, on a kept-alive connection as Prometheus does, and keeps
    each answer's time in milliseconds (a failed or refused request counts as a very slow one)."""

    def __init__(self, session: requests.Session, url: str, every: float = 0.05) -> None:
        super().__init__(name="scraper", daemon=True)
        self._session, self._url, self._every = session, url, every
        self.millis: list[float] = []
        self.failures = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self._every):
            started = time.perf_counter()
            try:
                ok = self._session.get(self._url, timeout=5).status_code == 200
            except requests.RequestException:
                ok = False
            self.millis.append((time.perf_counter() - started) * 1000 if ok else 5000.0)
            self.failures += not ok

    def finish(self) -> list[float]:
        self._done.set()
        self.join(10)
        return self.millis


def p99(millis: list[float]) -> float:
    ordered = sorted(millis)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
