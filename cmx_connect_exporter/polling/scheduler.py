"""The poll jobs and their schedules: one job per target, each on its own interval, results published whole.

Targets never wait on each other here: each job runs in its own thread (APScheduler's pool), and blocks
only on its own poll, which the worker pool bounds by the target's own deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from cmx_connect_exporter.config.targets import Target
from cmx_connect_exporter.exposition.snapshot import VISITORS_TODAY_QUERY, Store, TargetState
from cmx_connect_exporter.outcome import QUERIES, Counts, PollError, Visitors
from cmx_connect_exporter.polling.handle import WorkerClosed
from cmx_connect_exporter.polling.messages import ClientOptions, PollOutcome, PollRequest, VisitorsRequest

log = logging.getLogger(__name__)

MAX_DEFERRAL = 3600.0  # the longest Retry-After that postpones polling
# Threads that may wait on a poll at once, one per target at most (a job never overlaps itself); they
# are started as needed and mostly wait, so the cap only has to be above the number of targets.
MAX_POLL_THREADS = 512
# In probed mode a target stops being polled after this many of its intervals without a probe.
PROBE_LAPSE_INTERVALS = 5
# Targets added together start their polls spread over this long (or their interval, if shorter), so that
# their schedules do not stay in step and a few workers take them one after another.
FIRST_POLL_SPREAD = 10.0

PollFunction = Callable[[PollRequest | VisitorsRequest], PollOutcome]
# Numbers every poll in this process, so that a worker can tell whether the session table it holds for a
# target is that of the target's last completed poll.
_poll_numbers = itertools.count(1)


def client_options(target: Target) -> ClientOptions:
    o = target.options
    return ClientOptions(url=target.url, username=o.username, password=target.password, timeout=o.timeout,
                         verify=o.verify, max_retry_wait=min(30.0, o.poll_interval / 2), ca_digest=target.ca_digest,
                         configured_in=target.configured_in)


def poll_request(target: Target, expected_sessions: int, number: int = 0, after: int | None = None) -> PollRequest:
    """What a worker needs for poll ``number`` of ``target``; ``after`` is the number of its last completed one."""
    o = target.options
    return PollRequest(target=target.name, client=client_options(target), page_size=o.page_size,
                       max_pages=o.max_pages, max_label_values=o.max_label_values, concurrency=o.concurrency,
                       poll_timeout=o.poll_timeout_seconds, dimensions=o.dimension_labels, split_by=o.split_label,
                       expected_sessions=expected_sessions, poll=number, after=after)


class Probes:
    """When Prometheus last probed each target here; in probed mode, a target is polled only while probed."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}

    def probed(self, name: str, interval: float) -> bool:
        """Note a probe; True if the target was not being polled until now."""
        was = self.polling(name, interval)
        self._last[name] = self._clock()
        return not was

    def polling(self, name: str, interval: float) -> bool:
        last = self._last.get(name)
        return last is not None and self._clock() - last <= PROBE_LAPSE_INTERVALS * interval


class Poller:
    """Runs one target's polls and publishes what they found; never raises, so the schedule never dies.

    It keeps what the next poll needs whichever worker takes it: the last total, the number of the last
    completed poll (whose logins the next one is compared with) and CMX's time zone (the visitors of the day
    start at its local midnight).
    """

    def __init__(self, poll: PollFunction, target: Target, state: TargetState,
                 wanted: Callable[[], bool] = lambda: True) -> None:
        self._poll = poll
        self.target = target  # replaced by a reload that changes only its credentials
        self._state = state
        self._wanted = wanted
        self._not_before = 0.0
        self._last_total = 0
        self._last_poll: int | None = None
        self._tz_offset: int | None = None

    def run(self) -> None:
        if not self._wanted():
            return
        target = self.target
        if time.monotonic() < self._not_before:
            log.info("poll of %s skipped: CMX asked to wait (Retry-After)", target.name)
            return
        number = next(_poll_numbers)
        outcome = self._ask(poll_request(target, self._last_total, number, self._last_poll))
        if outcome is None:
            return
        result = outcome.result
        if not isinstance(result, Counts):
            error = _failure(result)
            self._state.record_failure(error, outcome.requests)
            if error.retry_after:  # capped: a wild Retry-After must not stop polling for good
                self._not_before = time.monotonic() + min(error.retry_after, MAX_DEFERRAL)
            log.warning("poll of %s failed: %s", target.name, error)
            return
        was_up = self._state.snapshot.up
        self._last_total, self._last_poll = result.total, number
        if result.tz_offset is not None:  # a poll of an empty venue may see none: the last one still holds
            self._tz_offset = result.tz_offset
        self._state.record_success(result, outcome.duration, outcome.requests)
        log.log(logging.DEBUG if was_up else logging.INFO,
                "poll of %s complete: %d active sessions in %.2f s", target.name, result.total, outcome.duration)
        if target.options.visitors_today:  # after the active counts are published, so it never holds them up
            self._count_visitors(target)

    def _count_visitors(self, target: Target) -> None:
        o = target.options
        outcome = self._ask(VisitorsRequest(target=target.name, client=client_options(target),
                                            page_size=o.page_size, max_pages=o.max_pages, concurrency=o.concurrency,
                                            poll_timeout=o.poll_timeout_seconds, tz_offset=self._tz_offset))
        if outcome is None:
            return
        if isinstance(outcome.result, Visitors):
            self._state.record_visitors(outcome.result)
            log.debug("visitors of the day at %s: %d in %.2f s", target.name, outcome.result.total, outcome.duration)
            return
        error = _failure(outcome.result)
        self._state.record_failure(error, outcome.requests, query=VISITORS_TODAY_QUERY)
        log.warning("visitors-of-the-day query of %s failed: %s", target.name, error)

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


