"""The poll job: what it publishes on success and failure, and that polls never overlap."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import responses

from cmx_connect_exporter.config.targets import PollOptions, Target
from cmx_connect_exporter.counting.dimensions import LABELS
from cmx_connect_exporter.exposition.snapshot import Store, TargetState
from cmx_connect_exporter.outcome import Counts
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest
from cmx_connect_exporter.polling.poll import run_poll
from cmx_connect_exporter.polling.scheduler import FIRST_POLL_SPREAD, Poller, Probes, Schedule
from cmx_pages import ENDPOINT, add_page, envelope, make_client, record


def target(name: str = "cmx.test", **options: object) -> Target:
    return Target(name, f"https://{name}", PollOptions.model_validate({"page_size": 2, **options}))


def poller(state: TargetState) -> Poller:
    """The poll job as the exporter runs it, with the worker's own poll function run in-process."""
    client = make_client()
    return Poller(lambda params: run_poll(client, params), target(), state)


@responses.activate
def test_success_then_failure_keeps_counts_and_counts_the_reason() -> None:
    state = TargetState("cmx.test", stale_after=600)
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
    state = TargetState("cmx.test", stale_after=600)
    poller(state).run()
    assert state.snapshot.errors["active"]["internal"] == 1
    assert "KeyError" in caplog.text
    assert "jane.doe" not in caplog.text


@responses.activate
def test_long_retry_after_defers_the_next_poll() -> None:
    state = TargetState("cmx.test", stale_after=600)
    responses.get(ENDPOINT, status=429, headers={"Retry-After": "3600"}, body="slow down")
    job = poller(state)
    job.run()
    job.run()
    assert len(responses.calls) == 1
    assert state.snapshot.errors["active"]["http"] == 1


