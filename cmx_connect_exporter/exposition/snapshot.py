"""What ``/metrics`` and ``/probe`` show: an immutable snapshot per target, swapped whole when its poll ends.

The collector builds metric families fresh from a target's snapshot, as the prometheus_client docs advise for
exporters, and adds the ``cmx`` label to every sample of every family it yields, so a new family needs no
code here to carry it. Each target's text is rendered once per change, in the poll's thread; ``/metrics``
joins the targets' texts family by family, so a scrape never waits on a poll nor renders anything.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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
    VISITORS_TODAY_STAY,
)
from cmx_connect_exporter.exposition.gzipped import Gzipped, gzip_whole
from cmx_connect_exporter.exposition.names import (
    BUILD_INFO,
    LAST_SUCCESS,
    POLL_DURATION,
    POLL_ERRORS,
    POLL_REQUESTS,
    TARGET_LABEL,
    UP,
)
from cmx_connect_exporter.outcome import QUERIES, REASONS, Counts, Dwell, PollError, Query, Reason, Visitors

ACTIVE: Query = "active"
VISITORS_TODAY_QUERY: Query = "visitors_today"
Errors = Mapping[Query, Mapping[Reason, int]]


def zero_errors(queries: tuple[Query, ...] = QUERIES[:1]) -> Errors:
    """Every reason at 0 for each query the exporter makes, so that rates work from the start."""
    return MappingProxyType({query: MappingProxyType(dict.fromkeys(REASONS, 0)) for query in queries})


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape reports of one target. Replaced, never mutated."""

    up: bool = False
    counts: Counts | None = None
    last_success: float | None = None
    poll_duration: float | None = None
    poll_requests: int | None = None
    errors: Errors = field(default_factory=zero_errors)
    last_error: PollError | None = None
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


def with_target(families: Iterable[Metric], name: str) -> Iterator[Metric]:
    """Every sample of every family, with ``cmx="<name>"`` first among its labels."""
    for family in families:
        family.samples = [s._replace(labels={TARGET_LABEL: name, **s.labels}) for s in family.samples]
        yield family


class TargetCollector(Collector):
    """One target's families, from its snapshot; the target label is added to all of them at the end."""

    def __init__(self, name: str, snapshot: Callable[[], Snapshot], stale_after: float,
                 clock: Callable[[], float] = time.time) -> None:
        self._name = name
        self._snapshot = snapshot
        self._stale_after = stale_after
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        return with_target(self._families(self._snapshot()), self._name)

    def _families(self, snap: Snapshot) -> Iterator[Metric]:
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
            stays = HistogramMetricFamily(VISITORS_TODAY_STAY.metric, VISITORS_TODAY_STAY.help)
            stays.add_metric([], *_histogram(visitors.stays))
            yield stays
        errors = CounterMetricFamily(POLL_ERRORS.name, POLL_ERRORS.help, labels=["query", "reason"])
        for query, by_reason in snap.errors.items():
            for reason, count in by_reason.items():
                errors.add_metric([query, reason], count)
        yield errors


class BuildInfoCollector(Collector):
    """Process-wide: no ``cmx`` label."""

    def __init__(self, version: str) -> None:
        self._version = version

    def collect(self) -> Iterator[Metric]:
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
        dwell.add_metric(at, *_histogram(sub.dwell))
        sent_received.add_metric([*at, "sent"], sub.bytes_sent)
        sent_received.add_metric([*at, "received"], sub.bytes_received)
    yield total
    yield from by_label.values()
    yield dwell
    yield sent_received
    yield GaugeMetricFamily(UNREADABLE_LOGIN_TIME.metric, UNREADABLE_LOGIN_TIME.help,
                            value=counts.unreadable_login_time)


def _histogram(dwell: Dwell) -> tuple[list[tuple[str, float]], float]:
    """A histogram's buckets, ``+Inf`` last, and its sum, as HistogramMetricFamily.add_metric takes them."""
    bounds = [(f"{bound:g}", n) for bound, n in zip(DWELL_BUCKETS, dwell.buckets, strict=True)]
    return [*bounds, ("+Inf", dwell.count)], dwell.sum


# One family of the text format: its "# HELP" and "# TYPE" lines, then its samples.
Block = tuple[bytes, bytes]


def split_families(text: bytes) -> dict[bytes, Block]:
    """Rendered text by family name. A newline inside a label value is escaped, so every family, and
    nothing else, starts a line with ``# HELP``."""
    blocks: dict[bytes, Block] = {}
    for chunk in (b"\n" + text).split(b"\n# HELP ")[1:]:
        help_line, _, rest = chunk.partition(b"\n")
        type_line, _, samples = rest.partition(b"\n")
        samples = samples if samples.endswith(b"\n") or not samples else samples + b"\n"
        blocks[help_line.split(b" ", 1)[0]] = (b"# HELP " + help_line + b"\n" + type_line + b"\n", samples)
    return blocks