class Schedule:
    """The targets' jobs; ``apply`` brings them in line with a (new) list of targets."""

    def __init__(self, poll: PollFunction, store: Store, probes: Probes | None = None) -> None:
        self._poll = poll
        self._store = store
        self._probes = probes
        self._targets: dict[str, Target] = {}
        self._pollers: dict[str, Poller] = {}
        self._lock = threading.Lock()
        self._scheduler = BackgroundScheduler(timezone=UTC,
                                              executors={"default": ThreadPoolExecutor(MAX_POLL_THREADS)})
        self._scheduler.start()

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def targets(self) -> list[Target]:
        return list(self._targets.values())

    def apply(self, targets: Iterable[Target]) -> bool:
        """New targets start, removed ones stop and lose their series, changed ones start afresh;
        an unchanged target keeps its job, schedule and counts, and polls with its new credentials (a
        rotated password, a renewed CA bundle) from its next poll. True if anything changed."""
        with self._lock:
            wanted = {target.name: target for target in targets}
            changed = [name for name, old in self._targets.items() if wanted.get(name) != old]
            for name in changed:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(name)
                del self._targets[name], self._pollers[name]
                if name not in wanted:
                    self._store.remove(name)
            rotated = False
            for name, poller in self._pollers.items():
                if wanted[name].credentials != poller.target.credentials:
                    self._targets[name] = poller.target = wanted[name]
                    rotated = True
            new = [target for name, target in wanted.items() if name not in self._targets]
            for position, target in enumerate(new):
                spread = min(FIRST_POLL_SPREAD, target.options.poll_interval)
                self._add(target, delay=spread * position / len(new))
            return bool(changed or new or rotated)

    def _add(self, target: Target, delay: float = 0.0) -> None:
        interval = target.options.poll_interval
        queries = QUERIES if target.options.visitors_today else QUERIES[:1]
        state = self._store.add(target.name, target.options.stale_after_seconds, queries)
        probes = self._probes
        wanted = (lambda: True) if probes is None else (lambda: probes.polling(target.name, interval))
        self._targets[target.name] = target
        poller = self._pollers[target.name] = Poller(self._poll, target, state, wanted)
        self._scheduler.add_job(
            poller.run,
            "interval",
            seconds=interval,
            id=target.name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
            next_run_time=datetime.now(UTC) + timedelta(seconds=delay),
        )

    def probed(self, name: str) -> bool:
        """A probe of ``name``; False if there is no such target. In probed mode the first probe polls at once."""
        target = self._targets.get(name)
        if target is None:
            return False
        if self._probes is not None and self._probes.probed(name, target.options.poll_interval):
            with contextlib.suppress(JobLookupError):  # removed meanwhile by a reload
                self._scheduler.modify_job(name, next_run_time=datetime.now(UTC))
        return True

    def polled_here(self, name: str) -> bool | None:
        """In probed mode, whether this replica polls ``name`` now; None in mode all."""
        target = self._targets.get(name)
        if self._probes is None or target is None:
            return None
        return self._probes.polling(name, target.options.poll_interval)

    def shutdown(self) -> None:
        self._scheduler.shutdown(wait=False)
