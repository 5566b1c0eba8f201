"""The fault matrix: the console script against a CMX that fails in each way we know, over real HTTP.

One scenario drives every case in CASES. The exporter polls a healthy simulator; then the fault
starts and is watched while it lasts; then it clears and the exporter must recover. Throughout, the
exporter must keep its promises: it lives on; every scrape is answered within a second; the failure
shows as ``cmx_connect_up`` 0 and a rising ``cmx_connect_poll_errors_total`` under the case's reason
and no other; the last complete counts stay, never partial ones, until ``CMX_STALE_AFTER`` and then
go; polls never overlap and never storm CMX with retries; and neither the password nor a guest's
data shows in the log (at debug level), on the landing page or in the metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from cmx_connect_exporter.cmx.client import RETRIES
from cmx_connect_exporter.exposition.names import POLL_REQUESTS
from cmx_connect_exporter.outcome import POLL_TIMEOUT_SETTING
from cmx_connect_exporter.polling.handle import WORKER_GRACE
from cmx_simulator import CLIENTS_PATH, ActiveCounts, Simulator
from exporter_process import (
    ExporterProcess,
    Samples,
    children,
    free_port,
    of_target,
    parse_samples,
    poll_errors,
    self_signed_certificate,
    session_counts,
    up,
)

CANARY = "canary-pw-4f1b9e"  # ASCII, so it would show as itself in a JSON log too
SESSIONS, SEED, PAGE_SIZE = 300, 5, 50  # 210 active: five pages, the last one short
K = 2  # faults "on page k of n" start at the third page, after two have been counted
INTERVAL, TIMEOUT, STALE_AFTER = 1, 1, 2
POLL_TIMEOUT = 5  # room for a page's three retries with backoff, which take about 3.5 s
SCRAPE_LIMIT = 1.0  # seconds a scrape may take, whatever CMX does
CLOCK_SLACK = 0.3  # seconds of tolerance when comparing the exporter's clock and ours


# --- how each fault is caused ---------------------------------------------------------------


class Cmx:
    """A simulated CMX on a fixed port, so it can be stopped and started again, and a way to break it."""

    scheme = "http"
    host = "127.0.0.1"

    exporter: ExporterProcess  # set once the exporter runs, for faults of its own processes

    def __init__(self, tmp_path: Path, **sim_options: str) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.sim = Simulator(SESSIONS, seed=SEED, password=CANARY, port=self.port, **sim_options)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def exporter_args(self) -> list[str]:
        return ["--url", self.url]

    def requests_served(self) -> int:
        return self.sim.requests_served

    def break_(self) -> None:
        raise NotImplementedError

    def mend(self) -> None:
        raise NotImplementedError

    def check_after(self) -> None:
        """Promises particular to this fault, checked once the exporter has stopped."""

    def __enter__(self) -> Cmx:
        self.sim.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.sim.stop()


class SimulatorFault(Cmx):
    """One of the simulator's fault switches, on every page or from page ``page`` on."""

    def __init__(self, tmp_path: Path, fault: str, page: int) -> None:
        super().__init__(tmp_path)
        self.fault, self.page = fault, page

    def break_(self) -> None:
        self.sim.fault_from_index = self.page * PAGE_SIZE
        self.sim.fault = self.fault

    def mend(self) -> None:
        self.sim.fault = None


def fault(name: str, page: int = 0) -> Callable[[Path], Cmx]:
    return lambda tmp_path: SimulatorFault(tmp_path, name, page)


class Refused(Cmx):
    """CMX goes away: nothing listens on its port."""

    def break_(self) -> None:
        self.sim.stop()

    def mend(self) -> None:
        self.sim.start()


