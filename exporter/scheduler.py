"""The poll job and its schedule: one poll at a time, results published whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from exporter.outcome import PollError
from exporter.settings import Settings
from exporter.snapshot import State
from exporter.worker import Outcome, PollParams, WorkerClosed

log = logging.getLogger(__name__)

MAX_DEFERRAL = 3600.0  # the longest Retry-After that postpones polling


class Poller:
    """Runs one poll and publishes what it found; never raises, so the schedule never dies."""

    def __init__(self, poll: Callable[[PollParams], Outcome], settings: Settings, state: State) -> None:
        self._poll = poll
        self._settings = settings
        self._state = state
        self._not_before = 0.0

    def run(self) -> None:
        if time.monotonic() < self._not_before:
            log.info("poll skipped: CMX asked to wait (Retry-After)")
            return
        last = self._state.snapshot.counts
        started = time.monotonic()
        try:
            outcome, requests = self._poll(PollParams(
                page_size=self._settings.page_size,
                max_pages=self._settings.max_pages,
                max_label_values=self._settings.max_label_values,
                concurrency=self._settings.concurrency,
                poll_timeout=self._settings.poll_timeout_seconds,
                expected_sessions=last.total if last else 0,
            ))
        except WorkerClosed:
            return
        duration = time.monotonic() - started
        if isinstance(outcome, PollError):
            self._state.record_failure(outcome, requests)
            if outcome.retry_after:  # capped: a wild Retry-After must not stop polling for good
                self._not_before = time.monotonic() + min(outcome.retry_after, MAX_DEFERRAL)
            log.warning("poll failed: %s", outcome)
            return
        was_up = self._state.snapshot.up
        self._state.record_success(outcome, duration, requests)
        log.log(logging.DEBUG if was_up else logging.INFO,
                "poll complete: %d active sessions in %.2f s", outcome.total, duration)


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
