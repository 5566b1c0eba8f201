"""The poll worker process: real polls over real HTTP, errors across the pipe, and restarts."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from cmx_connect_exporter.cmx.client import CLIENTS_PATH
from cmx_connect_exporter.outcome import POLL_TIMEOUT_SETTING, Counts, PollError
from cmx_connect_exporter.polling.handle import WORKER_GRACE, PollWorker
from cmx_connect_exporter.polling.messages import ClientOptions, Hello, PollOutcome, PollRequest
from cmx_simulator import Simulator
from exporter_process import ExporterProcess, children, poll_errors, up

PAGE = 500
CONCURRENCY = 2


def request_of(sim: Simulator, **changes: object) -> PollRequest:
    """A poll of the simulator, as the scheduler sends it to any worker."""
    client = ClientOptions(url=sim.url, username="demo", password="demo", timeout=5.0, verify=True,
                           max_retry_wait=30.0)
    request = PollRequest(target="sim", client=client, page_size=PAGE, max_pages=100, max_label_values=50,
                          concurrency=CONCURRENCY, poll_timeout=30)
    return replace(request, **changes)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(sessions=3000, seed=3) as simulator:
        yield simulator


def start_worker() -> PollWorker:
    return PollWorker(Hello(log_level="warning", log_format="text"))


@pytest.fixture
def worker(sim: Simulator) -> Iterator[PollWorker]:
    handle = start_worker()
    yield handle
    handle.close()


def counts_of(outcome: PollOutcome) -> Counts:
    assert isinstance(outcome.result, Counts), outcome.result
    return outcome.result


def error_of(outcome: PollOutcome) -> PollError:
    assert isinstance(outcome.result, PollError), outcome.result
    return outcome.result


def test_poll_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(PollError("http", "rate limited", 30.0)))
    assert (error.reason, str(error), error.retry_after) == ("http", "rate limited", 30.0)


def test_the_password_is_not_in_the_messages_repr() -> None:
    client = ClientOptions(url="https://cmx", username="api", password="s3cr3t-canary", timeout=5, verify=True,
                           max_retry_wait=30)
    assert "s3cr3t-canary" not in repr(PollRequest(target="t", client=client, page_size=1, max_pages=1,
                                                   max_label_values=1, concurrency=1, poll_timeout=1))


def test_worker_polls_in_its_own_process(sim: Simulator, worker: PollWorker) -> None:
    outcome = worker.poll(request_of(sim))
    counts = counts_of(outcome)
    assert counts.total == sim.active_counts().total
    assert {label: dict(values) for label, values in counts.by_label.items()} == sim.active_counts().by_label
    assert outcome.requests >= counts.total // PAGE


def test_with_the_last_total_a_steady_venue_is_polled_with_no_request_past_the_end(
        sim: Simulator, worker: PollWorker) -> None:
    """The scheduler sends each target's last total with its poll, whichever worker takes it."""
    total = sim.active_counts().total
    request = request_of(sim, page_size=300, concurrency=4)
    assert total % request.page_size == 0, "the list ends on a page boundary: an empty page follows a full one"
    pages = total // request.page_size + 1
    sim.latency = 0.05  # pages are on their way while the walk asks ahead, so what it asks is sent
    first = worker.poll(request)
    later = [worker.poll(replace(request, expected_sessions=counts_of(first).total)) for _ in range(3)]
    assert {counts_of(outcome).total for outcome in (first, *later)} == {total}
    # with no total yet the first poll may ask past the end (whether it does is a race with the walk)
    assert pages <= first.requests < pages + request.concurrency
    assert [outcome.requests for outcome in later] == [pages] * 3, "the last total says where the list ends"


def test_the_first_poll_is_timed_without_the_workers_start(sim: Simulator) -> None:
    sim.active_counts()
    requests.get(sim.url + CLIENTS_PATH, params={"status": "active", "count": 1000}, auth=("demo", "demo"),
                 timeout=10)  # the simulator encodes each record on first serve: not the worker's to pay
    handle = start_worker()  # no wait for it to start: the poll is sent at once, as the exporter does
    try:
        first = handle.poll(request_of(sim))
        later = min(handle.poll(request_of(sim)).duration for _ in range(3))
    finally:
        handle.close()
    assert counts_of(first).total == sim.active_counts().total
    # a new interpreter importing requests, urllib3 and msgspec takes far longer than 0.1 s here
    assert first.duration <= 3 * later + 0.05, f"first poll {first.duration:.3f} s, later ones {later:.3f} s"


