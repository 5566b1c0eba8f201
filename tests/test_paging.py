"""The walk over pages: where it goes on and where it stops, sequential and concurrent, through the real client."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import responses

from cmx_connect_exporter.cmx.paging import PageThreads, walk
from cmx_connect_exporter.outcome import PollError
from cmx_pages import add_page, envelope, poll, read_page, record, requested_indexes, serve_pages, slow_poll


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
    assert counts.tz_offset == envelope([])["timeZoneOffset"], "an empty venue still says its time zone"
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


@responses.activate
def test_unreadable_next_index_on_a_short_page_ends_the_walk() -> None:
    add_page(responses.mock, 0, 3, envelope([record(), record()], "\u00b2", 3))
    assert poll(3).total == 2


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


def test_kept_threads_leave_requests_past_the_end_to_the_next_walk() -> None:
    """A walk ends with its last page, not its requests past the end; the next walk waits for those first."""
    release = threading.Event()
    asked: list[int] = []

    def fetch_body(index: int, count: int) -> bytes:
        asked.append(index)
        if index >= 10:  # past the end: held until released
            release.wait(10)
        records = [record() for _ in range(5 if index == 0 else 1 if index == 5 else 0)]
        return json.dumps(envelope(records, count=count)).encode()

    def start_walk() -> threading.Thread:
        options = {"page_size": 5, "max_pages": 10, "concurrency": 4, "threads": threads}
        thread = threading.Thread(target=walk, args=(fetch_body, read_page, lambda records, _offset: len(records)),
                                  daemon=True, kwargs=options)
        thread.start()
        return thread

    threads = PageThreads(4)
    try:
        first = start_walk()
        first.join(5)
        assert not first.is_alive(), "the walk waited for its requests past the end"
        assert {10, 15} <= set(asked)
        asked.clear()
        second = start_walk()
        second.join(0.3)
        assert asked == [], "the next walk asked before the last walk's requests were answered"
        release.set()
        second.join(10)
        assert not second.is_alive()
        assert sorted(asked)[:2] == [0, 5]
    finally:
        release.set()
        threads.close()
