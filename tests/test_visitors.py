"""Visitors of the day: the second query, from CMX's local midnight, against the simulator's ground truth."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import responses
from responses import matchers

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.config.targets import PollOptions, Target
from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    DWELL_BUCKETS,
    LAST_LOGOUT_KEYS,
    NEW,
    RETURNING,
    VISIT,
    VISITORS_TODAY,
    VISITORS_TODAY_BY_VISIT,
    VISITORS_TODAY_STAY,
)
from cmx_connect_exporter.counting.times import DAY
from cmx_connect_exporter.exposition.snapshot import VISITORS_TODAY_QUERY, TargetState
from cmx_connect_exporter.outcome import QUERIES, PollError
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest, VisitorsRequest
from cmx_connect_exporter.polling.poll import count_visitors_today, last_local_midnight, run_poll, run_visitors
from cmx_connect_exporter.polling.scheduler import Poller
from cmx_pages import ENDPOINT, add_page, envelope, make_client, record
from cmx_simulator import Simulator
from cmx_simulator.population import TIME_ZONE_OFFSET_MS
from exporter_process import ExporterProcess, of_target, parse_samples, poll_errors, up


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with Simulator(sessions=3000, seed=5) as simulator:
        yield simulator


def test_visitors_are_exact_on_both_sides_of_a_local_midnight(sim: Simulator) -> None:
    """A second before and after a midnight at UTC-4 (not a UTC midnight), each count is the simulator's own."""
    assert TIME_ZONE_OFFSET_MS != 0
    midnight = last_local_midnight(time.time(), TIME_ZONE_OFFSET_MS) - 2 * DAY  # inside the simulated month
    assert midnight % DAY != 0, "a local midnight, not UTC's"
    client = CmxClient(sim.url, username="demo", password="demo", timeout=5)
    seen = []
    for now, start in ((midnight - 1, midnight - DAY), (midnight + 1, midnight)):
        got = count_visitors_today(client.fetch_body, tz_offset=TIME_ZONE_OFFSET_MS, page_size=250, max_pages=100,
                                   concurrency=2, now=now)
        truth = sim.visitors_since(start)
        assert got.total == truth.total
        assert got.by_visit == {k: v for k, v in ((NEW, truth.new), (RETURNING, truth.returning)) if v}
        seen.append(got.total)
    assert seen[0] > seen[1] > 0, "the count starts again at midnight"


@pytest.mark.parametrize("logout_key", LAST_LOGOUT_KEYS)
def test_the_stays_of_visitors_who_left_are_exact_with_either_spelling_of_the_logout(logout_key: str) -> None:
    """Over two days of the simulated month: most visitors are still connected, some have left."""
    with Simulator(sessions=3000, seed=5, logout_key=logout_key) as sim:
        client = CmxClient(sim.url, username="demo", password="demo", timeout=5)
        midnight = last_local_midnight(time.time(), TIME_ZONE_OFFSET_MS) - 2 * DAY
        got = count_visitors_today(client.fetch_body, tz_offset=TIME_ZONE_OFFSET_MS, page_size=250, max_pages=100,
                                   concurrency=2, now=midnight + 1)
        truth = sim.visitors_since(midnight)
    assert got.total == truth.total
    assert got.stays.count == len(truth.stays) > 0
    assert len(truth.stays) < truth.total, "guests still connected have no stay"
    assert got.stays.sum == sum(truth.stays)
    assert got.stays.buckets == tuple(sum(stay <= bound for stay in truth.stays) for bound in DWELL_BUCKETS)


def test_without_a_time_zone_the_query_fails_as_a_bad_response() -> None:
    with pytest.raises(PollError, match="timeZoneOffset") as caught:
        count_visitors_today(make_client().fetch_body, tz_offset=None, page_size=10, max_pages=10)
    assert caught.value.reason == "bad_response"


@responses.activate
def test_a_failed_visitors_query_leaves_the_active_counts_published_and_fresh() -> None:
    add_page(responses.mock, 0, 2, envelope([record(), record()]))
    add_page(responses.mock, 2, 2, envelope([record()]))
    responses.mock.get(ENDPOINT, body="CMX Error", status=500,
                       match=[matchers.query_param_matcher({"status": "all"}, strict_match=False)])
    client = make_client()

    asked: list[VisitorsRequest] = []

    def in_process(request: PollRequest | VisitorsRequest) -> PollOutcome:  # as a worker dispatches
        if isinstance(request, VisitorsRequest):
            asked.append(request)
            return run_visitors(client, request)
        return run_poll(client, request)

    state = TargetState("cmx.test", stale_after=600, queries=QUERIES)
    target = Target("cmx.test", "https://cmx.test", PollOptions(page_size=2, visitors_today=True))
    Poller(in_process, target, state).run()
    assert [request.tz_offset for request in asked] == [envelope([])["timeZoneOffset"]], \
        "the active poll's time zone goes with the request, so that any worker can take it"
    snap = state.snapshot
    assert snap.errors[VISITORS_TODAY_QUERY]["http"] == 1
    assert sum(snap.errors["active"].values()) == 0
    assert snap.up and snap.last_error is None
    samples = of_target(parse_samples(state.exposition().decode()))
    assert samples[(ACTIVE_SESSIONS, ())] == 3
    assert (VISITORS_TODAY.metric, ()) not in samples


def test_the_console_script_exports_the_visitors_of_today(sim: Simulator) -> None:
    args = ["--url", sim.url, "--username", "demo", "--password", "demo", "--poll-interval", "1", "--visitors-today"]
    with ExporterProcess(*args) as exporter:
        samples = of_target(exporter.wait_for(lambda s: up(s) and (VISITORS_TODAY.metric, ()) in of_target(s)))
        exporter.stop()
    truth = sim.visitors_since(last_local_midnight(time.time(), TIME_ZONE_OFFSET_MS))
    assert samples[(VISITORS_TODAY.metric, ())] == truth.total > 0
    assert samples[(VISITORS_TODAY_BY_VISIT.metric, ((VISIT.label, NEW),))] == truth.new
    assert samples[(VISITORS_TODAY_STAY.metric + "_count", ())] == len(truth.stays)
    assert samples[(VISITORS_TODAY_STAY.metric + "_sum", ())] == sum(truth.stays)
    assert poll_errors(samples, query=VISITORS_TODAY_QUERY) == dict.fromkeys(poll_errors(samples), 0)
