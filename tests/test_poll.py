"""Paging and counting, through the real client against answers recorded with ``responses``."""

from __future__ import annotations

import json
import math
import random
import time
import timeit
import tracemalloc
from typing import Any

import pytest
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_connect_exporter.cmx import wire
from cmx_connect_exporter.cmx.wire import parse_page
from cmx_connect_exporter.counting.dedupe import SeenKeys, session_key
from cmx_connect_exporter.counting.tally import MAX_VALUE_LENGTH, Tally, cap_values, normalise
from cmx_connect_exporter.outcome import Counts, PollError
from cmx_connect_exporter.polling.poll import count_active_sessions
from helpers import add_page, envelope, make_client, record


def poll(page_size: int, max_pages: int = 100, max_label_values: int = 50, concurrency: int = 1) -> Counts:
    return count_active_sessions(make_client().fetch_body, page_size=page_size, max_pages=max_pages,
                                 max_label_values=max_label_values, concurrency=concurrency)


def slow_poll(page_size: int, concurrency: int, expected_sessions: int) -> Counts:
    """A poll whose pages take 20 ms each, so that every request sent ahead is made before the walk ends."""
    fetch_body = make_client().fetch_body

    def fetch_slowly(index: int, count: int) -> bytes | bytearray:
        time.sleep(0.02)
        return fetch_body(index, count)

    return count_active_sessions(fetch_slowly, page_size=page_size, max_pages=100, max_label_values=50,
                                 concurrency=concurrency, expected_sessions=expected_sessions)


@pytest.fixture(params=[1, 4], ids=["sequential", "concurrent"])
def concurrency(request: pytest.FixtureRequest) -> int:
    """Paging rules must hold whether pages are fetched one by one or several at once."""
    return int(request.param)


def serve_pages(rsps: responses.RequestsMock, pages: list[list[dict[str, Any]]], page_size: int,
                next_index: Any = "auto") -> None:
    """Serve consecutive pages the way CMX does: nextIndex names the next page while there is one."""
    index = 0
    for number, records in enumerate(pages):
        last = number == len(pages) - 1
        nxt = (0 if last else index + len(records)) if next_index == "auto" else next_index
        add_page(rsps, index, page_size, envelope(records, nxt, page_size))
        index += len(records)


def requested_indexes(rsps: responses.RequestsMock) -> list[str]:
    return [call.request.params["index"] for call in rsps.calls]


@responses.activate
def test_short_last_page_stops() -> None:
    serve_pages(responses.mock, [[record() for _ in range(3)], [record()]], page_size=3)
    assert poll(3).total == 4
    assert requested_indexes(responses.mock) == ["0", "3"]


@responses.activate
def test_exact_multiple_of_page_size_asks_once_more() -> None:
    serve_pages(responses.mock, [[record() for _ in range(3)], [record() for _ in range(3)], []], page_size=3)
    assert poll(3).total == 6
    assert requested_indexes(responses.mock) == ["0", "3", "6"]


@pytest.mark.parametrize("next_index", [0, None, ...], ids=["zero", "null", "absent"])
@responses.activate
def test_full_pages_are_followed_whatever_next_index_says(next_index: Any, concurrency: int) -> None:
    pages = [[record() for _ in range(2)], [record() for _ in range(2)], [record()]]
    index = 0
    for records in pages:
        body = envelope(records, next_index, 2)
        if next_index is ...:
            del body["nextIndex"]
        add_page(responses.mock, index, 2, body)
        index += len(records)
    assert poll(2, concurrency=concurrency).total == 5


@responses.activate
def test_short_page_with_next_index_ahead_goes_on() -> None:
    add_page(responses.mock, 0, 3, envelope([record(), record()], next_index=2))
    add_page(responses.mock, 2, 3, envelope([record()], next_index=0))
    assert poll(3).total == 3


@responses.activate
def test_empty_first_page_is_zero_sessions() -> None:
    add_page(responses.mock, 0, 1000, envelope([]))
    counts = poll(1000)
    assert counts.total == 0
    assert all(values == {} for values in counts.by_label.values())


@responses.activate
def test_overlapping_pages_count_each_session_once(concurrency: int) -> None:
    first = [record(f"00:00:00:00:00:0{i}") for i in range(4)]
    # Two new logins pushed the list down while we paged: the next page repeats two sessions.
    second = [*first[2:], record("00:00:00:00:00:10"), record("00:00:00:00:00:11")]
    serve_pages(responses.mock, [first, second, [record("00:00:00:00:00:12")]], page_size=4)
    assert poll(4, concurrency=concurrency).total == 7