class Recorder(ThreadingHTTPServer):
    """Another host that writes down every request it gets, and whether it carried credentials."""

    def __init__(self, host: str) -> None:
        self.requests: list[tuple[str, bool]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.requests.append((self.path, "Authorization" in self.headers))
                body = b'{"nextIndex":0,"records":[]}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"


class Redirected(Cmx):
    """CMX answers 302 to another host; the credentials must not follow, nor any request at all."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.elsewhere = Recorder("127.0.0.2")

    def break_(self) -> None:
        self.sim.fault = f"redirect:{self.elsewhere.url}"

    def mend(self) -> None:
        self.sim.fault = None

    def check_after(self) -> None:
        assert self.elsewhere.requests == [], "the exporter followed a redirect to another host"

    def __exit__(self, *_: object) -> None:
        self.elsewhere.shutdown()
        self.elsewhere.server_close()
        super().__exit__()


class WorkerSignalled(Cmx):
    """The poll worker fails, not CMX: each worker the exporter starts is sent ``sig`` until mended."""

    def __init__(self, tmp_path: Path, sig: signal.Signals) -> None:
        super().__init__(tmp_path)
        self.sig = sig
        self.signalled: set[int] = set()
        self.mended = threading.Event()
        self.thread = threading.Thread(target=self._signal_workers, name="worker-signaller", daemon=True)

    def _signal_workers(self) -> None:
        while not self.mended.wait(0.05):
            for pid in set(children(self.exporter.pid)) - self.signalled:
                os.kill(pid, self.sig)
                self.signalled.add(pid)

    def break_(self) -> None:
        self.thread.start()

    def mend(self) -> None:
        self.mended.set()
        self.thread.join(5)
        for pid in self.signalled:  # a stopped worker that was not replaced goes on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def check_after(self) -> None:
        assert len(self.signalled) >= 2, "the failed worker was not replaced"


def worker(sig: signal.Signals) -> Callable[[Path], Cmx]:
    return lambda tmp_path: WorkerSignalled(tmp_path, sig)


# --- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    cause: Callable[[Path], Cmx]
    reason: str
    logs: tuple[str, ...]  # words of the one line each failed poll logs, and any other line it must log
    concurrency: int = 1
    noticed_within: float | None = None  # seconds from a poll's start to its failure, at most


REQUEST_DEADLINE = TIMEOUT + 1  # a request ends as a timeout within CMX_TIMEOUT, plus a second


# One case per failure class, and per way the exporter itself must step in; test_reasons.py maps every fault
# the simulator plays to its reason and words in process, test_client.py the rest (names that do not resolve,
# bodies too large), and test_self_signed_cmx below an untrusted certificate.
CASES = [
    Case("connection-refused", Refused, "connection", ("cannot connect to 127.0.0.1",)),
    Case("http-401", fault("status:401"), "auth", ("authentication failed (HTTP 401)",)),
    Case("http-429-retry-after", fault("status:429"), "http",
         ("rate limited by CMX (HTTP 429)", "skipped: CMX asked to wait")),
    Case("http-500-on-page-3-of-5-concurrency-4", fault("status:500", K), "http", ("CMX answered HTTP 500",),
         concurrency=4),
    Case("redirect-to-another-host", Redirected, "http", ("unexpected redirect (HTTP 302)",)),
    Case("truncated-json-on-page-3", fault("truncated", K), "bad_response", ("page at index 100 is truncated JSON",)),
    Case("ignores-index-concurrency-4", fault("ignore_index", K), "pagination", ("seems to ignore 'index'",),
         concurrency=4),
    Case("hang-past-timeout-on-page-3", fault("hang", K), "timeout", ("no answer from 127.0.0.1 within 1 s",),
         noticed_within=REQUEST_DEADLINE),
    Case("slow-pages-without-end", fault("slow_pages"), "timeout",
         (f"the poll did not end within {POLL_TIMEOUT} s ({POLL_TIMEOUT_SETTING})",), noticed_within=POLL_TIMEOUT + 1),
    Case("poll-worker-stopped", worker(signal.SIGSTOP), "timeout",
         (f"the poll did not end within {POLL_TIMEOUT} s ({POLL_TIMEOUT_SETTING}); its worker was replaced",),
         noticed_within=POLL_TIMEOUT + WORKER_GRACE),
    Case("poll-worker-killed", worker(signal.SIGKILL), "internal", ("the poll worker died (exit code -9)",)),
]


# --- what is watched --------------------------------------------------------------------------


@dataclass
class Scrape:
    text: str
    samples: Samples
    sent: float  # wall clock, as the exporter's timestamps
    received: float


@dataclass
class Watch:
    """Checks every scrape taken while the fault lasts, against the last complete counts."""

    truth: ActiveCounts
    reason: str
    errors_before: dict[str, float]
    requests_per_poll: int
    scrapes: list[Scrape] = field(default_factory=list)
    counts_gone: bool = False
    first_failure: float | None = None  # when a scrape first showed a failed poll

    def check(self, scrape: Scrape) -> None:
        samples = of_target(scrape.samples)
        counts = session_counts(samples)
        last_success = samples[("cmx_connect_last_success_timestamp_seconds", ())]
        if counts is None:
            self.counts_gone = True
            assert scrape.received - last_success >= STALE_AFTER - CLOCK_SLACK, "counts dropped before going stale"
        else:
            assert not self.counts_gone, "counts came back while CMX was still failing"
            assert counts == self.truth, "partial or wrong counts published"
            assert scrape.sent - last_success <= STALE_AFTER + CLOCK_SLACK, "stale counts still published"
        errors = poll_errors(samples)
        for reason, before in self.errors_before.items():
            if reason != self.reason:
                assert errors[reason] == before, f"a {reason} error counted for a {self.reason} fault"
        if errors[self.reason] > self.errors_before[self.reason]:
            assert not up(samples), "cmx_connect_up is 1 after a failed poll"
            if self.first_failure is None:
                self.first_failure = scrape.received
        # absent after a poll whose worker died: what it cost is unknown
        assert samples.get((POLL_REQUESTS.name, ()), 0) <= self.requests_per_poll
        self.scrapes.append(scrape)

    @property
    def failed_polls(self) -> int:
        return int(poll_errors(self.scrapes[-1].samples)[self.reason] - self.errors_before[self.reason])

    @property
    def seen_enough(self) -> bool:
        """Errors that keep rising, and the counts gone stale."""
        return bool(self.scrapes) and self.failed_polls >= 2 and self.counts_gone


def timed_scrape(exporter: ExporterProcess) -> Scrape:
    assert exporter.proc.poll() is None, f"the exporter died:\n{exporter.log[-3000:]}"
    sent = time.time()
    try:
        text = exporter.metrics_text(timeout=SCRAPE_LIMIT)
    except requests.Timeout:
        pytest.fail(f"/metrics took longer than {SCRAPE_LIMIT} s")
    return Scrape(text, parse_samples(text), sent, time.time())


def assert_polls_never_overlap(log: str) -> None:
    """From APScheduler's own lines at debug level: a poll starts only after the previous one ended."""
    running = most = started = 0
    for line in log.splitlines():
        if "Poller.run" not in line:
            continue
        if "Running job " in line:
            running, started = running + 1, started + 1
            most = max(most, running)
        elif "executed successfully" in line or "raised an exception" in line:
            running -= 1
    assert started >= 3, "APScheduler's job lines are missing from the debug log"
    assert most == 1, "two polls ran at once"


MAC = re.compile(r"\b[0-9a-f]{2}(?:[:-][0-9a-f]{2}){5}\b", re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")


@pytest.fixture(scope="module")
def personal_data() -> list[str]:
    """Every MAC, name and e-mail in the population the cases serve (the same for the same seed)."""
    found: set[str] = set()
    with Simulator(SESSIONS, seed=SEED, password=CANARY) as sim:
        body = requests.get(sim.url + CLIENTS_PATH, params={"status": "all", "count": 1000},
                            auth=("demo", CANARY), timeout=5).json()
    for record in body["records"]:
        found.update(str(record[key]) for key in ("macAddress", "Name", "Email") if record.get(key))
    assert len(body["records"]) == SESSIONS
    return sorted(found)


def assert_nothing_leaks(texts: dict[str, str], personal_data: list[str]) -> None:
    for where, text in texts.items():
        for secret in (CANARY, *personal_data):
            assert secret not in text and json.dumps(secret)[1:-1] not in text, f"{where} shows {secret!r}"
        assert not MAC.search(text), f"{where} shows a MAC address"
        assert not EMAIL.search(text), f"{where} shows an e-mail address"


# --- the scenario ----------------------------------------------------------------------------


def password_settings(case_number: int, tmp_path: Path) -> dict[str, str]:
    """The canary from the environment or from a file, and text or JSON logs, in turn."""
    if case_number % 2 == 0:
        return {"CMX_PASSWORD": CANARY, "CMX_LOG_FORMAT": "text"}
    secret = tmp_path / "cmx-password"
    secret.write_text(CANARY + "\n")
    return {"CMX_PASSWORD_FILE": str(secret), "CMX_LOG_FORMAT": "json"}


@pytest.mark.parametrize("case_number", range(len(CASES)), ids=[case.id for case in CASES])
def test_fault(case_number: int, tmp_path: Path, personal_data: list[str]) -> None:
    case = CASES[case_number]
    args = ["--username", "demo", "--poll-interval", str(INTERVAL), "--timeout", str(TIMEOUT),
            "--poll-timeout", str(POLL_TIMEOUT), "--stale-after", str(STALE_AFTER), "--page-size", str(PAGE_SIZE),
            "--concurrency", str(case.concurrency), "--log-level", "debug"]
    with case.cause(tmp_path) as cmx, ExporterProcess(*cmx.exporter_args(), *args,
                                                       env=password_settings(case_number, tmp_path)) as exporter:
        truth = cmx.sim.active_counts()
        pages = truth.total // PAGE_SIZE + 1
        healthy = exporter.wait_for(lambda s: up(s) and session_counts(s) == truth)
        healthy_text = exporter.metrics_text()
        watch = Watch(truth, case.reason, poll_errors(healthy), (pages + case.concurrency - 1) * (1 + RETRIES))
        served_before = cmx.requests_served()

        cmx.exporter = exporter
        broken_at = time.time()
        cmx.break_()
        deadline = time.monotonic() + 30
        while not watch.seen_enough:
            assert time.monotonic() < deadline, f"the fault never showed:\n{exporter.log[-3000:]}"
            watch.check(timed_scrape(exporter))
            time.sleep(0.1)
        if case.noticed_within is not None:  # the poll under way when it broke may have started just before
            assert watch.first_failure is not None
            assert watch.first_failure - broken_at <= case.noticed_within + INTERVAL + CLOCK_SLACK, \
                "the failure was noticed too late"
        landing = exporter.http.get(exporter.url + "/", timeout=SCRAPE_LIMIT).text
        served = cmx.requests_served() - served_before
        assert served <= (watch.failed_polls + 2) * watch.requests_per_poll, "too many requests: a retry storm"
        assert f"{case.reason}: " in landing, "the landing page shows the last error"

        cmx.mend()
        recovered = exporter.wait_for(lambda s: up(s) and session_counts(s) == truth, timeout=15)
        assert pages <= of_target(recovered)[("cmx_connect_poll_requests", ())] <= pages + case.concurrency - 1
        log = exporter.stop()
        assert exporter.proc.returncode == 0, log[-3000:]

    cmx.check_after()
    lines = log.splitlines()
    assert "Traceback" not in log
    if password_settings(case_number, tmp_path)["CMX_LOG_FORMAT"] == "json":
        assert all(json.loads(line) for line in lines), "every line of a JSON log is JSON"
    failures = [line for line in lines if re.search(r"poll of \S+ failed: ", line)]
    assert len(failures) == sum(poll_errors(recovered).values()), "one line for each failed poll"
    assert sum(case.logs[0] in line for line in failures) >= 2, f"failed polls do not say {case.logs[0]!r}"
    for words in case.logs[1:]:
        assert words in log, f"the log lacks {words!r}"
    assert_polls_never_overlap(log)
    texts = {"the log": log, "the landing page": landing, "the healthy metrics": healthy_text}
    texts.update({f"metrics at {s.sent:.1f}": s.text for s in watch.scrapes})
    assert_nothing_leaks(texts, personal_data)


def test_at_info_level_the_retries_behind_a_failed_poll_stay_out_of_the_log() -> None:
    """One failed poll, one line: urllib3's warning for each retry would only say the same thrice."""
    with ExporterProcess("--url", f"http://127.0.0.1:{free_port()}", "--poll-interval", str(INTERVAL),
                         "--timeout", str(TIMEOUT), "--log-format", "json", env={"CMX_PASSWORD": CANARY}) as exporter:
        samples = exporter.wait_for(lambda s: poll_errors(s)["connection"] >= 1)
        log = exporter.stop()
    entries = [json.loads(line) for line in log.splitlines()]
    assert {entry["logger"] for entry in entries} <= {"cmx_connect_exporter", "cmx_connect_exporter.polling.scheduler",
                                                      "apscheduler.scheduler"}
    failed = [entry for entry in entries if re.match(r"poll of \S+ failed: ", entry["message"])]
    assert len(failed) >= poll_errors(samples)["connection"]


@pytest.mark.parametrize(("extra", "polls", "logs"), [
    ([], False, "TLS handshake with 127.0.0.1 failed; check the certificate or set CMX_CA_BUNDLE"),
    (["--ca-bundle", "{cert}"], True, None),
    (["--insecure-skip-verify"], True, "TLS certificate verification is off"),
], ids=["verified-by-default", "ca-bundle", "insecure-skip-verify"])
def test_self_signed_cmx(extra: list[str], polls: bool, logs: str | None, tmp_path: Path) -> None:
    """Verification is on unless turned off, which logs a warning; CMX_CA_BUNDLE is the better way in."""
    cert, key = self_signed_certificate(tmp_path)
    with Simulator(SESSIONS, seed=SEED, password=CANARY, certfile=str(cert), keyfile=str(key)) as sim, \
            ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", str(INTERVAL),
                            *[word.format(cert=cert) for word in extra], env={"CMX_PASSWORD": CANARY}) as exporter:
        samples = exporter.wait_for(lambda s: up(s) or poll_errors(s)["connection"] > 0)
        log = exporter.stop()
    assert up(samples) == polls
    assert session_counts(samples) == (sim.active_counts() if polls else None)
    warnings = [line for line in log.splitlines() if "verification is off" in line]
    assert len(warnings) == (1 if "--insecure-skip-verify" in extra else 0)
    if logs:
        assert logs in log
