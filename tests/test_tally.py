"""Counting records through the catalogue: alternate keys, messy values, caps, bounded memory."""

from __future__ import annotations

import timeit
import tracemalloc
from typing import Any

import pytest
import responses

from cmx_connect_exporter.counting import tally
from cmx_connect_exporter.counting.dimensions import AUTHTYPE, DEVICE, DIMENSIONS, LANGUAGE, OS, SITE, SPLITS, VISIT
from cmx_connect_exporter.counting.tally import MAX_VALUE_LENGTH, Tally, byte_count, cap_values, normalise
from cmx_connect_exporter.outcome import PollError
from cmx_pages import add_page, count_records, envelope, poll, record, serve_pages


@responses.activate
def test_record_that_is_not_an_object_is_a_bad_response() -> None:
    add_page(responses.mock, 0, 10, envelope([record(), "00:11:22:33:44:55"]))
    with pytest.raises(PollError, match="not a JSON object") as caught:
        poll(10)
    assert caught.value.reason == "bad_response"
    assert "00:11" not in str(caught.value)


@responses.activate
def test_counts_read_alternate_keys_and_messy_values() -> None:
    page = [
        record(operationSystem="  Android \t"),
        record(operationSystem=..., os="Android"),
        record(operationSystem=..., operatingSystem="Mac  OS\nX"),
        record(authType=..., authtype="social", language=None),
        record(device=12, language=["en"], authType={"x": 1}),
        record(operationSystem="   "),
    ]
    serve_pages(responses.mock, [page], 10)
    counts = poll(10)
    assert counts.total == 6
    assert counts.by_label[OS.label] == {"Android": 2, "Mac OS X": 1, "iOS": 2, "unknown": 1}
    assert counts.by_label[AUTHTYPE.label] == {"SMS": 4, "social": 1, "unknown": 1}
    assert counts.by_label[DEVICE.label] == {"Mobile": 5, "12": 1}
    assert counts.by_label[LANGUAGE.label] == {"English": 4, "unknown": 2}
    for values in counts.by_label.values():
        assert sum(values.values()) == counts.total


@responses.activate
def test_label_values_are_capped_with_other() -> None:
    page = [record(device=f"Model {i % 7}") for i in range(70)] + [record(device="Model 0") for _ in range(5)]
    serve_pages(responses.mock, [page], 100)
    counts = poll(100, max_label_values=3)
    device = counts.by_label[DEVICE.label]
    assert device == {"Model 0": 15, "Model 1": 10, "other": 50}
    assert sum(device.values()) == counts.total == 75


@pytest.mark.parametrize(("raw", "label"), [
    ("  iOS  ", "iOS"),
    ("Mac \t\n OS   X", "Mac OS X"),
    ("ANDROID", "ANDROID"),
    ("", "unknown"),
    ("\u00a0\u2003", "unknown"),
    (None, "unknown"),
    (True, "unknown"),
    ({"name": "x"}, "unknown"),
    ([1, 2], "unknown"),
    (42, "42"),
    (1.5, "1.5"),
    ("a\x00b\x1bc", "abc"),
    ("x" * 100, "x" * 64),
    ("y" * 63 + " tail", "y" * 63),
    ("bad \ud800 surrogate", "bad ? surrogate"),
    ('quote " back \\ brace {}', 'quote " back \\ brace {}'),
])
def test_normalise(raw: Any, label: str) -> None:
    assert normalise(raw) == label