@responses.activate
def test_same_mac_in_other_spellings_is_one_session() -> None:
    page = [record("00:11:22:AA:BB:CC"), record("0011.22aa.bbcc"), record(" 00-11-22-aa-bb-cc ")]
    serve_pages(responses.mock, [page], page_size=10)
    assert poll(10).total == 1


@responses.activate
def test_records_without_mac_are_each_counted() -> None:
    serve_pages(responses.mock, [[record(macAddress=None), record(macAddress=...), record(macAddress=7)]], 10)
    assert poll(10).total == 3


@responses.activate
def test_server_that_ignores_index_is_a_pagination_error(concurrency: int) -> None:
    same = [record() for _ in range(2)]
    add_page(responses.mock, 0, 2, envelope(same, 2))
    add_page(responses.mock, 2, 2, envelope(same, 4))
    with pytest.raises(PollError) as caught:
        poll(2, concurrency=concurrency)
    assert caught.value.reason == "pagination"
    assert "ignore 'index'" in str(caught.value)


@responses.activate
def test_next_index_going_backwards_is_a_pagination_error(concurrency: int) -> None:
    add_page(responses.mock, 0, 2, envelope([record(), record()], 2))
    add_page(responses.mock, 2, 2, envelope([record(), record()], 1))
    with pytest.raises(PollError, match="went backwards") as caught:
        poll(2, concurrency=concurrency)
    assert caught.value.reason == "pagination"


@responses.activate
def test_next_index_equal_to_an_empty_pages_own_index_is_not_backwards(concurrency: int) -> None:
    """A short page names the next index; the empty page there names itself: the list has just ended."""
    add_page(responses.mock, 0, 3, envelope([record() for _ in range(3)], 3, 3))
    add_page(responses.mock, 3, 3, envelope([record(), record()], 5, 3))
    add_page(responses.mock, 5, 3, envelope([], 5, 3))
    assert poll(3, concurrency=concurrency).total == 5


@pytest.mark.parametrize(("next_index", "read"), [
    ("\u00b2", None),  # a superscript two: str.isdigit() says yes, int() says no
    ("\u0663", None),  # an Arabic-Indic three, which int() reads
    ("9" * 5000, None),  # more digits than int() converts
    ("1" * 19, None),
    ("-3", None),
    ("1e3", None),
    (" 12 ", 12),
    ("999999999999999999", 999_999_999_999_999_999),
    ("0", 0),
], ids=["superscript", "arabic-indic", "5000 digits", "19 digits", "negative", "exponent", "spaced", "18 digits",
        "zero"])
def test_next_index_is_read_only_from_a_few_ascii_digits(next_index: str, read: int | None) -> None:
    page = parse_page(json.dumps(envelope([record()], next_index)).encode(), 100)
    assert page.next_index == read


@responses.activate
def test_unreadable_next_index_on_a_short_page_ends_the_walk() -> None:
    add_page(responses.mock, 0, 3, envelope([record(), record()], "\u00b2", 3))
    assert poll(3).total == 2


