"""Records folded through the catalogue into counts: each session once, each label value normalised."""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from itertools import compress, repeat
from operator import add, floordiv, is_, lt, ne
from typing import Any

from cmx_connect_exporter.cmx.wire import field
from cmx_connect_exporter.counting.dedupe import MAC_KEYS, SessionTable, session_keys
from cmx_connect_exporter.counting.dimensions import (
    BY_LABEL,
    BYTES_KEYS,
    DWELL_BUCKETS,
    FIRST_LOGIN_KEY,
    LABELS,
    LAST_LOGIN_KEY,
    LAST_LOGOUT_KEYS,
    NEW,
    RETURNING,
    VISIT,
)
from cmx_connect_exporter.counting.times import (
    DAY,
    epoch_seconds,
    local_day,
    local_form_days,
    local_form_seconds,
    offset_seconds,
)
from cmx_connect_exporter.outcome import Counts, Dwell

UNKNOWN = "unknown"
OTHER = "other"
MAX_VALUE_LENGTH = 64
# Characters of a raw value read for its label: a longer one is cut to this before any work, so a
# huge value costs what a short one does. Only values this short are cached, so nothing keeps a huge one.
_MAX_RAW_LENGTH = 4 * MAX_VALUE_LENGTH
# Distinct values tracked per label within one poll. Past it, new values go
# straight to "other", so a hostile or broken server cannot grow memory.
MAX_TRACKED_VALUES = 10_000
_MAX_CACHED_VALUES = 4096
_SENT, _RECEIVED = field(BYTES_KEYS["sent"]), field(BYTES_KEYS["received"])
_FIRST_LOGIN, _LAST_LOGIN = field(FIRST_LOGIN_KEY), field(LAST_LOGIN_KEY)
_LAST_LOGOUT = tuple(map(field, LAST_LOGOUT_KEYS))
_MAX_BYTES_DIGITS = 20
# A byte counter at or past 2**63 is no count: read as 0, so that no sum can overflow a float when rendered.
_MAX_BYTES = 2**63

# Control characters that are not white space: dropped, they mean nothing in a label.
_CONTROL = {c: None for c in (*range(0x00, 0x09), *range(0x0E, 0x1C), *range(0x7F, 0xA0))}


