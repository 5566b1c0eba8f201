"""The poll job: what it publishes on success and failure, and that polls never overlap."""

from __future__ import annotations

import threading
import time

import pytest
import responses

from cmx_connect_exporter.exposition.snapshot import State
from cmx_connect_exporter.polling.poll import run_poll
from cmx_connect_exporter.polling.scheduler import Poller, start_scheduler
from cmx_connect_exporter.settings import Settings
from cmx_pages import ENDPOINT, add_page, envelope, make_client, record


def poller(state: State, **settings: object) -> Poller:
    """The poll job as the exporter runs it, with the worker's own poll function run in-process."""
    client = make_client()
    return Poller(lambda params: run_poll(client, params), Settings(url="https://cmx.test", page_size=2, **settings),
                  state)


@responses.activate
def test_success_then_failure_keeps_counts_and_counts_the_reason() -> None:
    state = State(stale_after=600, version="t")
    add_page(responses.mock, 0, 2, envelope([record(), record()]))
    add_page(responses.mock, 2, 2, envelope([record()]))
    job = poller(state)
    job.run()
    snap = state.snapshot
    assert (snap.up, snap.counts.total if snap.counts else None, snap.poll_requests) == (True, 3, 2)

    responses.mock.reset()
    add_page(responses.mock, 0, 2, envelope([record(), record()]))
    add_page(responses.mock, 2, 2, "CMX Error")
    job.run()
    snap = state.snapshot
    assert (snap.up, snap.counts.total if snap.counts else None) == (False, 3)
    assert snap.errors["active"]["bad_response"] == 1


@responses.activate
def test_unexpected_exception_is_a_failed_poll_without_details(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    def broken(*_: object, **__: object) -> None:
        raise KeyError("jane.doe@example.com")

    monkeypatch.setattr("cmx_connect_exporter.polling.poll.count_active_sessions", broken)
    state = State(stale_after=600, version="t")
    poller(state).run()
    assert state.snapshot.errors["active"]["internal"] == 1
    assert "KeyError" in caplog.text
    assert "jane.doe" not in caplog.text


@responses.activate
def test_long_retry_after_defers_the_next_poll() -> None:
    state = State(stale_after=600, version="t")
    responses.get(ENDPOINT, status=429, headers={"Retry-After": "3600"}, body="slow down")
    job = poller(state)
    job.run()
    job.run()
    assert len(responses.calls) == 1
    assert state.snapshot.errors["active"]["http"] == 1


class SlowPoll:
    """Stands in for a Poller whose polls take longer than the interval."""

    def __init__(self) -> None:
        self.running = 0
        self.most_at_once = 0
        self.runs = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        with self.lock:
            self.running += 1
            self.runs += 1
            self.most_at_once = max(self.most_at_once, self.running)
        time.sleep(2.5)
        with self.lock:
            self.running -= 1


def test_overrunning_polls_never_overlap_nor_pile_up() -> None:
    slow = SlowPoll()
    scheduler = start_scheduler(slow, interval=1)  # type: ignore[arg-type]
    try:
        time.sleep(6)
    finally:
        scheduler.shutdown(wait=True)
    assert slow.most_at_once == 1
    assert 2 <= slow.runs <= 3, "runs follow each other; missed ones are coalesced, not queued"


def test_first_poll_runs_at_start() -> None:
    ran = threading.Event()

    class Once:
        def run(self) -> None:
            ran.set()

    scheduler = start_scheduler(Once(), interval=3600)  # type: ignore[arg-type]
    try:
        assert ran.wait(5)
    finally:
        scheduler.shutdown(wait=False)