@pytest.fixture(params=["fast", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are decoded by orjson, then by the stdlib when orjson refuses; without orjson, by the stdlib alone."""
    if request.param == "stdlib":
        monkeypatch.setattr(wire, "fast_loads", json.loads)


@pytest.mark.parametrize(("body", "problem"), [
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11:22:33:44:55", "device": ' + b"7" * 5000 + b"}]}",
     "holds a number too long to read"),
    (b'{"nextIndex": ' + b"9" * 5000 + b', "records": []}', "holds a number too long to read"),
    (b"[" * 100_000, "is nested too deeply"),
    (b'{"records": [{"macAddress": "00:11:22:33:44:55", "device": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "is nested too deeply"),
    (b'{"nextIndex": 0, "records": [{"macAddress": "00:11', "is truncated JSON"),
    (b"CMX Error", "is not JSON"),
], ids=["long number in a record", "long nextIndex", "deep", "deep in a record", "truncated", "text"])
def test_undecodable_page_is_a_bad_response_that_says_why(decoder: None, body: bytes, problem: str) -> None:
    with pytest.raises(PollError) as caught:
        parse_page(body, 300)
    assert caught.value.reason == "bad_response"
    assert str(caught.value) == f"page at index 300 {problem}", "the message names the problem, never the content"


@responses.activate
def test_more_records_than_asked_is_a_bad_response(concurrency: int) -> None:
    add_page(responses.mock, 0, 2, envelope([record() for _ in range(3)]))
    with pytest.raises(PollError, match="more than the 2 asked for") as caught:
        poll(2, concurrency=concurrency)
    assert caught.value.reason == "bad_response"


@responses.activate
def test_page_cap_ends_a_poll_that_never_ends() -> None:
    for i in range(3):
        add_page(responses.mock, i, 1, envelope([record()], i + 1, 1))
    with pytest.raises(PollError, match="more than 3 pages") as caught:
        poll(1, max_pages=3)
    assert caught.value.reason == "pagination"
    assert len(responses.calls) == 3


@responses.activate
def test_error_on_a_later_page_fails_the_whole_poll(concurrency: int) -> None:
    add_page(responses.mock, 0, 2, envelope([record(), record()], 2))
    add_page(responses.mock, 2, 2, "denied", status=401)
    with pytest.raises(PollError) as caught:
        poll(2, concurrency=concurrency)
    assert caught.value.reason == "auth"


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
    assert counts.by_label["os"] == {"Android": 2, "Mac OS X": 1, "iOS": 2, "unknown": 1}
    assert counts.by_label["authtype"] == {"SMS": 4, "social": 1, "unknown": 1}
    assert counts.by_label["device"] == {"Mobile": 5, "12": 1}
    assert counts.by_label["language"] == {"English": 4, "unknown": 2}
    for values in counts.by_label.values():
        assert sum(values.values()) == counts.total


@responses.activate
def test_label_values_are_capped_with_other() -> None:
    page = [record(device=f"Model {i % 7}") for i in range(70)] + [record(device="Model 0") for _ in range(5)]
    serve_pages(responses.mock, [page], 100)
    counts = poll(100, max_label_values=3)
    device = counts.by_label["device"]
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
    """A server sending huge distinct values must not grow the poll's memory by them."""
    tally = Tally()
    tracemalloc.start()
    try:
        for page in range(4):
            tally.add_page([record(**{key: f"{page} {key} " + "x" * (3 << 20)
                                      for key in ("authType", "operationSystem", "device", "language")})])
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert kept < 1 << 20, f"{kept / (1 << 20):.1f} MiB kept after 4 pages of four 3 MiB values"
    counts = tally.counts(max_label_values=50)
    assert counts.total == 4
    assert all(len(value) == MAX_VALUE_LENGTH for values in counts.by_label.values() for value in values)


def test_cap_values_keeps_the_most_frequent_and_breaks_ties_by_name() -> None:
    assert cap_values({"a": 1, "b": 1, "c": 1, "d": 5}, 3) == {"d": 5, "a": 1, "other": 2}
    assert cap_values({"a": 3, "other": 4, "b": 2, "c": 1}, 3) == {"a": 3, "b": 2, "other": 5}
    assert cap_values({"a": 1, "b": 2}, 2) == {"a": 1, "b": 2}


def test_session_key_is_an_integer_for_a_mac() -> None:
    assert session_key({"macAddress": "00:11:22:33:44:55"}) == 0x001122334455
    assert session_key({"mac": "not-a-mac"}) != session_key({"mac": "not-a-mac-2"})
    assert session_key({"mac": "not-a-mac"}) >= 1 << 63
    assert session_key({"macAddress": None}) is None


@responses.activate
def test_concurrent_paging_counts_the_same_and_overruns_at_most_depth_minus_one() -> None:
    pages = [[record() for _ in range(5)] for _ in range(9)] + [[record(), record()]]
    serve_pages(responses.mock, pages, page_size=5)
    sequential = poll(5)
    sequential_requests = len(responses.calls)
    responses.mock.calls.reset()
    concurrent = poll(5, concurrency=4)
    assert concurrent == sequential
    assert concurrent.total == 47
    assert sequential_requests <= len(responses.calls) <= sequential_requests + 3


@pytest.mark.parametrize(("sessions", "last_total"), [(47, 47), (47, 46), (47, 49), (45, 45)],
                         ids=["same", "grew by one", "shrank by two", "exact pages"])
@responses.activate
def test_concurrent_paging_asks_nothing_past_the_end_where_the_last_poll_ended(sessions: int, last_total: int) -> None:
    """The last poll's total says which page is probably the last: the prefetch stops there."""
    pages = [[record() for _ in range(5)] for _ in range(sessions // 5)] + [[record() for _ in range(sessions % 5)]]
    serve_pages(responses.mock, pages, page_size=5)
    assert slow_poll(5, concurrency=4, expected_sessions=last_total).total == sessions
    assert sorted(map(int, requested_indexes(responses.mock))) == list(range(0, 46, 5)), "every page, none past"


@pytest.mark.parametrize("last_total", [0, 20, 31, 80], ids=["first poll", "grew", "grew a little", "shrank"])
@responses.activate
def test_concurrent_paging_counts_right_whatever_the_last_total(last_total: int) -> None:
    pages = [[record() for _ in range(5)] for _ in range(9)] + [[record(), record()]]
    serve_pages(responses.mock, pages, page_size=5)
    assert slow_poll(5, concurrency=4, expected_sessions=last_total).total == 47
    asked = sorted(map(int, requested_indexes(responses.mock)))
    assert asked[:10] == list(range(0, 46, 5))
    assert len(asked) <= 10 + 3, "at most depth - 1 past the end"


@responses.activate
def test_concurrent_paging_restarts_when_a_short_page_says_there_is_more() -> None:
    add_page(responses.mock, 0, 3, envelope([record(), record()], next_index=2))
    add_page(responses.mock, 2, 3, envelope([record()], next_index=0))
    assert poll(3, concurrency=3).total == 3


@given(st.lists(st.one_of(st.integers(0, 5), st.integers(0, (1 << 64) - 1)), max_size=20_000))
@settings(max_examples=30, deadline=None)
def test_seen_keys_behaves_like_a_set(keys: list[int]) -> None:
    seen, reference = SeenKeys(), set()
    for key in keys:
        assert seen.add(key) == (key not in reference)
        reference.add(key)
    assert len(seen) == len(reference)


def test_seen_keys_stays_exact_as_it_grows() -> None:
    rng = random.Random(5)
    keys = [rng.getrandbits(48) for _ in range(50_000)] * 2
    seen = SeenKeys()
    assert len(set(keys)) > 49_000
    assert sum(seen.add(k) for k in keys) == len(set(keys))
    assert not any(seen.add(k) for k in keys)
    assert len(seen) == len(set(keys))


def crafted_keys(n: int) -> list[int]:
    """MACs that all fell in one shard and one first slot of the unsalted table: ``h << 24 | h``, ``h = m << 6``."""
    return [m << 30 | m << 6 for m in range(n)]


def seconds_to_add(keys: list[int], budget: float = math.inf) -> float:
    """Best of five fills of a fresh SeenKeys; a fill is abandoned past ``budget`` seconds (inf if all are)."""
    best = math.inf
    for _ in range(5):
        seen = SeenKeys()
        start = time.perf_counter()
        for chunk in range(0, len(keys), 1000):
            for key in keys[chunk:chunk + 1000]:
                seen.add(key)
            if time.perf_counter() - start > budget:
                break
        else:
            best = min(best, time.perf_counter() - start)
    return best


def test_seen_keys_takes_crafted_keys_as_fast_as_ordinary_ones() -> None:
    """A server cannot choose MACs that pile up in one place: where a key goes is salted per table."""
    rng = random.Random(7)
    ordinary = seconds_to_add([rng.getrandbits(48) for _ in range(20_000)])
    crafted = seconds_to_add(crafted_keys(20_000), budget=5 * ordinary)
    assert crafted < 5 * ordinary, f"20,000 crafted keys took over 5x the {ordinary:.3f} s of ordinary ones"


def test_seen_keys_holds_crafted_and_extreme_keys_exactly() -> None:
    keys = [*crafted_keys(5000), 1, (1 << 64) - 1, 1 << 63, (1 << 63) | 1, 1 << 58, 3 << 62]
    assert keys.count(0) == 1
    seen = SeenKeys()
    assert all(seen.add(key) for key in keys)
    assert not any(seen.add(key) for key in keys), "every duplicate is found"
    assert len(seen) == len(keys)
    assert not seen.add(0)
    assert seen.add(2) and len(seen) == len(keys) + 1