def test_the_serving_process_needs_neither_requests_nor_the_counting_code() -> None:
    """What the worker exists for: the process that answers scrapes carries none of the poll's weight."""
    heavy = ("requests", "urllib3", "msgspec", "cmx_connect_exporter.polling.poll", "cmx_connect_exporter.cmx.client",
             "cmx_connect_exporter.counting.tally")
    probe = f"import sys, cmx_connect_exporter.cli; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_failures_come_back_as_values(sim: Simulator, worker: PollWorker) -> None:
    sim.fault = "status:401"
    outcome = worker.poll(request_of(sim))
    assert error_of(outcome).reason == "auth"
    assert 1 <= outcome.requests <= CONCURRENCY, "no retries on 401; at most the pages already in flight"


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
    outcome = worker.poll(request_of(sim))
    assert (error_of(outcome).reason, outcome.requests) == ("internal", None)
    assert str(outcome.result) == "the poll worker died (exit code -9); it was replaced"
    assert worker.pid != dead
    assert counts_of(worker.poll(request_of(sim))).total == sim.active_counts().total


def test_a_worker_killed_mid_poll_fails_that_poll_as_internal_and_is_replaced(sim: Simulator,
                                                                             worker: PollWorker) -> None:
    sim.latency = 0.2  # five pages: a second of polling to kill it in
    dying = worker.pid
    threading.Timer(0.3, os.kill, (dying, signal.SIGKILL)).start()
    outcome = worker.poll(request_of(sim))
    assert error_of(outcome).reason == "internal"
    sim.latency = 0
    assert worker.pid != dying
    assert counts_of(worker.poll(request_of(sim))).total == sim.active_counts().total


def test_a_stopped_worker_is_killed_at_the_poll_deadline_and_replaced(sim: Simulator, worker: PollWorker) -> None:
    stopped = worker.pid
    os.kill(stopped, signal.SIGSTOP)
    started = time.monotonic()
    outcome = worker.poll(request_of(sim, concurrency=1, poll_timeout=1))
    waited = time.monotonic() - started
    assert error_of(outcome).reason == "timeout"
    assert f"did not end within 1 s ({POLL_TIMEOUT_SETTING})" in str(outcome.result)
    assert 1 + WORKER_GRACE <= waited < 1 + WORKER_GRACE + 3, "noticed at the deadline and its grace, not long after"
    assert worker.pid != stopped and not Path(f"/proc/{stopped}").exists()
    assert counts_of(worker.poll(request_of(sim))).total == sim.active_counts().total


def test_the_worker_does_not_inherit_the_password_from_the_environment(sim: Simulator) -> None:
    """It gets the password over its pipe; /proc/PID/environ of the worker must not hold it too."""
    canary = "env-canary-93b1"
    # the settings read their variables in any case, so the worker must not get a lower-case one either
    with ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", "60",
                         env={"cmx_password": canary}) as exporter:
        exporter.wait_for(lambda s: poll_errors(s)["auth"] >= 1 or up(s))
        (worker_pid,) = children(exporter.pid)
        environment = Path(f"/proc/{worker_pid}/environ").read_bytes()
    assert b"cmx_password" not in environment.lower() and canary.encode() not in environment


def arrive(sim: Simulator, guests: int) -> None:
    """``guests`` log in (and as many out) before the simulator answers one more request."""
    sim.churn = guests
    requests.get(sim.url + CLIENTS_PATH, params={"count": 1}, auth=("demo", "demo"), timeout=5)
    sim.churn = 0


def test_logins_are_exactly_the_guests_who_arrived_between_two_polls(sim: Simulator, worker: PollWorker) -> None:
    """The first poll counts none; the next counts the simulator's arrivals since, and the one after none.

    Sequential polls, so that no request past the end is still on its way when the guests arrive.
    """
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=1))).logins == 0
    arrive(sim, 37)
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=2, after=1))).logins == 37
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=3, after=2))).logins == 0


def test_logins_a_failed_poll_read_count_in_the_next_completed_one(sim: Simulator, worker: PollWorker) -> None:
    """A poll that fails half-way has read some arrivals: they count when a poll next completes, with those
    since, and once only."""
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=1))).logins == 0
    arrive(sim, 23)  # the newest sessions come first: the failed poll reads them all
    sim.fault, sim.fault_from_index = "wrong_shape", 3 * PAGE
    failed = worker.poll(request_of(sim, concurrency=1, poll=2, after=1))
    assert isinstance(failed.result, PollError) and failed.requests == 4, failed
    sim.fault = None
    arrive(sim, 5)
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=3, after=1))).logins == 28
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=4, after=3))).logins == 0


def test_a_poll_on_a_worker_without_the_targets_last_poll_counts_no_logins(sim: Simulator,
                                                                          worker: PollWorker) -> None:
    """A target's polls may land on different workers of the pool. A worker that did not make the target's
    last completed poll counts no logins, as after a start: fewer logins, never one counted twice."""
    assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=1))).logins == 0
    other = start_worker()
    try:
        arrive(sim, 11)
        assert counts_of(other.poll(request_of(sim, concurrency=1, poll=2, after=1))).logins == 0, \
            "this worker holds no table of the target"
        arrive(sim, 13)
        assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=3, after=2))).logins == 0, \
            "it holds poll 1's sessions, not those of poll 2, the target's last: counted against older ones, a " \
            "login another worker had counted could be counted twice"
        arrive(sim, 17)
        assert counts_of(worker.poll(request_of(sim, concurrency=1, poll=4, after=3))).logins == 17
    finally:
        other.close()
