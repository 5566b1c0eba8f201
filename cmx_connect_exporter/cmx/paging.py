"""The walk over pages: in index order, as far as the pages say, with up to N requests in flight.

The list moves while we page (new logins push records down), so pages may overlap; the fold
that counts them keeps each session once, and tells the walk how many were new. No single field
is trusted to stop.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from cmx_connect_exporter.cmx.wire import Body, Page
from cmx_connect_exporter.outcome import POLL_TIMEOUT_SETTING, PollError

FetchBody = Callable[[int, int], Body]
FetchPage = Callable[[int, int], Page]
ReadPage = Callable[[Body, int], Page]  # decodes the body of the page at an index: a wire.PageReader
# counts a page's records, given its timeZoneOffset; returns how many sessions were new
Fold = Callable[[list[Any], int | None], int]


class PageThreads:
    """The threads that fetch pages, kept by the poll worker from one poll to the next.

    A walk that has read its last page does not wait for its requests past the end: its counts
    are complete, and the poll's time should not include pages it will never read. The next walk
    waits for them before it asks anything, so the requests of two polls never overlap at CMX.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="page")
        self._lock = threading.Lock()
        self._left: set[Future[Body]] = set()

    def submit(self, fetch_body: FetchBody, index: int, count: int) -> Future[Body]:
        return self._pool.submit(fetch_body, index, count)

    def leave(self, futures: Iterable[Future[Body]]) -> None:
        """Let requests already sent finish on their own; those not yet sent are dropped."""
        for future in futures:
            if not future.cancel():
                with self._lock:
                    self._left.add(future)
                future.add_done_callback(self._forget)  # the body it holds is freed as soon as it arrives

    def _forget(self, future: Future[Body]) -> None:
        with self._lock:
            self._left.discard(future)

    def settle(self) -> None:
        """Wait for the requests the last walk left."""
        with self._lock:
            left = list(self._left)
        wait(left)

    def close(self, wait: bool = True) -> None:
        """Stop the threads; without ``wait``, requests still out finish on their own, and are never read."""
        self._pool.shutdown(wait=wait, cancel_futures=True)


class _Prefetcher:
    """Keeps the next ``depth - 1`` full pages in flight while the walk counts one.

    Pages are still read, checked and counted in index order by the caller; only
    the waiting overlaps. The next request goes out as soon as a page is decoded
    and found full, before it is counted. A short page ends the walk, so at most
    ``depth - 1`` requests ever go past the end. While the walk has not passed the
    page where the last poll's walk ended, it asks no further: a venue whose size
    has not changed across a page boundary is polled with no request past the end.
    """

    def __init__(self, fetch_body: FetchBody, read: ReadPage, depth: int, threads: PageThreads,
                 expected_sessions: int) -> None:
        self._fetch = fetch_body
        self._read = read
        self._depth = depth
        self._threads = threads
        self._expected = expected_sessions
        self._in_flight: dict[int, Future[Body]] = {}

    def __call__(self, index: int, count: int) -> Page:
        self._ask_ahead(index, count)
        page = self._read(self._in_flight.pop(index).result(), index)
        if len(page.records) == count:  # the walk goes on at index + count, whatever nextIndex says
            self._ask_ahead(index + count, count)
        return page

    def _ask_ahead(self, index: int, count: int) -> None:
        """Have the pages from ``index`` on in flight, as deep as allowed; cancel any others."""
        depth = self._depth
        if self._expected:  # 0 tells nothing: no poll yet, or an empty venue
            expected_end = self._expected // count * count
            if index <= expected_end:
                depth = min(depth, (expected_end - index) // count + 1)
        wanted = {index + k * count for k in range(depth)}
        # the walk moved off the expected indexes: those already sent finish before the next poll asks
        self._threads.leave([self._in_flight.pop(stale) for stale in self._in_flight.keys() - wanted])
        for ahead in sorted(wanted - self._in_flight.keys()):
            self._in_flight[ahead] = self._threads.submit(self._fetch, ahead, count)

    def leave(self) -> None:
        self._threads.leave(self._in_flight.values())
        self._in_flight.clear()


@contextmanager
def _page_source(fetch_body: FetchBody, read: ReadPage, concurrency: int, expected_sessions: int,
                 threads: PageThreads | None) -> Iterator[FetchPage]:
    if concurrency <= 1:
        yield lambda index, count: read(fetch_body(index, count), index)
        return
    own = threads is None
    if threads is None:
        threads = PageThreads(concurrency)
    threads.settle()
    prefetcher = _Prefetcher(fetch_body, read, concurrency, threads, expected_sessions)
    try:
        yield prefetcher
    finally:
        prefetcher.leave()
        if own:  # threads of this walk alone: their requests finish before it returns
            threads.close()


def walk(fetch_body: FetchBody, read: ReadPage, fold: Fold, *, page_size: int, max_pages: int, concurrency: int = 1,
         expected_sessions: int = 0, poll_timeout: float | None = None, threads: PageThreads | None = None) -> None:
    """Hand every page, as ``read`` decodes it, to ``fold``, in index order. Raises PollError.

    ``expected_sessions`` (the last poll's total) tells concurrent fetching where the list
    probably ends. Past ``poll_timeout`` seconds no further page is asked for: each page
    answers in time, but pages without end would not. Without ``threads`` kept from poll to
    poll, a concurrent walk makes its own and waits for all its requests before it returns.
    """
    deadline = time.monotonic() + poll_timeout if poll_timeout is not None else None
    with _page_source(fetch_body, read, concurrency, expected_sessions, threads) as get_page:
        index = 0
        for _ in range(max_pages):  # the page is never named here, so it is freed before the next is decoded
            if deadline is not None and time.monotonic() > deadline:
                raise PollError("timeout", f"the poll did not end within {poll_timeout:g} s ({POLL_TIMEOUT_SETTING}) "
                                           f"with {index} records read")
            received, more = _fold_page(fold, get_page(index, page_size), index, page_size)
            index += received
            if not more:
                return
    raise PollError("pagination", f"more than {max_pages} pages; raise CMX_MAX_PAGES (max_pages in a targets file) "
                                  "if CMX really holds that many sessions")


def _fold_page(fold: Fold, page: Page, index: int, page_size: int) -> tuple[int, bool]:
    """Check and count one page; returns its record count and whether more may follow."""
    received = len(page.records)
    if received > page_size:
        raise PollError("bad_response", f"page at index {index} holds {received} records, "
                                        f"more than the {page_size} asked for")
    new = fold(page.records, page.tz_offset)  # an empty page too: its timeZoneOffset counts
    if received and not new:
        raise PollError("pagination", f"page at index {index} holds only sessions already counted; "
                                      "the server seems to ignore 'index'")
    following = page.next_index
    if following and following < index:  # equal is not backwards: an empty last page may name itself
        raise PollError("pagination", f"nextIndex went backwards ({following} after index {index})")
    return received, received == page_size or (received > 0 and following is not None and following > index)
