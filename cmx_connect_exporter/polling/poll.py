"""One poll: every page of active sessions, walked and folded into counts; and the visitors of the day.

Runs in the poll worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.cmx.paging import FetchBody, PageThreads, walk
from cmx_connect_exporter.cmx.wire import Body, page_reader
from cmx_connect_exporter.counting.dedupe import SessionTable
from cmx_connect_exporter.counting.dimensions import LABELS, VISIT
from cmx_connect_exporter.counting.tally import Tally
from cmx_connect_exporter.counting.times import DAY, local_day, offset_seconds
from cmx_connect_exporter.outcome import Counts, PollError, Visitors
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest, VisitorsRequest


def count_active_sessions(fetch_body: FetchBody, *, page_size: int, max_pages: int, max_label_values: int,
                          concurrency: int = 1, expected_sessions: int = 0, poll_timeout: float | None = None,
                          threads: PageThreads | None = None, dimensions: tuple[str, ...] = LABELS,
                          split_by: str | None = None, sessions: SessionTable | None = None,
                          now: float | None = None) -> Counts:
    """Walk the pages and count. Raises PollError; a failed poll yields no counts at all.

    ``expected_sessions`` (the last poll's total) sizes a table made for this poll alone,
    and tells concurrent fetching where the list probably ends. ``sessions``, the target's
    table, holds the sessions of its last completed poll, to count logins against, and takes
    this poll's. Dwell is measured to ``now`` (epoch seconds; by default the poll's start).
    """
    tally = Tally(expected_sessions, labels=dimensions, split_by=split_by, sessions=sessions, now=now)
    try:
        walk(fetch_body, page_reader(tally.keys), tally.add_page, page_size=page_size, max_pages=max_pages,
             concurrency=concurrency, expected_sessions=expected_sessions, poll_timeout=poll_timeout,
             threads=threads)
        counts = tally.counts(max_label_values)
    except BaseException:
        if sessions is not None:
            sessions.end(completed=False)
        raise
    if sessions is not None:
        sessions.end(completed=True)
    return counts


def last_local_midnight(now: float, tz_offset: int | None) -> int:
    """Epoch seconds of the start of today in CMX's time zone. Raises PollError without a timeZoneOffset."""
    offset = offset_seconds(tz_offset)
    if offset is None:
        raise PollError("bad_response", "CMX sent no usable timeZoneOffset, so its local midnight is unknown")
    return local_day(now, offset) * DAY - offset


def count_visitors_today(fetch_since: Callable[..., Body], *, tz_offset: int | None, page_size: int,
                         max_pages: int, concurrency: int = 1, poll_timeout: float | None = None,
                         threads: PageThreads | None = None, now: float | None = None) -> Visitors:
    """Every session with a login since CMX's local midnight, paged and de-duplicated like the active ones,
    and how long those who have left stayed.

    ``start`` is sent in epoch seconds, the likely unit of the API page's "UTC epoch".
    Raises PollError.
    """
    moment = time.time() if now is None else now
    fetch_body = partial(fetch_since, since=last_local_midnight(moment, tz_offset))
    tally = Tally(labels=(VISIT.label,), now=moment, stays=True)
    walk(fetch_body, page_reader(tally.keys), tally.add_page, page_size=page_size, max_pages=max_pages,
         concurrency=concurrency, poll_timeout=poll_timeout, threads=threads)
    counts = tally.counts(len(VISIT.values))
    return Visitors(total=counts.total, by_visit=counts.by_label[VISIT.label], stays=counts.dwell)


def run_poll(client: CmxClient, request: PollRequest, threads: PageThreads | None = None,
             sessions: SessionTable | None = None) -> PollOutcome:
    """One poll with ``client``; failures are returned, never raised."""
    return _run(client, request.poll_timeout, partial(
        count_active_sessions, client.fetch_body, page_size=request.page_size, max_pages=request.max_pages,
        max_label_values=request.max_label_values, concurrency=request.concurrency,
        expected_sessions=request.expected_sessions, poll_timeout=request.poll_timeout, threads=threads,
        dimensions=request.dimensions, split_by=request.split_by, sessions=sessions))


def run_visitors(client: CmxClient, request: VisitorsRequest, threads: PageThreads | None = None) -> PollOutcome:
    """The visitors of the day with ``client``, in the time zone of the target's last active poll; never raises."""
    return _run(client, request.poll_timeout, partial(
        count_visitors_today, client.fetch_body, tz_offset=request.tz_offset, page_size=request.page_size,
        max_pages=request.max_pages, concurrency=request.concurrency, poll_timeout=request.poll_timeout,
        threads=threads))


def _run(client: CmxClient, poll_timeout: float, count: Callable[[], Counts | Visitors]) -> PollOutcome:
    before = client.requests_made
    started = time.monotonic()
    client.deadline = started + poll_timeout
    try:
        result: Counts | Visitors | PollError = count()
    except PollError as error:
        result = error
    except Exception as exc:  # a bug, or an input we did not foresee: say so, leak nothing
        result = PollError("internal", f"unexpected {type(exc).__name__} in the exporter during the poll; "
                                       "please report it")
    return PollOutcome(result, client.requests_made - before, time.monotonic() - started)
