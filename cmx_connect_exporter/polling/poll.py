"""One poll: every page of active sessions, walked and folded into counts. Runs in the poll worker."""

from __future__ import annotations

import time

from cmx_connect_exporter.cmx.client import CmxClient
from cmx_connect_exporter.cmx.paging import FetchBody, PageThreads, walk
from cmx_connect_exporter.counting.tally import Tally
from cmx_connect_exporter.outcome import Counts, PollError
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest


def count_active_sessions(fetch_body: FetchBody, *, page_size: int, max_pages: int, max_label_values: int,
                          concurrency: int = 1, expected_sessions: int = 0,
                          poll_timeout: float | None = None, threads: PageThreads | None = None) -> Counts:
    """Walk the pages and count. Raises PollError; a failed poll yields no counts at all.

    ``expected_sessions`` (the last poll's total) sizes the de-duplication table up front,
    and tells concurrent fetching where the list probably ends.
    """
    tally = Tally(expected_sessions)
    walk(fetch_body, tally.add_page, page_size=page_size, max_pages=max_pages, concurrency=concurrency,
         expected_sessions=expected_sessions, poll_timeout=poll_timeout, threads=threads)
    return tally.counts(max_label_values)


def run_poll(client: CmxClient, request: PollRequest, threads: PageThreads | None = None) -> PollOutcome:
    """One poll with ``client``; failures are returned, never raised."""
    before = client.requests_made
    started = time.monotonic()
    client.deadline = started + request.poll_timeout
    try:
        result: Counts | PollError = count_active_sessions(
            client.fetch_body, page_size=request.page_size, max_pages=request.max_pages,
            max_label_values=request.max_label_values, concurrency=request.concurrency,
            expected_sessions=request.expected_sessions, poll_timeout=request.poll_timeout, threads=threads)
    except PollError as error:
        result = error
    except Exception as exc:  # a bug, or an input we did not foresee: say so, leak nothing
        result = PollError("internal", f"unexpected {type(exc).__name__} in the exporter during the poll; "
                                       "please report it")
    return PollOutcome(result, client.requests_made - before, time.monotonic() - started)