def normalise(value: Any) -> str:
    """A label value from free text: trimmed, white space folded, case kept, bounded.

    Only the value's first ``_MAX_RAW_LENGTH`` characters are read.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return UNKNOWN  # null, missing, lists and objects carry no usable label
    text = " ".join(str(value)[:_MAX_RAW_LENGTH].translate(_CONTROL).split())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes cannot be exported
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_VALUE_LENGTH].rstrip() or UNKNOWN


def cap_values(counts: Mapping[str, int], limit: int) -> dict[str, int]:
    """Keep at most ``limit`` series: the most frequent values, the rest summed as ``other``."""
    if len(counts) <= limit:
        return dict(counts)
    ranked = sorted((item for item in counts.items() if item[0] != OTHER), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[: limit - 1])
    kept[OTHER] = sum(counts.values()) - sum(kept.values())
    return kept


def byte_count(value: Any) -> int:
    """A byte counter from a record: a non-negative integer below 2**63, or its digits as text; else 0."""
    if value.__class__ is int:
        return value if 0 < value < _MAX_BYTES else 0
    if value.__class__ is float:
        return int(value) if 0 < value < _MAX_BYTES and value.is_integer() else 0
    if value.__class__ is str and len(value) <= _MAX_BYTES_DIGITS and value.isascii() and value.isdigit():
        return byte_count(int(value))
    return 0


class _Group:
    """The counts of one split value (or of all sessions, unsplit), as the tally fills them."""

    __slots__ = ("counters", "dwell", "dwell_sum", "received", "sent", "total")

    def __init__(self, dimensions: int) -> None:
        self.total = 0
        self.counters: tuple[dict[str, int], ...] = tuple({} for _ in range(dimensions))
        self.dwell = [0] * (len(DWELL_BUCKETS) + 1)  # per bucket, not cumulative; the last is above every bound
        self.dwell_sum = 0.0
        self.sent = self.received = 0

    def absorb(self, other: _Group) -> None:
        self.total += other.total
        for mine, theirs in zip(self.counters, other.counters, strict=True):
            for value, count in theirs.items():
                mine[value] = mine.get(value, 0) + count
        self.dwell = [a + b for a, b in zip(self.dwell, other.dwell, strict=True)]
        self.dwell_sum += other.dwell_sum
        self.sent += other.sent
        self.received += other.received

    def counts(self, labels: tuple[str, ...], limit: int) -> Counts:
        cumulative, running = [], 0
        for n in self.dwell[:-1]:
            running += n
            cumulative.append(running)
        return Counts(total=self.total,
                      by_label={label: cap_values(c, limit) for label, c in zip(labels, self.counters, strict=True)},
                      dwell=Dwell(tuple(cumulative), running + self.dwell[-1], self.dwell_sum),
                      bytes_sent=self.sent, bytes_received=self.received)


class Tally:
    """Counts sessions once each, keyed by MAC; records without one are counted as they come.

    ``labels`` names the breakdowns to count (CMX_DIMENSIONS): a dimension left out is never read.
    ``split_by`` names a label whose every value gets counts of its own (CMX_SPLIT_BY).
    The histogram measures each session's dwell, ``now`` minus its last login; with ``stays``, it measures
    instead how long the sessions that have left stayed, their logout minus their last login.
    ``sessions``, the target's table kept from its last completed poll, makes logins count; without it,
    the tally keeps its own, and counts none.
    """

    def __init__(self, expected_sessions: int = 0, *, labels: Iterable[str] = LABELS, split_by: str | None = None,
                 now: float | None = None, sessions: SessionTable | None = None, stays: bool = False) -> None:
        self.total = 0
        self.unreadable_login_time = 0
        self.tz_offset: int | None = None  # the last page's timeZoneOffset, as sent
        self._sessions = SessionTable(expected_sessions) if sessions is None else sessions
        self._count_logins = sessions is not None
        self._now = time.time() if now is None else now
        self._stays = stays
        self._split_by = split_by
        wanted = [BY_LABEL[label] for label in labels if label != split_by]
        read = [d for d in wanted if not d.derived]
        self._visit = VISIT in wanted
        self._labels = tuple(d.label for d in read) + ((VISIT.label,) if self._visit else ())
        split = BY_LABEL[split_by].keys if split_by else ()
        self.keys: tuple[str, ...] = tuple(dict.fromkeys(  # the record keys it reads, and no others
            (*MAC_KEYS, *(key for d in read for key in d.keys), *split, LAST_LOGIN_KEY, *BYTES_KEYS.values(),
             *((FIRST_LOGIN_KEY,) if self._visit else ()), *(LAST_LOGOUT_KEYS if stays else ()))))
        # (first key's reader, other keys' readers) per string dimension, made once rather than per record
        self._fields = tuple((field(d.keys[0]), tuple(map(field, d.keys[1:]))) for d in read)
        self._split_fields = tuple(map(field, split))
        self._groups: dict[str, _Group] = {}
        self._single = None if split_by else self._group("")
        self._cache: dict[str, str] = {}

    def _group(self, value: str) -> _Group:
        group = self._groups.get(value)
        if group is None:
            if value != OTHER and len(self._groups) >= MAX_TRACKED_VALUES:
                return self._group(OTHER)
            group = self._groups[value] = _Group(len(self._labels))
        return group

    def add_page(self, records: list[Any], tz_offset: int | None = None) -> int:
        """Count a page; returns how many of its sessions were new to this poll.

        The hot path of a poll, so it is written for speed. Label values are counted raw, a page
        at a time, by ``Counter`` over ``map`` (a loop in C), and each distinct raw value is then
        normalised once; only the times, the bytes and the visit take a Python loop per record.
        ``tz_offset`` is the page's timeZoneOffset, which local times are read in.
        """
        self.tz_offset = tz_offset
        offset = offset_seconds(tz_offset)
        fresh, lasts, logins = self._fresh(records, offset)
        if self._single is not None:
            self._add(self._single, fresh, lasts, logins, offset)
        else:
            parts: dict[str, tuple[list[Any], list[Any], list[float | None]]] = {}
            for record, last, login in zip(fresh, lasts, logins, strict=True):
                part = parts.setdefault(self._split_value(record), ([], [], []))
                part[0].append(record)
                part[1].append(last)
                part[2].append(login)
            for value, part in parts.items():
                self._add(self._group(value), *part, offset)
        self.total += len(fresh)
        return len(fresh)

    def _fresh(self, records: list[Any], offset: int | None) -> tuple[list[Any], list[Any], list[float | None]]:
        """The page's records of sessions not yet counted in this poll, their last logins as sent, and read."""
        lasts = list(map(_LAST_LOGIN, records))
        logins = local_form_seconds(lasts, offset)
        if logins is None:
            logins = list(map(epoch_seconds, lasts, repeat(offset)))
        new = self._sessions.see(session_keys(records), logins)
        if all(new):
            return records, lasts, logins
        return list(compress(records, new)), list(compress(lasts, new)), list(compress(logins, new))

    def _add(self, group: _Group, records: list[Any], lasts: list[Any], logins: list[float | None],
             offset: int | None) -> None:
        group.total += len(records)
        for (first, others), counter in zip(self._fields, group.counters, strict=False):  # visit's, last, has none
            for raw, n in _raw_values(records, first, others).items():
                _add_to(counter, self._value(raw), n)
        group.sent += _byte_sum(records, _SENT)
        group.received += _byte_sum(records, _RECEIVED)
        self.unreadable_login_time += logins.count(None)
        dwells = self._dwells(records, logins, offset)
        dwells.sort()  # a bucket's count is then two bisections apart
        counted = 0
        for bucket, bound in enumerate((*DWELL_BUCKETS, math.inf)):
            upto = bisect_right(dwells, bound)  # the dwells at or below the bound, as Prometheus's "le" counts them
            group.dwell[bucket] += upto - counted
            counted = upto
        group.dwell_sum += sum(dwells)
        if self._visit:
            for value, n in _visits(list(map(_FIRST_LOGIN, records)), lasts, logins, offset).items():
                _add_to(group.counters[-1], value, n)

    def _dwells(self, records: list[Any], logins: list[float | None], offset: int | None) -> list[float]:
        """What the histogram measures of each session with a readable login: ``now`` minus it or, with ``stays``,
        the logout minus it, for those that left. A login in the future is clock skew: 0 s."""
        if self._stays:
            spans = ((_logout(record, login, offset), login)
                     for record, login in zip(records, logins, strict=True) if login is not None)
            return [end - login if end > login else 0.0 for end, login in spans if end is not None]
        now = self._now
        return [now - login if now > login else 0.0 for login in logins if login is not None]

    def _split_value(self, record: Any) -> str:
        return self._value(_first_present(record, self._split_fields))

    def _value(self, raw: Any) -> str:
        """A raw value's label value, from a small cache of short values."""
        cacheable = raw.__class__ is str and len(raw) <= _MAX_RAW_LENGTH
        value = self._cache.get(raw) if cacheable else None
        if value is None:
            value = normalise(raw)
            if cacheable:
                if len(self._cache) >= _MAX_CACHED_VALUES:
                    self._cache.clear()
                self._cache[raw] = value
        return value

    def counts(self, max_label_values: int) -> Counts:
        """The counts, each label capped at ``max_label_values`` series; split values are capped so too."""
        logins = self._sessions.logins if self._count_logins and self._sessions.compared else 0
        whole = {"unreadable_login_time": self.unreadable_login_time, "logins": logins, "tz_offset": self.tz_offset}
        if self._single is not None:
            return replace(self._single.counts(self._labels, max_label_values), **whole)
        ranked = sorted(self._groups.items(), key=lambda kv: (-kv[1].total, kv[0] == OTHER, kv[0]))
        kept = dict(ranked if len(ranked) <= max_label_values else ranked[: max_label_values - 1])
        for _, group in ranked[len(kept):]:
            kept.setdefault(OTHER, _Group(len(self._labels))).absorb(group)
        return Counts(total=self.total, by_label={}, split_by=self._split_by,
                      by_split={value: g.counts(self._labels, max_label_values) for value, g in kept.items()},
                      **whole)