def test_normalise_reads_a_huge_value_no_further_than_its_start() -> None:
    huge = "Mac \t OS\x00 X " * (1 << 20)  # 12 MiB
    start = huge[:1000]
    tracemalloc.start()
    try:
        label = normalise(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert label == normalise(start) == "Mac OS X " * 7 + "M"
    assert peak < 64 << 10, "no copy of the value is made"
    huge_time, start_time = (min(timeit.repeat(lambda v=v: normalise(v), number=10, repeat=5)) for v in (huge, start))
    assert huge_time < 20 * start_time


def test_tally_keeps_no_long_label_value() -> None:
    """A server sending huge distinct values, label or time, must not grow the poll's memory by them."""
    read = [d for d in DIMENSIONS if not d.derived]
    tally = Tally(labels=[d.label for d in read])
    tracemalloc.start()
    try:
        for page in range(4):
            count_records(tally, [record(**{key: f"{page} {key} " + "x" * (3 << 20)
                                      for key in (*(d.keys[0] for d in read), *VISIT.keys)})], -14400000)
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20, f"{kept / (1 << 20):.1f} MiB kept after 4 pages of four 3 MiB values"
    counts = tally.counts(max_label_values=50)
    assert counts.total == 4 == counts.unreadable_login_time
    assert all(len(value) == MAX_VALUE_LENGTH for values in counts.by_label.values() for value in values)


@pytest.mark.parametrize("stays", [False, True])
@pytest.mark.parametrize("split_by", [None, *(d.label for d in SPLITS)])
def test_a_tally_reads_only_keys_it_asks_the_decoder_for(split_by: str | None, stays: bool) -> None:
    """Every option, every dimension alone: a record decoded for the tally's keys is counted without a miss."""
    for labels in [(), *((d.label,) for d in DIMENSIONS), tuple(d.label for d in DIMENSIONS)]:
        tally_ = Tally(labels=labels, split_by=split_by, stays=stays, now=1_795_000_000)
        everything = {key: "x" for d in DIMENSIONS for key in d.keys} | {
            "macAddress": "00:11:22:33:44:55", "firstLoginTime": "2026-11-18 06:00:00",
            "lastLoginTime": "2026-11-18 07:00:00", "lastLogoutTime": "2026-11-18 07:05:00", "bytesSent": 5}
        count_records(tally_, [everything], -14_400_000)
        assert tally_.counts(50).total == 1


def test_cap_values_keeps_the_most_frequent_and_breaks_ties_by_name() -> None:
    assert cap_values({"a": 1, "b": 1, "c": 1, "d": 5}, 3) == {"d": 5, "a": 1, "other": 2}
    assert cap_values({"a": 3, "other": 4, "b": 2, "c": 1}, 3) == {"a": 3, "b": 2, "other": 5}
    assert cap_values({"a": 1, "b": 2}, 2) == {"a": 1, "b": 2}


def test_split_by_site_caps_the_sites_and_each_breakdown_within_a_site() -> None:
    records = [record(**{SITE.keys[0]: f"Stand {i % 4}", DEVICE.keys[0]: f"Model {i % 5}"}) for i in range(40)]
    records += [record(**{SITE.keys[0]: "Stand 0"}) for _ in range(6)]
    records.append(record(site="Stand 1"))  # an alternate key
    tally = Tally(labels=[AUTHTYPE.label, DEVICE.label, SITE.label], split_by=SITE.label)
    count_records(tally, records, -14_400_000)
    counts = tally.counts(max_label_values=3)
    assert counts.split_by == SITE.label and counts.by_label == {}
    assert {site: sub.total for site, sub in counts.by_split.items()} == {"Stand 0": 16, "Stand 1": 11, "other": 20}
    assert sum(sub.total for sub in counts.by_split.values()) == counts.total == len(records)
    for sub in counts.by_split.values():
        assert set(sub.by_label) == {AUTHTYPE.label, DEVICE.label}, "the split label is no breakdown of its own"
        for values in sub.by_label.values():
            assert sum(values.values()) == sub.total and len(values) <= 3
    assert sum(sub.dwell.count for sub in counts.by_split.values()) + counts.unreadable_login_time == counts.total


@pytest.mark.parametrize(("value", "count"), [
    (5, 5), ("5", 5), (5.0, 5), (2**63 - 1, 2**63 - 1), (0, 0), (-5, 0), (5.5, 0), (True, 0),
    (2**63, 0), (10**400, 0), (1.7e308, 0), ("99999999999999999999", 0), (None, 0), ("12a", 0),
], ids=repr)
def test_byte_count_is_a_plausible_counter_or_nothing(value: Any, count: int) -> None:
    """A counter at or past 2**63 is no count: summed, such values would overflow the float the metric renders."""
    assert byte_count(value) == count


def test_huge_byte_counts_on_a_page_are_left_out_of_the_sum() -> None:
    tally_ = Tally()
    count_records(tally_, [record(bytesSent=1.7e308), record(bytesSent=1.7e308), record(bytesSent=7)])
    counts = tally_.counts(50)
    assert counts.bytes_sent == 7


def test_split_past_the_tracked_values_goes_to_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tally, "MAX_TRACKED_VALUES", 3)
    tally_ = Tally(split_by=SITE.label)
    count_records(tally_, [record(**{SITE.keys[0]: f"Stand {i}"}) for i in range(6)])
    counts = tally_.counts(50)
    assert sorted(counts.by_split) == ["Stand 0", "Stand 1", "Stand 2", "other"]
    assert counts.by_split["other"].total == 3


def test_values_python_thinks_equal_keep_their_own_labels() -> None:
    """JSON's true, 1 and 1.0 are one dict key to Python; as labels they are unknown, 1 and 1.0."""
    for order in ([True, 1, 1.0], [1.0, 1, True]):
        tally_ = Tally()
        count_records(tally_, [record(device=value) for value in order])
        assert tally_.counts(50).by_label[DEVICE.label] == {"unknown": 1, "1": 1, "1.0": 1}
