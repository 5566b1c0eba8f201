"""What ``/metrics`` shows: an immutable snapshot, swapped whole when a poll ends.

The collector builds metric families fresh from the snapshot, as the
prometheus_client docs advise for exporters, and the text is rendered once per
change rather than once per scrape, so a scrape never waits on a poll.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    ACTIVE_SESSIONS_HELP,
    BYTES,
    DIMENSIONS,
    DIRECTION,
    DWELL,
    DWELL_BUCKETS,
    LOGINS,
    UNREADABLE_LOGIN_TIME,
    VISIT,
    VISITORS_TODAY,
    VISITORS_TODAY_BY_VISIT,
)
from cmx_connect_exporter.exposition.names import (
    BUILD_INFO,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_REQUESTS,
    UP,
)
from cmx_connect_exporter.outcome import QUERIES, REASONS, Counts, PollError, Query, Reason, Visitors

ACTIVE: Query = "active"
VISITORS_TODAY_QUERY: Query = "visitors_today"
Errors = Mapping[Query, Mapping[Reason, int]]


def zero_errors(queries: tuple[Query, ...] = QUERIES[:1]) -> Errors:
    """Every reason at 0 for each query the exporter makes, so that rates work from the start."""
    return MappingProxyType({query: MappingProxyType(dict.fromkeys(REASONS, 0)) for query in queries})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape reports. Replaced, never mutated."""

    up: bool = False
    counts: Counts | None = None
    last_success: float | None = None
    poll_duration: float | None = None
    poll_requests: int | None = None
    errors: Errors = field(default_factory=zero_errors)
    last_error: str | None = None
    logins: int = 0  # logins counted by every completed poll since the start
    visitors: Visitors | None = None
    visitors_at: float | None = None  # when the visitors of the day were last counted

    def fresh_counts(self, now: float, stale_after: float) -> Counts | None:
        """The counts to publish: those of the last success, until they are ``stale_after`` seconds old."""
        if self.last_success is None or now - self.last_success > stale_after:
            return None
        return self.counts

    def fresh_visitors(self, now: float, stale_after: float) -> Visitors | None:
        """The visitors of the day, under the same rule as the counts."""
        if self.visitors_at is None or now - self.visitors_at > stale_after:
            return None
        return self.visitors

    def expires(self, now: float, stale_after: float) -> float:
        """When what is published now goes stale, and the text must be rendered again."""
        fresh = [at + stale_after for at in (self.last_success, self.visitors_at)
                 if at is not None and now - at <= stale_after]
        return min(fresh, default=math.inf)


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot], stale_after: float, version: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._snapshot = snapshot
        self._stale_after = stale_after
        self._version = version
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield GaugeMetricFamily(UP.name, UP.help, value=int(snap.up))
        if (counts := snap.fresh_counts(self._clock(), self._stale_after)) is not None:
            yield from _session_families(counts)
        yield CounterMetricFamily(LOGINS.metric, LOGINS.help, value=snap.logins)
        if snap.last_success is not None:
            yield GaugeMetricFamily(LAST_SUCCESS.name, LAST_SUCCESS.help, value=snap.last_success)
        if snap.poll_duration is not None:
            yield GaugeMetricFamily(POLL_DURATION.name, POLL_DURATION.help, value=snap.poll_duration)
        if snap.poll_requests is not None:
            yield GaugeMetricFamily(POLL_REQUESTS.name, POLL_REQUESTS.help, value=snap.poll_requests)
        if (visitors := snap.fresh_visitors(self._clock(), self._stale_after)) is not None:
            yield GaugeMetricFamily(VISITORS_TODAY.metric, VISITORS_TODAY.help, value=visitors.total)
            by_visit = GaugeMetricFamily(VISITORS_TODAY_BY_VISIT.metric, VISITORS_TODAY_BY_VISIT.help,
                                         labels=[VISIT.label])
            for value, count in sorted(visitors.by_visit.items()):
                by_visit.add_metric([value], count)
            yield by_visit
        errors = CounterMetricFamily(POLL_ERRORS.name, POLL_ERRORS.help, labels=["query", "reason"])
        for query, by_reason in snap.errors.items():
            for reason, count in by_reason.items():
                errors.add_metric([query, reason], count)
        yield errors
        info = GaugeMetricFamily(BUILD_INFO.name, BUILD_INFO.help, labels=["version"])
        info.add_metric([self._version], 1)
        yield info


