"""One poll: walk every page of active sessions and count them by label.

Pages are counted as they arrive and then dropped, so memory does not grow with
the size of the venue beyond one compact key per session for de-duplication.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from exporter.client import Page, PollError

UNKNOWN = "unknown"
OTHER = "other"
MAX_VALUE_LENGTH = 64
# Distinct values tracked per label within one poll. Past it, new values go
# straight to "other", so a hostile or broken server cannot grow memory.
MAX_TRACKED_VALUES = 10_000
_MAX_CACHED_VALUES = 4096

# Label → record keys that may hold it, the documented spelling first.
LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "authtype": ("authType", "authtype", "auth_type"),
    "os": ("operationSystem", "operatingSystem", "os", "OS"),
    "device": ("device", "deviceType"),
    "language": ("language", "lang"),
}
LABELS = tuple(LABEL_KEYS)
MAC_KEYS = ("macAddress", "mac", "clientMac")

# Control characters that are not white space: dropped, they mean nothing in a label.
_CONTROL = {c: None for c in (*range(0x00, 0x09), *range(0x0E, 0x1C), *range(0x7F, 0xA0))}
_MAC_SEPARATORS = str.maketrans("", "", ":-. ")
_HASH_BIT = 1 << 63
_HASH_MASK = _HASH_BIT - 1

FetchPage = Callable[[int, int], Page]


@dataclass(frozen=True, slots=True)
class Counts:
    """Active sessions in one complete poll; each label's values sum to ``total``."""

    total: int
    by_label: Mapping[str, Mapping[str, int]]


def normalise(value: Any) -> str:
    """A label value from free text: trimmed, white space folded, case kept, bounded."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return UNKNOWN  # null, missing, lists and objects carry no usable label
    text = " ".join(str(value).translate(_CONTROL).split())
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from JSON escapes cannot be exported
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_VALUE_LENGTH].rstrip() or UNKNOWN


def session_key(record: Mapping[str, Any]) -> int | None:
    """A compact key for de-duplication: the MAC as an integer, else a hash of its text."""
    for name in MAC_KEYS:
        mac = record.get(name)
        if isinstance(mac, str) and (text := mac.strip().lower()):
            digits = text.translate(_MAC_SEPARATORS)
            if 0 < len(digits) <= 12:
                try:
                    return int(digits, 16)
                except ValueError:
                    pass
            return hash(text) & _HASH_MASK | _HASH_BIT  # above 48 bits: never equal to a parsed MAC
    return None


def cap_values(counts: Mapping[str, int], limit: int) -> dict[str, int]:
    """Keep at most ``limit`` series: the most frequent values, the rest summed as ``other``."""
    if len(counts) <= limit:
        return dict(counts)
    ranked = sorted((item for item in counts.items() if item[0] != OTHER), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(ranked[: limit - 1])
    kept[OTHER] = sum(counts.values()) - sum(kept.values())
    return kept


class Tally:
    """Counts sessions once each, keyed by MAC; records without one are counted as they come."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()
        self._counters: dict[str, dict[str, int]] = {label: {} for label in LABELS}
        self._cache: dict[str, str] = {}

    def add_page(self, records: list[Any]) -> int:
        """Count a page; returns how many of its sessions were new to this poll."""
        new = 0
        seen = self._seen
        for record in records:
            if not isinstance(record, dict):
                raise PollError("bad_response", "a record is not a JSON object")
            key = session_key(record)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            new += 1
            for label, keys in LABEL_KEYS.items():
                self._count(self._counters[label], self._value(record, keys))
        self.total += new
        return new

    def _value(self, record: dict[str, Any], keys: tuple[str, ...]) -> str:
        raw = None
        for key in keys:
            raw = record.get(key)
            if raw is not None:
                break
        if not isinstance(raw, str):
            return normalise(raw)
        value = self._cache.get(raw)
        if value is None:
            if len(self._cache) >= _MAX_CACHED_VALUES:
                self._cache.clear()
            value = self._cache[raw] = normalise(raw)
        return value

    @staticmethod
    def _count(counter: dict[str, int], value: str) -> None:
        if value not in counter and len(counter) >= MAX_TRACKED_VALUES:
            value = OTHER
        counter[value] = counter.get(value, 0) + 1

    def counts(self, max_label_values: int) -> Counts:
        return Counts(
            total=self.total,
            by_label={label: cap_values(c, max_label_values) for label, c in self._counters.items()},
        )


class _Prefetcher:
    """Keeps the next ``depth - 1`` full pages in flight while the walk reads one.

    Pages are still read, checked and counted in index order by the caller; only
    the waiting overlaps. A short page ends the walk, so at most ``depth - 1``
    requests ever go past the end.
    """

    def __init__(self, fetch_page: FetchPage, depth: int, pool: ThreadPoolExecutor) -> None:
        self._fetch = fetch_page
        self._depth = depth
        self._pool = pool
        self._in_flight: dict[int, Future[Page]] = {}

    def __call__(self, index: int, count: int) -> Page:
        wanted = {index + k * count for k in range(self._depth)}
        for stale in self._in_flight.keys() - wanted:  # the walk moved off the expected indexes
            self._in_flight.pop(stale).cancel()
        for ahead in sorted(wanted - self._in_flight.keys()):
            self._in_flight[ahead] = self._pool.submit(self._fetch, ahead, count)
        return self._in_flight.pop(index).result()


@contextmanager
def _page_source(fetch_page: FetchPage, concurrency: int) -> Iterator[FetchPage]:
    if concurrency <= 1:
        yield fetch_page
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="page")
    try:
        yield _Prefetcher(fetch_page, concurrency, pool)
    finally:  # requests already sent finish before the poll ends, so polls never overlap
        pool.shutdown(wait=True, cancel_futures=True)


def count_active_sessions(fetch_page: FetchPage, *, page_size: int, max_pages: int,
                          max_label_values: int, concurrency: int = 1) -> Counts:
    """Walk the pages and count. Raises PollError; a failed poll yields no counts at all.

    The list moves while we page (new logins push records down), so pages may
    overlap; the Tally keeps each session once. No single field is trusted to stop.
    """
    with _page_source(fetch_page, concurrency) as get_page:
        return _walk(get_page, page_size, max_pages, max_label_values)


def _walk(fetch_page: FetchPage, page_size: int, max_pages: int, max_label_values: int) -> Counts:
    tally = Tally()
    index = 0
    for _ in range(max_pages):
        page = fetch_page(index, page_size)
        received = len(page.records)
        if received > page_size:
            raise PollError("bad_response", f"page at index {index} holds {received} records, "
                                            f"more than the {page_size} asked for")
        if received and not tally.add_page(page.records):
            raise PollError("pagination", f"page at index {index} holds only sessions already counted; "
                                          "the server seems to ignore 'index'")
        following = page.next_index
        if following and following <= index:
            raise PollError("pagination", f"nextIndex went backwards ({following} after index {index})")
        more = received == page_size or (received > 0 and following is not None and following > index)
        index += received
        if not more:
            return tally.counts(max_label_values)
    raise PollError("pagination", f"more than {max_pages} pages; raise CMX_MAX_PAGES if CMX really "
                                  "holds that many sessions")