def _visits(firsts: list[Any], lasts: list[Any], logins: list[float | None], offset: int | None) -> Mapping[str, int]:
    """How many sessions are new, returning or unknown, by the local days of their first and last logins.

    In C, a page at a time, in the usual case: every last login readable, and every first login that is
    not the last in CMX's local form. Any other page is read a record at a time, by ``_visit``.
    """
    if offset is not None and None not in logins:
        differ = list(map(ne, firsts, lasts))  # a first login that is the last is a first visit
        others = list(compress(firsts, differ))
        first_days = local_form_days(others) if others else []
        if first_days is not None:
            last_days = map(floordiv, map(add, compress(logins, differ), repeat(offset)), repeat(DAY))
            returning = sum(map(lt, first_days, last_days))
            return {value: n for value, n in ((NEW, len(logins) - returning), (RETURNING, returning)) if n}
    return Counter(map(_visit, firsts, lasts, logins, repeat(offset)))


def _visit(raw_first: Any, raw_last: Any, login: float | None, offset: int | None) -> str:
    """New or returning, by the local days of the first and last logins; unknown when either is unreadable."""
    if offset is None or login is None:
        return UNKNOWN
    if raw_first == raw_last:  # a first visit, as often: no second time to read
        return NEW
    first = epoch_seconds(raw_first, offset)
    if first is None:
        return UNKNOWN
    return RETURNING if local_day(first, offset) < local_day(login, offset) else NEW