def join_families(renderings: Iterable[Mapping[bytes, Block]]) -> bytes:
    """Several renderings as one text: each family once, with the samples of all, in first-seen order."""
    headers: dict[bytes, bytes] = {}
    samples: dict[bytes, list[bytes]] = {}
    for blocks in renderings:
        for name, (header, body) in blocks.items():
            headers.setdefault(name, header)
            samples.setdefault(name, []).append(body)
    return b"".join(headers[name] + b"".join(samples[name]) for name in headers)


class TargetState:
    """One target's snapshot and its rendered text, both replaced atomically."""

    def __init__(self, name: str, stale_after: float, clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] = lambda: None, queries: tuple[Query, ...] = (ACTIVE,)) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._clock = clock
        self._stale_after = stale_after
        self._on_change = on_change
        self._snapshot = Snapshot(errors=zero_errors(queries))
        self._registry = CollectorRegistry()
        self._registry.register(TargetCollector(name, lambda: self._snapshot, stale_after, clock))
        self._rendered = self._render()

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
            return replace(s, up=False, poll_requests=requests, errors=errors, last_error=error)
        self._swap(failed)

    def families(self) -> Mapping[bytes, Block]:
        """The rendered families, rendered again first if the counts have gone stale since."""
        rendered, expires = self._rendered
        if self._clock() > expires:
            with self._lock:
                self._rendered = self._render()
                rendered = self._rendered[0]
        return rendered

    @property
    def expires(self) -> float:
        """When the counts rendered go stale, and the text must be rendered again."""
        return self._rendered[1]

    def exposition(self, gzipped: bool = False) -> bytes:
        """This target's text alone, as ``/probe`` serves it."""
        text = join_families([self.families()])
        return gzip_whole(text) if gzipped else text

    def _swap(self, change: Callable[[Snapshot], Snapshot]) -> None:
        with self._lock:
            self._snapshot = change(self._snapshot)
            self._rendered = self._render()
        self._on_change()

    def _render(self) -> tuple[Mapping[bytes, Block], float]:
        return (split_families(generate_latest(self._registry)),
                self._snapshot.expires(self._clock(), self._stale_after))


class Store:
    """Every target's state, and the process-wide families; ``/metrics`` is their join, made when a target
    changes (in the poll's thread) or its counts go stale, never per scrape.

    ``live`` holds what changes between polls, such as the process metrics: it is rendered at each
    scrape and appended to the targets' text. The join is gzipped as it is made, for scrapers that take gzip."""

    def __init__(self, version: str, clock: Callable[[], float] = time.time,
                 live: CollectorRegistry | None = None) -> None:
        self._clock = clock
        self._live = live
        self._lock = threading.Lock()
        self._targets: dict[str, TargetState] = {}
        self.registry = CollectorRegistry()  # process-wide families, no target label
        self.registry.register(BuildInfoCollector(version))
        # the text and its gzip, replaced together: a scrape never sees one join's text with another's gzip
        self._joined: tuple[bytes, Gzipped] = (b"", Gzipped(b""))
        self._expires = math.inf

    def add(self, name: str, stale_after: float, queries: tuple[Query, ...] = (ACTIVE,)) -> TargetState:
        """A new target's state, or a fresh one in place of a changed target's; ``queries`` are those made
        of its CMX, whose errors are counted from 0."""
        state = TargetState(name, stale_after, self._clock, on_change=self._rejoin, queries=queries)
        with self._lock:
            self._targets[name] = state
        self._rejoin()
        return state

    def remove(self, name: str) -> None:
        """A removed target's series disappear with it."""
        with self._lock:
            self._targets.pop(name, None)
        self._rejoin()

    def get(self, name: str) -> TargetState | None:
        return self._targets.get(name)

    def targets(self) -> list[TargetState]:
        return list(self._targets.values())

    def _rejoin(self) -> None:
        with self._lock:
            states = list(self._targets.values())
            joined = join_families([state.families() for state in states])
            self._joined = joined, Gzipped(joined)
            self._expires = min((state.expires for state in states), default=math.inf)

    def exposition(self, targets: bool = True, gzipped: bool = False) -> bytes:
        """All targets' families joined, then the process-wide ones; only these without ``targets``."""
        process_wide = generate_latest(self.registry) + (b"" if self._live is None else generate_latest(self._live))
        if not targets:
            return gzip_whole(process_wide) if gzipped else process_wide
        if self._clock() > self._expires:
            self._rejoin()
        text, packed = self._joined
        return packed.with_tail(process_wide) if gzipped else text + process_wide
