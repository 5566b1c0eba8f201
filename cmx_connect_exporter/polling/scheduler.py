"""The poll job and its schedule: one poll at a time, results published whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from cmx_connect_exporter.exposition.snapshot import State
from cmx_connect_exporter.outcome import PollError
from cmx_connect_exporter.polling.handle import WorkerClosed
from cmx_connect_exporter.polling.messages import PollOutcome, PollRequest
from cmx_connect_exporter.settings import Settings

log = logging.getLogger(__name__)

MAX_DEFERRAL = 3600.0  # the longest Retry-After that postpones polling


class Poller:
    """Runs one poll and publishes what it found; never raises, so the schedule never dies."""

    def __init__(self, poll: Callable[[PollRequest], PollOutcome], settings: Settings, state: State) -> None:
        self._poll = poll
        self._settings = settings
        self._state = state
        self._not_before = 0.0

    def run(self) -> None:
        if time.monotonic() < self._not_before:
            log.info("poll skipped: CMX asked to wait (Retry-After)")
            return
        try:
            outcome = self._poll(PollRequest(
                page_size=self._settings.page_size,
                max_pages=self._settings.max_pages,
                max_label_values=self._settings.max_label_values,
                concurrency=self._settings.concurrency,
                poll_timeout=self._settings.poll_timeout_seconds,
                dimensions=self._settings.dimension_labels,
                split_by=self._settings.split_label,
            ))
        except WorkerClosed:
            return
        except Exception as exc:  # a bug of the exporter's own: counted, never a traceback that stops the job
            outcome = PollOutcome(PollError("internal", f"unexpected {type(exc).__name__} in the poll job; "
                                                        "please report it"), None, 0.0)
        result = outcome.result
        if isinstance(result, PollError):
            self._state.record_failure(result, outcome.requests)
            if result.retry_after:  # capped: a wild Retry-After must not stop polling for good
                self._not_before = time.monotonic() + min(result.retry_after, MAX_DEFERRAL)
            log.warning("poll failed: %s", result)
            return
        was_up = self._state.snapshot.up
        self._state.record_success(result, outcome.duration, outcome.requests)
        log.log(logging.DEBUG if was_up else logging.INFO,
                "poll complete: %d active sessions in %.2f s", result.total, outcome.duration)


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