def _session_families(counts: Counts) -> Iterator[Metric]:
    """The active-session families; with a split, each sample of each carries the split label first."""
    split = [counts.split_by] if counts.split_by else []
    groups = [([value], sub) for value, sub in sorted(counts.by_split.items())] if split else [([], counts)]
    total = GaugeMetricFamily(ACTIVE_SESSIONS, ACTIVE_SESSIONS_HELP, labels=split)
    dwell = HistogramMetricFamily(DWELL.metric, DWELL.help, labels=split)
    sent_received = GaugeMetricFamily(BYTES.metric, BYTES.help, labels=[*split, DIRECTION])
    by_label = {d.label: GaugeMetricFamily(d.metric, d.help, labels=[*split, d.label])
                for d in DIMENSIONS if any(d.label in sub.by_label for _, sub in groups)}
    for at, sub in groups:
        total.add_metric(at, sub.total)
        for label, family in by_label.items():
            for value, count in sorted(sub.by_label.get(label, {}).items()):
                family.add_metric([*at, value], count)
        bounds = [(f"{bound:g}", n) for bound, n in zip(DWELL_BUCKETS, sub.dwell.buckets, strict=True)]
        dwell.add_metric(at, [*bounds, ("+Inf", sub.dwell.count)], sub.dwell.sum)
        sent_received.add_metric([*at, "sent"], sub.bytes_sent)
        sent_received.add_metric([*at, "received"], sub.bytes_received)
    yield total
    yield from by_label.values()
    yield dwell
    yield sent_received
    yield GaugeMetricFamily(UNREADABLE_LOGIN_TIME.metric, UNREADABLE_LOGIN_TIME.help,
                            value=counts.unreadable_login_time)


class State:
    """The current snapshot and its rendered text, both replaced atomically.

    ``live`` holds what changes between polls, such as the process metrics: it is rendered at each
    scrape and appended to the snapshot's text, rendered once per poll. ``queries`` are those the
    exporter makes of CMX, whose errors are counted from 0."""

    def __init__(self, stale_after: float, version: str, clock: Callable[[], float] = time.time,
                 live: CollectorRegistry | None = None, queries: tuple[Query, ...] = (ACTIVE,)) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._stale_after = stale_after
        self._snapshot = Snapshot(errors=zero_errors(queries))
        self.registry = CollectorRegistry()
        self.registry.register(SnapshotCollector(lambda: self._snapshot, stale_after, version, clock))
        self._rendered = self._render()
        self._live = live

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def record_success(self, counts: Counts, duration: float, requests: int) -> None:
        self._swap(lambda s: replace(s, up=True, counts=counts, last_success=self._clock(),
                                     poll_duration=duration, poll_requests=requests, last_error=None,
                                     logins=s.logins + counts.logins))

    def record_visitors(self, visitors: Visitors) -> None:
        self._swap(lambda s: replace(s, visitors=visitors, visitors_at=self._clock()))

    def record_failure(self, error: PollError, requests: int | None, query: Query = ACTIVE) -> None:
        """``requests`` None (a poll whose worker died) takes the requests gauge away: its value is unknown.

        A failed visitors-of-the-day query is only counted: up, the requests and the last error
        are the active poll's.
        """
        def failed(s: Snapshot) -> Snapshot:
            by_reason = dict(s.errors.get(query, dict.fromkeys(REASONS, 0)))
            by_reason[error.reason] += 1
            errors = MappingProxyType({**s.errors, query: MappingProxyType(by_reason)})
            if query != ACTIVE:
                return replace(s, errors=errors)
            return replace(s, up=False, poll_requests=requests, errors=errors, last_error=f"{error.reason}: {error}")
        self._swap(failed)

    def exposition(self) -> bytes:
        """The text for a scrape: rendered already, unless the counts have gone stale since; then ``live``."""
        text, expires = self._rendered
        if self._clock() > expires:
            with self._lock:
                self._rendered = self._render()
                text = self._rendered[0]
        return text if self._live is None else text + generate_latest(self._live)

    def _swap(self, change: Callable[[Snapshot], Snapshot]) -> None:
        with self._lock:
            self._snapshot = change(self._snapshot)
            self._rendered = self._render()

    def _render(self) -> tuple[bytes, float]:
        return generate_latest(self.registry), self._snapshot.expires(self._clock(), self._stale_after)
