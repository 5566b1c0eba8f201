"""Times in CMX records, in every plausible format, and what the tally makes of them."""

from __future__ import annotations

import re
from collections import Counter
from itertools import repeat
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cmx_connect_exporter.counting.dedupe import SessionTable
from cmx_connect_exporter.counting.dimensions import DWELL_BUCKETS, LAST_LOGIN_KEY, VISIT
from cmx_connect_exporter.counting.tally import Tally, _visit, _visits
from cmx_connect_exporter.counting.times import epoch_seconds, local_form_seconds, offset_seconds
from cmx_pages import count_records, record

EST_MS = -14_400_000  # the reference's sample timeZoneOffset: UTC-4, in milliseconds
T = 1_795_000_000  # 2026-11-18 11:06:40 UTC, 07:06:40 at UTC-4


@pytest.mark.parametrize("value", [
    T, T * 1000, float(T), T + 0.0, str(T), str(T * 1000), f" {T} ",
    "2026-11-18 07:06:40", "2026-11-18 07:06:40.000", "2026-11-18T07:06:40",
    "2026-11-18T07:06:40-04:00", "2026-11-18T11:06:40Z", "2026-11-18T11:06:40+00:00", "2026-11-18T12:06:40.0+01:00",
], ids=repr)
def test_every_accepted_format_reads_the_same_instant(value: Any) -> None:
    assert epoch_seconds(value, offset_seconds(EST_MS)) == T


def test_fractions_are_kept() -> None:
    assert epoch_seconds("2026-11-18 07:06:40.250", -14400) == T + 0.25
    assert epoch_seconds(T * 1000 + 500, None) == T + 0.5


@pytest.mark.parametrize("value", [
    None, True, False, 0, -5, "0", "", "  ", "yesterday evening", "18/11/2026 07:06", "2026-13-40 07:06:40",
    float("nan"), float("inf"), [T], {"t": T}, "9" * 5000, "1e9", 10**400, 10**15,
    "1970-01-01T00:00:00Z", "0001-01-01 00:00:00", "1969-12-31T23:59:59+00:00",
], ids=lambda value: repr(value)[:40])
def test_unreadable_times_are_none_never_guessed(value: Any) -> None:
    assert epoch_seconds(value, -14400) is None


def test_local_times_need_the_servers_offset() -> None:
    assert epoch_seconds("2026-11-18 07:06:40", None) is None, "no zone, no guess"
    assert epoch_seconds("2026-11-18T07:06:40-04:00", None) == T, "an offset of its own is enough"
    assert epoch_seconds(T, None) == T


@pytest.mark.parametrize(("sent", "seconds"), [
    (-14_400_000, -14_400), (19_800_000, 19_800), (0, 0),  # milliseconds, as the reference says
    (-14_400, -14_400), (19_800, 19_800),  # seconds
    (-240, -14_400), (330, 19_800),  # minutes
    (None, None), (10**15, None),
])
def test_time_zone_offset_units(sent: int | None, seconds: int | None) -> None:
    assert offset_seconds(sent) == seconds


def tally_of(records: list[dict[str, Any]], now: float = T, tz_offset: int | None = EST_MS) -> Tally:
    tally = Tally(now=now)
    count_records(tally, records, tz_offset)
    return tally


def test_future_logins_count_as_zero_seconds() -> None:
    counts = tally_of([record(lastLoginTime=T + 600), record(lastLoginTime="2026-11-18 08:00:00")]).counts(50)
    assert counts.dwell.count == 2 and counts.dwell.sum == 0
    assert counts.dwell.buckets[0] == 2


def test_unreadable_login_times_are_counted_and_left_out_of_the_histogram() -> None:
    records = [record(lastLoginTime="soon"), record(lastLoginTime=None), record(lastLoginTime=T - 400)]
    records.append({k: v for k, v in record().items() if k != LAST_LOGIN_KEY})
    counts = tally_of(records).counts(50)
    assert counts.total == 4
    assert counts.unreadable_login_time == 3
    assert counts.dwell.count == 1 and counts.dwell.sum == 400
    assert counts.dwell.buckets == tuple(int(bound >= 400) for bound in DWELL_BUCKETS)


def test_visit_is_decided_by_cmxs_local_day_not_utcs() -> None:
    # 23:30 and 00:30 local on consecutive days are the same UTC day (03:30 and 04:30), yet two local days.
    first, last = "2026-11-17 23:30:00", "2026-11-18 00:30:00"
    counts = tally_of([record(firstLoginTime=first, lastLoginTime=last)], now=T).counts(50)
    assert counts.by_label[VISIT.label] == {"returning": 1}
    # 20:30 and 21:30 local are on one local day, but on two UTC days (00:30 and 01:30 next day).
    counts = tally_of([record(firstLoginTime="2026-11-17 20:30:00", lastLoginTime="2026-11-17 21:30:00")]).counts(50)
    assert counts.by_label[VISIT.label] == {"new": 1}
    counts = tally_of([record(firstLoginTime=T, lastLoginTime=T)], tz_offset=None).counts(50)
    assert counts.by_label[VISIT.label] == {"unknown": 1}, "no zone, no local day"


