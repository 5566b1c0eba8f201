"""The poll worker process: real polls over real HTTP, errors across the pipe, and restarts."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.outcome import Counts, PollError
from exporter.simulator import Simulator
from exporter.worker import WORKER_GRACE, PollParams, PollWorker

PARAMS = PollParams(page_size=500, max_pages=100, max_label_values=50, concurrency=2, poll_timeout=30)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(sessions=3000, seed=3) as simulator:
        yield simulator


@pytest.fixture
def worker(sim: Simulator) -> Iterator[PollWorker]:
    handle = PollWorker({"url": sim.url, "username": "demo", "password": "demo", "timeout": 5.0},
                        log_level="warning", log_format="text")
    yield handle
    handle.close()


def test_poll_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(PollError("http", "rate limited", 30.0)))
    assert (error.reason, str(error), error.retry_after) == ("http", "rate limited", 30.0)


def test_worker_polls_in_its_own_process(sim: Simulator, worker: PollWorker) -> None:
    counts, requests = worker.poll(PARAMS)
    assert isinstance(counts, Counts)
    assert counts.total == sim.active_counts().total
    assert dict(counts.by_label["os"]) == sim.active_counts().by_label["os"]
    assert requests >= counts.total // 500


def test_the_serving_process_needs_neither_requests_nor_the_counting_code() -> None:
    """What the worker exists for: the process that answers scrapes carries none of the poll's weight."""
    heavy = ("requests", "urllib3", "orjson", "exporter.poll", "exporter.client")
    probe = f"import sys, exporter.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_failures_come_back_as_values(sim: Simulator, worker: PollWorker) -> None:
    sim.fault = "status:401"
    error, requests = worker.poll(PARAMS)
    assert isinstance(error, PollError)
    assert error.reason == "auth"
    assert 1 <= requests <= PARAMS.concurrency, "no retries on 401; at most the pages already in flight"


def _wait_until_dead(pid: int) -> None:
    """Until the process is a zombie: its pipes are closed, so writing to it fails."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the worker did not die"
        time.sleep(0.01)


def test_a_worker_dead_between_polls_fails_one_poll_as_internal_and_is_replaced(sim: Simulator,
                                                                                worker: PollWorker) -> None:
    dead = worker.pid
    os.kill(dead, signal.SIGKILL)
    _wait_until_dead(dead)
    error, requests = worker.poll(PARAMS)
    assert isinstance(error, PollError) and (error.reason, requests) == ("internal", 0)
    assert str(error) == "the poll worker died (exit code -9); it was replaced"
    assert worker.pid != dead
    counts, _ = worker.poll(PARAMS)
    assert isinstance(counts, Counts) and counts.total == sim.active_counts().total


def test_a_stopped_worker_is_killed_at_the_poll_deadline_and_replaced(sim: Simulator, worker: PollWorker) -> None:
    stopped = worker.pid
    os.kill(stopped, signal.SIGSTOP)
    started = time.monotonic()
    error, _ = worker.poll(PollParams(page_size=500, max_pages=100, max_label_values=50, concurrency=1,
                                      poll_timeout=1))
    waited = time.monotonic() - started
    assert isinstance(error, PollError) and error.reason == "timeout"
    assert "did not end within 1 s (CMX_POLL_TIMEOUT)" in str(error)
    assert 1 <= waited < 1 + WORKER_GRACE + 1, "noticed at the deadline, not before, not long after"
    assert worker.pid != stopped and not Path(f"/proc/{stopped}").exists()
    counts, _ = worker.poll(PARAMS)
    assert isinstance(counts, Counts) and counts.total == sim.active_counts().total