def _logout(record: Any, login: float, offset: int | None) -> float | None:
    """When the session left, or None while it is connected: a logout before the last login is an earlier visit's."""
    logout = epoch_seconds(_first_present(record, _LAST_LOGOUT), offset)
    return logout if logout is not None and logout >= login else None


def _first_present(record: Any, fields: tuple[Callable[[Any], Any], ...]) -> Any:
    """The value of the first of ``fields`` the record holds, or None."""
    return next((value for read in fields if (value := read(record)) is not None), None)


def _raw_values(records: list[Any], first: Callable[[Any], Any],
                others: tuple[Callable[[Any], Any], ...]) -> Counter[Any]:
    """How often each raw value of a dimension occurs, read from ``first``, else the first of ``others`` present."""
    values = list(map(first, records))
    try:
        found = Counter(values)
    except TypeError:  # a list or an object as a value
        found = Counter({_NOT_TEXT: 1})
    if any(raw is not None and raw.__class__ is not str for raw in found):
        found = Counter(map(_countable, values))
    missing = found.pop(None, 0)
    if missing and others:  # the few records without ``first``, picked out in C
        found.update(_countable(_first_present(record, others))
                     for record in compress(records, map(is_, values, repeat(None))))
    elif missing:
        found[None] = missing
    return found


_NOT_TEXT = object()  # stands for values that are not text, which are counted again one by one


def _countable(value: Any) -> Any:
    """Text as it is; any other value as its label: JSON's true, 1 and 1.0 are one key to Python, three labels here."""
    return value if value is None or value.__class__ is str else normalise(value)


def _byte_sum(records: list[Any], read: Callable[[Any], Any]) -> int:
    """The sum of a byte counter over records; in C when every value is a non-negative int, as usual."""
    values = list(map(read, records))
    if set(map(type, values)) <= {int} and (not values or (min(values) >= 0 and max(values) < _MAX_BYTES)):
        return sum(values)
    return sum(map(byte_count, values))


def _add_to(counter: dict[str, int], value: str, n: int) -> None:
    """Adds ``n`` to a value's count; past MAX_TRACKED_VALUES distinct values, new ones go to ``other``."""
    if value not in counter and len(counter) >= MAX_TRACKED_VALUES:
        value = OTHER
    counter[value] = counter.get(value, 0) + n
