"""The poll job and its schedule: one poll at a time, results published whole."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from exporter.client import CmxClient, PollError
from exporter.poll import count_active_sessions
from exporter.settings import Settings
from exporter.snapshot import State

log = logging.getLogger(__name__)


class Poller:
    """Runs one poll and publishes what it found; never raises, so the schedule never dies."""

    def __init__(self, client: CmxClient, settings: Settings, state: State) -> None:
        self._client = client
        self._settings = settings
        self._state = state
        self._not_before = 0.0

    def run(self) -> None:
        if time.monotonic() < self._not_before:
            log.info("poll skipped: CMX asked to wait (Retry-After)")
            return
        started = time.monotonic()
        requests_before = self._client.requests_made
        try:
            counts = count_active_sessions(
                self._client.fetch_page,
                page_size=self._settings.page_size,
                max_pages=self._settings.max_pages,
                max_label_values=self._settings.max_label_values,
                concurrency=self._settings.concurrency,
            )
        except PollError as error:
            self._failed(error, requests_before)
        except Exception as exc:  # a bug or an input we did not foresee: stay up, say so, leak nothing
            self._failed(PollError("bad_response", f"unexpected {type(exc).__name__} while reading CMX's "
                                                   "answer; please report it"), requests_before)
        else:
            was_up = self._state.snapshot.up
            self._state.record_success(counts, time.monotonic() - started,
                                       self._client.requests_made - requests_before)
            level = logging.DEBUG if was_up else logging.INFO
            log.log(level, "poll complete: %d active sessions in %.2f s", counts.total, time.monotonic() - started)

    def _failed(self, error: PollError, requests_before: int) -> None:
        self._state.record_failure(error, self._client.requests_made - requests_before)
        if error.retry_after:
            self._not_before = time.monotonic() + error.retry_after
        log.warning("poll failed: %s", error)


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
