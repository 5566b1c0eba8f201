"""The exposition: golden output from recorded pages, and what failure and staleness show."""

from __future__ import annotations

import json
import os
import subprocess
import zlib
from pathlib import Path

import pytest
import responses
from prometheus_client import CollectorRegistry, generate_latest

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
    VISITORS_TODAY_STAY,
)
from cmx_connect_exporter.exposition.names import BUILD_INFO, TARGET_LABEL
from cmx_connect_exporter.exposition.snapshot import (
    Store,
    TargetCollector,
    TargetState,
    join_families,
    split_families,
)
from cmx_connect_exporter.outcome import QUERIES, REASONS, PollError
from cmx_connect_exporter.polling.poll import count_active_sessions, count_visitors_today
from cmx_pages import add_page, make_client
from exporter_process import Samples, of_target, parse_samples
from tool_policy import require_tool

HERE = Path(__file__).parent
GOLDEN = HERE / "golden" / "metrics.prom"
SESSION_METRICS = {ACTIVE_SESSIONS, *(dimension.metric for dimension in DIMENSIONS)}


class Clock:
    def __init__(self, now: float = 1_795_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


TARGET = "mall-1"
# The Clock's local midnight at the fixtures' UTC-4: 07:06:40 local, 25,600 s before.
MIDNIGHT = 1_795_000_000 - 25_600


@responses.activate
def recorded_poll_store(clock: Clock) -> tuple[Store, TargetState]:
    """A poll of the fixture pages, then the visitors of the day, which CMX answers with the same records."""
    for n in range(3):
        body = (HERE / "fixtures" / f"clients-page{n}.json").read_bytes()
        add_page(responses.mock, 4 * n, 4, body)
        add_page(responses.mock, 4 * n, 4, body, since=MIDNIGHT)
    client = make_client()
    counts = count_active_sessions(client.fetch_body, page_size=4, max_pages=10, max_label_values=50,
                                   now=clock.now)
    store = Store(version="1.2.3", clock=clock)
    state = store.add(TARGET, stale_after=180, queries=QUERIES)
    state.record_success(counts, duration=0.25, requests=len(responses.calls))
    state.record_visitors(count_visitors_today(client.fetch_body, tz_offset=counts.tz_offset, page_size=4,
                                               max_pages=10, now=clock.now))
    return store, state


def recorded_poll_state(clock: Clock) -> TargetState:
    return recorded_poll_store(clock)[1]


def samples(state: TargetState) -> Samples:
    """The target's series, as /probe serves them, without the label every one of them carries."""
    text = state.exposition().decode()
    every = parse_samples(text)
    assert all(dict(labels).get(TARGET_LABEL) == TARGET for _, labels in every)
    return of_target(every, TARGET)


def names(state: TargetState) -> set[str]:
    return {name for name, _ in samples(state)}


def test_exposition_matches_golden_file() -> None:
    text = recorded_poll_store(Clock())[0].exposition().decode()
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
# fixtures' UTC-4): (site, visit, dwell in seconds or None when unreadable, stay: logout minus last login, or
# None while connected). One record is on two pages. The same pages answer the visitors-of-the-day query.
BY_HAND = {
    "aa:bb:cc:00:00:00": ("North Stand", "new", 0, None),  # epoch ms numbers, logged in right now; logout 0
    # local times, 06:41:40 and 06:50:00; a logout at 06:45:00 is the earlier visit's, so still connected
    "aa:bb:cc:00:00:01": ("North Stand", "new", 1000, None),
    # "site" key; ISO with offset, first 3 days ago; logout at 06:30 -04:00 after a login at 06:00: 1800 s
    "aa:bb:cc:00:00:02": ("South Stand", "returning", 4000, 1800),
    # site null; epoch s text; ISO without offset; logout in epoch ms an hour after the login
    "aa:bb:cc:00:00:03": ("unknown", "returning", 20000, 3600),
    # lastLoginTime "yesterday evening", so its lastLogoutTIme is left out too
    "aa:bb:cc:00:00:04": ("South Stand", "unknown", None, None),
    "aa:bb:cc:00:00:05": ("North Stand", "new", 0, None),  # local time 2 minutes ahead, with a fraction: clock skew
    # site " North  Stand "; no portal, no type; lastLogoutTIme in epoch s text, two hours after the login
    "aa:bb:cc:00:00:06": ("North Stand", "returning", 90000, 7200),
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
    stays = [row[3] for row in BY_HAND.values() if row[3] is not None]
    for bound in DWELL_BUCKETS:
        assert got[(VISITORS_TODAY_STAY.metric + "_bucket", (("le", f"{bound:g}"),))] == sum(d <= bound for d in stays)
    assert got[(VISITORS_TODAY_STAY.metric + "_count", ())] == len(stays) == 3, "both spellings of the logout"
    assert got[(VISITORS_TODAY_STAY.metric + "_sum", ())] == sum(stays) == 12600
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
    state = TargetState(TARGET, stale_after=180)
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
    assert state.families() is state.families()


def fresh_render(state: TargetState, clock: Clock) -> bytes:
    """The target's text rendered anew from its snapshot now, as a collector without a cache would."""
    registry = CollectorRegistry()
    registry.register(TargetCollector(state.name, lambda: state.snapshot, 180, clock))
    return generate_latest(registry)


def test_the_cached_rendering_follows_every_change_and_equals_a_fresh_one() -> None:
    """Rendered once per change: a failure after a success, a new poll and going stale each render anew,
    byte for byte as a fresh rendering, for /probe and in the join /metrics serves."""
    clock = Clock()
    store, state = recorded_poll_store(clock)
    other = store.add("airport", stale_after=180)
    seen = [state.exposition()]

    def check() -> None:
        assert state.exposition() == fresh_render(state, clock)
        assert state.exposition() not in seen, "the change shows in the cached text"
        seen.append(state.exposition())
        assert store.exposition() == join_families([split_families(fresh_render(s, clock)) for s in (state, other)]) \
            + generate_latest(store.registry)
        assert zlib.decompress(store.exposition(gzipped=True), 31) == store.exposition(), "its gzip follows too"

    assert seen[0] == fresh_render(state, clock)
    clock.now += 60
    state.record_failure(PollError("timeout", "no answer"), requests=3)
    check()
    clock.now += 60
    state.record_success(state.snapshot.counts, duration=0.5, requests=4)  # type: ignore[arg-type]
    check()
    other.record_failure(PollError("auth", "denied"), requests=1)  # another target's change leaves this one's text
    assert state.exposition() == seen[-1]
    clock.now += 181  # no change, but the counts go stale: rendered again without them
    check()


@pytest.mark.parametrize("failed", [False, True])
def test_promtool_accepts_the_exposition(tmp_path: Path, failed: bool) -> None:
    promtool = require_tool("promtool")
    state = recorded_poll_state(Clock())
    if failed:
        state.record_failure(PollError("http", "CMX answered HTTP 500"), requests=4)
    result = subprocess.run([promtool, "check", "metrics"], input=state.exposition(), capture_output=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_targets_share_each_family_once_and_keep_their_own_counts() -> None:
    clock = Clock()
    store, mall = recorded_poll_store(clock)
    airport = store.add("airport", stale_after=180)
    airport.record_failure(PollError("auth", "CMX answered HTTP 401"), requests=1)
    text = store.exposition().decode()
    every = parse_samples(text)
    assert of_target(every, TARGET) == samples(mall), "a failure of one target leaves the other's series alone"
    assert poll_errors_of(of_target(every, "airport")) == {**dict.fromkeys(REASONS, 0), "auth": 1}
    assert (ACTIVE_SESSIONS, ()) not in of_target(every, "airport")
    assert every[(BUILD_INFO.name, (("version", "1.2.3"),))] == 1, "process-wide: no cmx label"
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP")]
    assert len(families) == len(set(families)), "each family once, with the samples of every target"
    store.remove("airport")
    assert all(dict(labels).get(TARGET_LABEL) != "airport" for _, labels in parse_samples(store.exposition().decode()))


def test_every_family_the_collector_yields_carries_the_target_label(monkeypatch: pytest.MonkeyPatch) -> None:
    """The label is added in one place, so a new family needs no code of its own to carry it."""
    from prometheus_client.core import HistogramMetricFamily

    import cmx_connect_exporter.exposition.snapshot as snapshot

    original = snapshot._session_families

    def with_a_new_family(counts: object) -> object:
        yield from original(counts)  # type: ignore[arg-type]
        family = HistogramMetricFamily("cmx_connect_new_seconds", "A family added later.", labels=["site"])
        family.add_metric(["hall"], buckets=[("1", 1), ("+Inf", 2)], sum_value=3)
        yield family

    monkeypatch.setattr(snapshot, "_session_families", with_a_new_family)
    store, _ = recorded_poll_store(Clock())
    every = parse_samples(store.exposition().decode())
    assert every[("cmx_connect_new_seconds_bucket", (("cmx", TARGET), ("le", "1"), ("site", "hall")))] == 1
    unlabelled = {name for name, labels in every if TARGET_LABEL not in dict(labels)}
    assert unlabelled == {BUILD_INFO.name}


def poll_errors_of(target_samples: Samples) -> dict[str, float]:
    return {dict(labels)["reason"]: value for (name, labels), value in target_samples.items()
            if name == "cmx_connect_poll_errors_total" and dict(labels)["query"] == "active"}