# Times as a page may hold them: mostly CMX's local form around midnight, and every other kind of value.
_LOCAL = st.builds("1970-01-{:02d} {:02d}:{:02d}:{:02d}".format, st.integers(1, 4), st.integers(0, 23),
                   st.integers(0, 59), st.integers(0, 59)) | st.builds(
    "2026-{:02d}-{:02d}{}{:02d}:30:00".format, st.integers(1, 12), st.integers(27, 31), st.sampled_from(" T"),
    st.integers(0, 23))
_OTHER_TIME = st.sampled_from([
    "2026-11-18 07:06:40.250", "2026-11-18T07:06:40-04:00", "2026-11-18T23:30:00Z", " 2026-11-18 07:06:40",
    "2026-11-18 24:00:00", "2026-13-01 00:00:00", "2026-11-18X07:06:40", "20261118", str(T), T, T * 1000, 0, None,
    "", "now-ish", "2026-11-18 07:06:4\u0663"])


@given(st.lists(st.tuples(st.one_of(_LOCAL, _LOCAL, _OTHER_TIME), st.one_of(_LOCAL, _LOCAL, _OTHER_TIME),
                          st.booleans()), max_size=40),
       st.sampled_from([EST_MS, 0, 330 * 60_000, -14 * 3600, None]))
@example([("1970-01-01 03:00:00", "1970-01-03 00:00:00", False)], 330 * 60_000)  # a first login before 1970 UTC
@settings(max_examples=400, deadline=None)
def test_a_pages_visits_are_each_records(pairs: list[tuple[Any, Any, bool]], tz_offset: int | None) -> None:
    """The page at once, in C where it can be, counts what record by record counts."""
    firsts = [last if same else first for first, last, same in pairs]
    lasts = [last for _, last, _ in pairs]
    offset = offset_seconds(tz_offset)
    logins = [epoch_seconds(last, offset) for last in lasts]
    by_record = Counter(map(_visit, firsts, lasts, logins, repeat(offset)))
    assert dict(_visits(firsts, lasts, logins, offset)) == dict(by_record)


_ORDINARY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}")  # CMX's local form


@given(st.lists(st.one_of(_LOCAL, _LOCAL, _LOCAL, _OTHER_TIME), max_size=40),
       st.sampled_from([EST_MS, 0, 330 * 60_000, -14 * 3600, None]))
@example(["2026-11-18 07:06:40", "2026-11-18T07:06:40"], EST_MS)
@settings(max_examples=300, deadline=None)
def test_a_pages_local_times_read_at_once_are_each_times(texts: list[Any], tz_offset: int | None) -> None:
    """Read in C, a page's times in CMX's local form are what ``epoch_seconds`` makes of each; a page with
    any other time, or one it finds unreadable, is left to it."""
    offset = offset_seconds(tz_offset)
    each = [epoch_seconds(text, offset) for text in texts]
    at_once = local_form_seconds(texts, offset)
    if at_once is not None:
        assert at_once == each
    if texts and None not in each and all(isinstance(t, str) and _ORDINARY.fullmatch(t) for t in texts):
        assert at_once == each, "a page of ordinary local times is read at once"


def test_logins_count_new_pairs_only_and_the_first_poll_none() -> None:
    table = SessionTable()

    def poll(records: list[dict[str, Any]]) -> int:
        tally = Tally(now=T, sessions=table)
        count_records(tally, records, EST_MS)
        logins = tally.counts(50).logins
        table.end(completed=True)
        return logins

    a, b = record("02:00:00:00:00:01", lastLoginTime=T - 60), record("02:00:00:00:00:02", lastLoginTime=T - 60)
    assert poll([a, b]) == 0, "the first poll after a start counts nothing"
    assert poll([a, b]) == 0
    again = {**a, LAST_LOGIN_KEY: T - 5}  # the same guest logged in again
    c = record("02:00:00:00:00:03", lastLoginTime=T - 1)
    unreadable = record("02:00:00:00:00:04", lastLoginTime="now-ish")
    assert poll([c, again, b, unreadable]) == 2
    assert poll([c, again]) == 0
    assert poll([a, again, c]) == 1, "an old pair not in the previous poll counts again"
    assert Tally(now=T).counts(50).logins == 0, "a tally without the target's table counts none"