class SlowPoll:
    """Stands in for the worker pool: polls that take ``seconds``, counted by target."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.running: dict[str, int] = {}
        self.most_at_once: dict[str, int] = {}
        self.started: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def __call__(self, request: PollRequest) -> PollOutcome:
        name = request.target
        with self.lock:
            self.running[name] = self.running.get(name, 0) + 1
            self.started.setdefault(name, []).append(time.monotonic())
            self.most_at_once[name] = max(self.most_at_once.get(name, 0), self.running[name])
        time.sleep(self.seconds[name])
        with self.lock:
            self.running[name] -= 1
        return PollOutcome(Counts(total=0, by_label={label: {} for label in LABELS}), 1, self.seconds[name])


def run_schedule(poll: SlowPoll, targets: list[Target], seconds: float, probes: Probes | None = None) -> Store:
    store = Store(version="t")
    schedule = Schedule(poll, store, probes)
    try:
        schedule.apply(targets)
        time.sleep(seconds)
    finally:
        schedule.shutdown()
    return store


def test_overrunning_polls_never_overlap_nor_pile_up() -> None:
    slow = SlowPoll({"slow": 2.5})
    run_schedule(slow, [target("slow", poll_interval=1)], 6)
    assert slow.most_at_once["slow"] == 1
    assert 2 <= len(slow.started["slow"]) <= 3, "runs follow each other; missed ones are coalesced, not queued"


def test_first_poll_runs_at_start() -> None:
    slow = SlowPoll({"once": 0})
    run_schedule(slow, [target("once", poll_interval=3600)], 1)
    assert len(slow.started["once"]) == 1


def test_a_hung_target_never_delays_another() -> None:
    """Each target has its own job: one whose polls hang keeps to itself while the other polls every second."""
    slow = SlowPoll({"hung": 30, "fine": 0.01})
    started = time.monotonic()
    run_schedule(slow, [target("hung", poll_interval=1), target("fine", poll_interval=1)], 5.5)
    assert len(slow.started["hung"]) == 1
    gaps = [b - a for a, b in zip(slow.started["fine"], slow.started["fine"][1:], strict=False)]
    assert slow.started["fine"][0] - started < 1
    assert len(gaps) >= 4 and all(0.5 < gap < 1.5 for gap in gaps), gaps


def test_in_probed_mode_a_target_is_polled_only_once_probed() -> None:
    slow = SlowPoll({"probed": 0, "unprobed": 0})
    probes = Probes()
    store = Store(version="t")
    schedule = Schedule(slow, store, probes)
    try:
        schedule.apply([target("probed", poll_interval=3600), target("unprobed", poll_interval=3600)])
        time.sleep(0.5)
        assert schedule.probed("probed") and not schedule.probed("nowhere")
        time.sleep(1)
        assert schedule.polled_here("probed") and not schedule.polled_here("unprobed")
    finally:
        schedule.shutdown()
    assert len(slow.started.get("probed", [])) == 1, "the first probe polls at once, not an interval later"
    assert "unprobed" not in slow.started


def test_a_probe_lapses_after_five_intervals() -> None:
    now = [100.0]
    probes = Probes(clock=lambda: now[0])
    assert probes.probed("a", interval=60)
    now[0] += 5 * 60
    assert probes.polling("a", 60) and not probes.probed("a", 60)
    now[0] += 5 * 60 + 1
    assert not probes.polling("a", 60)


def until_started(slow: SlowPoll, names: set[str], times: int = 1) -> None:
    """Until each of ``names`` has polled (``changed`` ``times`` times); their first polls are spread over
    FIRST_POLL_SPREAD."""
    deadline = time.monotonic() + FIRST_POLL_SPREAD + 5
    while not all(len(slow.started.get(name, [])) >= (times if name == "changed" else 1) for name in names):
        assert time.monotonic() < deadline, slow.started
        time.sleep(0.05)


def test_targets_added_together_start_spread_over_the_first_seconds() -> None:
    slow = SlowPoll({name: 0 for name in "abcd"})
    run_schedule(slow, [target(name, poll_interval=2) for name in "abcd"], 1.8)
    starts = sorted(times[0] for times in slow.started.values())
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert len(starts) == 4 and all(0.3 < gap < 0.7 for gap in gaps), gaps  # 2 s interval / 4 targets


def test_apply_keeps_unchanged_targets_and_restarts_changed_ones() -> None:
    slow = SlowPoll({"same": 0, "changed": 0, "gone": 0, "new": 0})
    store = Store(version="t")
    schedule = Schedule(slow, store)
    try:
        schedule.apply([target("same", poll_interval=3600), target("changed", poll_interval=3600),
                        target("gone", poll_interval=3600)])
        until_started(slow, {"same", "changed", "gone"})
        kept = store.get("same")
        schedule.apply([target("same", poll_interval=3600), target("changed", poll_interval=1800),
                        target("new", poll_interval=3600)])
        until_started(slow, {"changed", "new"}, times=2)
    finally:
        schedule.shutdown()
    assert store.get("same") is kept and len(slow.started["same"]) == 1, "unchanged: same state, same schedule"
    assert len(slow.started["changed"]) == 2 and len(slow.started["new"]) == 1
    assert store.get("gone") is None


@responses.activate
def test_each_poll_names_the_targets_last_completed_poll_for_its_logins() -> None:
    """Whichever worker takes a poll, it learns which poll's logins to compare with: the last one that
    completed, never a failed one; the first poll names none."""
    sent: list[PollRequest] = []
    client = make_client()

    def recorded(request: PollRequest) -> PollOutcome:
        sent.append(request)
        return run_poll(client, request)

    job = Poller(recorded, target(), TargetState("cmx.test", stale_after=600))
    add_page(responses.mock, 0, 2, envelope([record()]))
    job.run()
    responses.mock.reset()
    add_page(responses.mock, 0, 2, "CMX Error")
    job.run()
    responses.mock.reset()
    add_page(responses.mock, 0, 2, envelope([record()]))
    job.run()
    first, failed, third = sent
    assert first.after is None and first.expected_sessions == 0
    assert failed.after == first.poll and failed.expected_sessions == 1
    assert third.after == first.poll, "the failed poll completed nothing to compare with"
    assert len({first.poll, failed.poll, third.poll}) == 3


def test_a_rotated_password_keeps_the_targets_job_and_counts_and_reaches_its_next_poll() -> None:
    """A reload that changes only credentials is no change of the target: it keeps its state and schedule."""
    slow = SlowPoll({"venue": 0})
    sent: list[PollRequest] = []

    def recorded(request: PollRequest) -> PollOutcome:
        sent.append(request)
        return slow(request)

    store = Store(version="t")
    schedule = Schedule(recorded, store)
    old = Target("venue", "https://venue", PollOptions(poll_interval=1), password="old-pw")
    try:
        assert schedule.apply([old])
        until_started(slow, {"venue"})
        kept = store.get("venue")
        assert not schedule.apply([old]), "the same file again changes nothing"
        assert schedule.apply([Target("venue", "https://venue", PollOptions(poll_interval=1), password="new-pw")])
        deadline = time.monotonic() + 5
        while len(sent) < 2:
            assert time.monotonic() < deadline, "no poll after the reload"
            time.sleep(0.05)
    finally:
        schedule.shutdown()
    assert store.get("venue") is kept
    assert [request.client.password for request in sent[:2]] == ["old-pw", "new-pw"]
