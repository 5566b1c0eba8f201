"""The poll job and its schedule: one poll at a time, results published whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from cmx_connect_exporter.exposition.snapshot import VISITORS_TODAY_QUERY, State
from cmx_connect_exporter.outcome import Counts, PollError, Visitors
from cmx_connect_exporter.polling.handle import WorkerClosed
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest, VisitorsRequest
from cmx_connect_exporter.settings import Settings

log = logging.getLogger(__name__)

MAX_DEFERRAL = 3600.0  # the longest Retry-After that postpones polling


class Poller:
    """Runs one poll and publishes what it found; never raises, so the schedule never dies."""

    def __init__(self, poll: Callable[[PollRequest | VisitorsRequest], PollOutcome], settings: Settings,
                 state: State) -> None:
        self._poll = poll
        self._settings = settings
        self._state = state
        self._not_before = 0.0

    def run(self) -> None:
        if time.monotonic() < self._not_before:
            log.info("poll skipped: CMX asked to wait (Retry-After)")
            return
        settings = self._settings
        outcome = self._ask(PollRequest(
            page_size=settings.page_size,
            max_pages=settings.max_pages,
            max_label_values=settings.max_label_values,
            concurrency=settings.concurrency,
            poll_timeout=settings.poll_timeout_seconds,
            dimensions=settings.dimension_labels,
            split_by=settings.split_label,
        ))
        if outcome is None:
            return
        result = outcome.result
        if not isinstance(result, Counts):
            error = _failure(result)
            self._state.record_failure(error, outcome.requests)
            if error.retry_after:  # capped: a wild Retry-After must not stop polling for good
                self._not_before = time.monotonic() + min(error.retry_after, MAX_DEFERRAL)
            log.warning("poll failed: %s", error)
            return
        was_up = self._state.snapshot.up
        self._state.record_success(result, outcome.duration, outcome.requests)
        log.log(logging.DEBUG if was_up else logging.INFO,
                "poll complete: %d active sessions in %.2f s", result.total, outcome.duration)
        if settings.visitors_today:  # after the active counts are published, so it never holds them up
            self._count_visitors()

    def _count_visitors(self) -> None:
        settings = self._settings
        outcome = self._ask(VisitorsRequest(page_size=settings.page_size, max_pages=settings.max_pages,
                                            concurrency=settings.concurrency,
                                            poll_timeout=settings.poll_timeout_seconds))
        if outcome is None:
            return
        if isinstance(outcome.result, Visitors):
            self._state.record_visitors(outcome.result)
            log.debug("visitors of the day: %d in %.2f s", outcome.result.total, outcome.duration)
            return
        error = _failure(outcome.result)
        self._state.record_failure(error, outcome.requests, query=VISITORS_TODAY_QUERY)
        log.warning("visitors-of-the-day query failed: %s", error)

    def _ask(self, request: PollRequest | VisitorsRequest) -> PollOutcome | None:
        """The worker's answer; None when the exporter is shutting down."""
        try:
            return self._poll(request)
        except WorkerClosed:
            return None
        except Exception as exc:  # a bug of the exporter's own: counted, never a traceback that stops the job
            return PollOutcome(PollError("internal", f"unexpected {type(exc).__name__} in the poll job; "
                                                     "please report it"), None, 0.0)


def _failure(result: Counts | Visitors | PollError) -> PollError:
    """The error of an answer that is not what was asked for."""
    if isinstance(result, PollError):
        return result
    return PollError("internal", f"the poll worker answered with {type(result).__name__}; please report it")


def start_scheduler(poller: Poller, interval: float) -> BackgroundScheduler:
    """Poll now, then every interval; an overrunning poll makes the next one wait, not pile up."""
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        poller.run,
        "interval",
        seconds=interval,
        id="poll",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(1, int(interval)),
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return scheduler
