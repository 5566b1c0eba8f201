"""The exposition: golden output from recorded pages, and what failure and staleness show."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import responses

from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    AUTHTYPE,
    BYTES,
    BYTES_KEYS,
    DIMENSIONS,
    DIRECTION,
    DWELL,
    DWELL_BUCKETS,
    LOGINS,
    PORTAL,
    PORTAL_TYPE,
    SITE,
    UNREADABLE_LOGIN_TIME,
    VISIT,
    VISITORS_TODAY,
    VISITORS_TODAY_BY_VISIT,
)
from cmx_connect_exporter.exposition.snapshot import State
from cmx_connect_exporter.outcome import QUERIES, REASONS, PollError
from cmx_connect_exporter.polling.poll import count_active_sessions, count_visitors_today
from cmx_pages import add_page, make_client
from exporter_process import Samples, parse_samples
from tool_policy import require_tool

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "metrics.prom"
SESSION_METRICS = {ACTIVE_SESSIONS, *(dimension.metric for dimension in DIMENSIONS)}


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# The Clock's local midnight at the fixtures' UTC-4: 07:06:40 local, 25,600 s before.
MIDNIGHT = 1_795_000_000 - 25_600


@responses.activate
def recorded_poll_state(clock: Clock) -> State:
    """A poll of the fixture pages, then the visitors of the day, which CMX answers with the same records."""
    for n in range(3):
        body = (HERE / "fixtures" / f"clients-page{n}.json").read_bytes()
        add_page(responses.mock, 4 * n, 4, body)
        add_page(responses.mock, 4 * n, 4, body, since=MIDNIGHT)
    client = make_client()
    counts = count_active_sessions(client.fetch_body, page_size=4, max_pages=10, max_label_values=50,
                                   now=clock.now)
    state = State(stale_after=180, version="1.2.3", clock=clock, queries=QUERIES)
    state.record_success(counts, duration=0.25, requests=len(responses.calls))
    state.record_visitors(count_visitors_today(client.fetch_body, tz_offset=counts.tz_offset, page_size=4,
                                               max_pages=10, now=clock.now))
    return state


def samples(state: State) -> Samples:
    return parse_samples(state.exposition().decode())


def names(state: State) -> set[str]:
    return {name for name, _ in samples(state)}


def test_exposition_matches_golden_file() -> None:
    text = recorded_poll_state(Clock()).exposition().decode()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "run with UPDATE_GOLDEN=1 after a deliberate change, and review the diff"


def test_golden_counts_match_the_fixtures() -> None:
    """The golden file is not trusted blindly: its counts are recomputed from the fixture records."""
    records = {}
    for n in range(3):
        for rec in json.loads((HERE / "fixtures" / f"clients-page{n}.json").read_text())["records"]:
            records[rec["macAddress"]] = rec
    got = samples(recorded_poll_state(Clock()))
    assert got[("cmx_connect_active_sessions", ())] == len(records) == 7
    sms = sum(1 for r in records.values() if r[AUTHTYPE.keys[0]] == "SMS")
    assert got.get((AUTHTYPE.metric, ((AUTHTYPE.label, "SMS"),)), 0) == sms
    assert got[("cmx_connect_poll_requests", ())] == 3


# Worked out by hand from the fixture records, at the Clock's 1,795,000,000 (2026-11-18 07:06:40 in the
# fixtures' UTC-4): (site, visit, dwell in seconds or None when unreadable). One record is on two pages.
BY_HAND = {
    "aa:bb:cc:00:00:00": ("North Stand", "new", 0),  # epoch ms numbers, logged in right now
    "aa:bb:cc:00:00:01": ("North Stand", "new", 1000),  # local times, 06:41:40 and 06:50:00
    "aa:bb:cc:00:00:02": ("South Stand", "returning", 4000),  # "site" key; ISO with offset; first 3 days ago
    "aa:bb:cc:00:00:03": ("unknown", "returning", 20000),  # site null; epoch s text; ISO without offset
    "aa:bb:cc:00:00:04": ("South Stand", "unknown", None),  # lastLoginTime "yesterday evening"; lastLogoutTIme
    "aa:bb:cc:00:00:05": ("North Stand", "new", 0),  # local time 2 minutes ahead, with a fraction: clock skew
    "aa:bb:cc:00:00:06": ("North Stand", "returning", 90000),  # site " North  Stand "; no portal, no type
}


def test_golden_venue_figures_match_the_records_by_hand() -> None:
    records = {rec["macAddress"]: rec for n in range(3)
               for rec in json.loads((HERE / "fixtures" / f"clients-page{n}.json").read_text())["records"]}
    assert records.keys() == BY_HAND.keys()
    got = samples(recorded_poll_state(Clock()))
    for dimension, slot in ((SITE, 0), (VISIT, 1)):
        for value in {row[slot] for row in BY_HAND.values()}:
            expected = sum(row[slot] == value for row in BY_HAND.values())
            assert got[(dimension.metric, ((dimension.label, value),))] == expected
    dwells = [row[2] for row in BY_HAND.values() if row[2] is not None]
    for bound in DWELL_BUCKETS:
        assert got[(DWELL.metric + "_bucket", (("le", f"{bound:g}"),))] == sum(d <= bound for d in dwells)
    assert got[(DWELL.metric + "_bucket", (("le", "+Inf"),))] == got[(DWELL.metric + "_count", ())] == 6
    assert got[(DWELL.metric + "_sum", ())] == sum(dwells) == 115000
    assert got[(UNREADABLE_LOGIN_TIME.metric, ())] == 1
    for direction, key in BYTES_KEYS.items():
        assert got[(BYTES.metric, ((DIRECTION, direction),))] == sum(int(r[key]) for r in records.values())
    assert got[(PORTAL.metric, ((PORTAL.label, "unknown"),))] == 1
    assert got[(PORTAL_TYPE.metric, ((PORTAL_TYPE.label, "FACEBOOK"),))] == 1
    assert got[(LOGINS.metric + "_total", ())] == 0, "the first poll counts no login"
    assert got[(VISITORS_TODAY.metric, ())] == len(BY_HAND), "the visitors query got the same seven sessions"
    for visit in VISIT.values:
        expected = sum(row[1] == visit for row in BY_HAND.values())
        assert got[(VISITORS_TODAY_BY_VISIT.metric, ((VISIT.label, visit),))] == expected


def test_no_personal_data_in_the_exposition() -> None:
    text = recorded_poll_state(Clock()).exposition().decode()
    for rec in json.loads((HERE / "fixtures" / "clients-page0.json").read_text())["records"]:
        for key in ("macAddress", "Name", "Email"):
            assert rec[key] not in text


def test_before_the_first_poll_up_is_zero_and_there_are_no_sessions() -> None:
    state = State(stale_after=180, version="1.2.3")
    got = samples(state)
    assert got[("cmx_connect_up", ())] == 0
    assert not names(state) & SESSION_METRICS
    assert {got[("cmx_connect_poll_errors_total", (("query", "active"), ("reason", r)))] for r in REASONS} == {0}


def test_failure_keeps_counts_until_stale_then_drops_them() -> None:
    clock = Clock()
    state = recorded_poll_state(clock)
    clock.now += 60
    state.record_failure(PollError("timeout", "no answer"), requests=4)
    got = samples(state)
    assert got[("cmx_connect_up", ())] == 0
    assert got[("cmx_connect_active_sessions", ())] == 7
    assert got[("cmx_connect_poll_errors_total", (("query", "active"), ("reason", "timeout")))] == 1
    assert got[("cmx_connect_poll_requests", ())] == 4
    clock.now += 120  # exactly stale_after since the success: still shown
    assert "cmx_connect_active_sessions" in names(state)
    clock.now += 1
    assert not names(state) & SESSION_METRICS
    assert got[("cmx_connect_last_success_timestamp_seconds", ())] == 1_795_000_000.0
    assert ("cmx_connect_last_success_timestamp_seconds", ()) in samples(state)


def test_recovery_brings_fresh_counts_back() -> None:
    clock = Clock()
    state = recorded_poll_state(clock)
    clock.now += 1000
    state.record_failure(PollError("auth", "denied"), requests=1)
    assert not names(state) & SESSION_METRICS
    state.record_success(state.snapshot.counts, duration=0.1, requests=2)  # type: ignore[arg-type]
    got = samples(state)
    assert got[("cmx_connect_up", ())] == 1
    assert got[("cmx_connect_active_sessions", ())] == 7
    assert got[("cmx_connect_poll_errors_total", (("query", "active"), ("reason", "auth")))] == 1


def test_scrapes_between_polls_reuse_one_rendering() -> None:
    state = recorded_poll_state(Clock())
    assert state.exposition() is state.exposition()


@pytest.mark.parametrize("failed", [False, True])
def test_promtool_accepts_the_exposition(tmp_path: Path, failed: bool) -> None:
    promtool = require_tool("promtool")
    state = recorded_poll_state(Clock())
    if failed:
        state.record_failure(PollError("http", "CMX answered HTTP 500"), requests=4)
    result = subprocess.run([promtool, "check", "metrics"], input=state.exposition(), capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
