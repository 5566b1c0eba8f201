"""Builders shared by the unit tests: CMX records and pages as real servers send them."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import responses
from prometheus_client.parser import text_string_to_metric_families
from responses import matchers

from exporter.client import CLIENTS_PATH, CmxClient

BASE_URL = "https://cmx.test"
ENDPOINT = BASE_URL + CLIENTS_PATH
_macs = itertools.count(0x0200_0000_0000)


def record(mac: str | None = None, **fields: Any) -> dict[str, Any]:
    """A session record; defaults are plausible, any field can be overridden or set to None."""
    base: dict[str, Any] = {
        "macAddress": mac or ":".join(f"{next(_macs):012x}"[i:i + 2] for i in range(0, 12, 2)),
        "authType": "SMS",
        "operationSystem": "iOS",
        "device": "Mobile",
        "language": "English",
        "state": "ACTIVE",
        "Name": "Jane Doe",
        "Email": "jane.doe@example.com",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def envelope(records: list[Any], next_index: Any = 0, count: int = 1000) -> dict[str, Any]:
    return {"nextIndex": next_index, "timeZoneOffset": -14400000, "queryRecordCount": count,
            "timeZone": "Eastern Standard Time", "records": records, "returnRecordCount": len(records)}


def add_page(rsps: responses.RequestsMock, index: int, count: int, body: Any, status: int = 200,
             headers: dict[str, str] | None = None) -> None:
    """Answer one exact page request; ``body`` is JSON-encoded unless it is already bytes or str."""
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    rsps.get(ENDPOINT, body=raw, status=status, headers=headers,
             match=[matchers.query_param_matcher({"status": "active", "index": str(index), "count": str(count)})])


def make_client(**overrides: Any) -> CmxClient:
    options: dict[str, Any] = {"username": "api", "password": "s3cr3t-canary", "timeout": 5.0}
    options.update(overrides)
    return CmxClient(BASE_URL, **options)


def require_tool(name: str) -> str:
    """The tool's path; skip without it, except in CI, where a missing tool is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path


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
    """The real console script in a child process, talking to CMX over real HTTP."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--listen-address", f"127.0.0.1:{self.port}", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def __enter__(self) -> ExporterProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def metrics_text(self) -> str:
        return requests.get(self.url + "/metrics", timeout=5).text

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
        pytest.fail(f"condition not met within {timeout} s; last scrape: {samples}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> str:
        """Stop the process as an orchestrator would; returns everything it logged."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        output, _ = self.proc.communicate(timeout=timeout)
        return output


def up(samples: Samples) -> bool:
    return samples.get(("cmx_connect_up", ()), 0) == 1


def console_script() -> str:
    """The installed ``cmx-connect-exporter`` entry point beside this interpreter, as users run it."""
    path = os.path.join(os.path.dirname(sys.executable), "cmx-connect-exporter")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing; install the package with pip install -e .")
    return path
