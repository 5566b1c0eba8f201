"""One poll: walk every page of active sessions and count them by label.

Pages are counted as they arrive and then dropped, so memory does not grow with
the size of the venue beyond one compact key per session for de-duplication.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from array import array
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

try:  # orjson decodes pages several times faster; the stdlib is the fallback
    from orjson import loads as fast_loads
except ImportError:  # pragma: no cover - depends on the optional extra
    fast_loads = json.loads

from exporter.outcome import LABELS, Counts, PollError

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

# Label → record keys that may hold it, the documented spelling first.
LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "authtype": ("authType", "authtype", "auth_type"),
    "os": ("operationSystem", "operatingSystem", "os", "OS"),
    "device": ("device", "deviceType"),
    "language": ("language", "lang"),
}
assert tuple(LABEL_KEYS) == LABELS
MAC_KEYS = ("macAddress", "mac", "clientMac")

# Control characters that are not white space: dropped, they mean nothing in a label.
_CONTROL = {c: None for c in (*range(0x00, 0x09), *range(0x0E, 0x1C), *range(0x7F, 0xA0))}
_MAC_SEPARATORS = str.maketrans("", "", ":-. ")
_INDEX_TEXT = re.compile(r"[0-9]{1,18}")  # below 2**63, and never more digits than int() converts
_HASH_BIT = 1 << 63
_HASH_MASK = _HASH_BIT - 1
# SeenKeys holds 64-bit keys, mixed, in 2**_SHARD_BITS shards chosen by the mixed key's top bits;
# the slot in a shard comes from the _SLOT_BITS below them.
_KEY_MASK = (1 << 64) - 1
_SHARD_BITS = 6
_SLOT_BITS = 64 - _SHARD_BITS

Body = bytes | bytearray
FetchBody = Callable[[int, int], Body]


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Any]
    next_index: int | None


FetchPage = Callable[[int, int], Page]


def _decode(body: Body) -> Any:
    """orjson first; the stdlib second, as it accepts the lone surrogates some devices send."""
    try:
        return fast_loads(body)
    except ValueError:
        return json.loads(body)


def parse_page(body: Body, index: int) -> Page:
    """The envelope of one page, checked for shape. Raises PollError, naming the problem, never the content."""
    try:
        envelope = _decode(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = "is truncated JSON" if body.lstrip()[:1] in (b"{", b"[") else "is not JSON"
        raise PollError("bad_response", f"page at index {index} {problem}") from None
    except ValueError:  # the only other kind: an integer longer than int() converts (4300 digits by default)
        raise PollError("bad_response", f"page at index {index} holds a number too long to read") from None
    except RecursionError:  # orjson stops at depth 1024, but the stdlib recurses until Python's limit
        raise PollError("bad_response", f"page at index {index} is nested too deeply") from None
    records = envelope.get("records", ...) if isinstance(envelope, dict) else ...
    if records is None:  # some servers send null rather than [] when nothing matches
        records = []
    if not isinstance(records, list):
        raise PollError("bad_response", f"page at index {index} has no 'records' list")
    return Page(records=records, next_index=_as_int(envelope.get("nextIndex")))


def _as_int(value: Any) -> int | None:
    """nextIndex as an int; None when it is missing or not a plain index.

    It is only a hint (full pages are followed whatever it says), so text that is not 1 to 18
    ASCII digits counts as no nextIndex rather than failing the poll: ``str.isdigit`` accepts
    superscripts ``int`` refuses, and ``int`` refuses more than a few thousand digits.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (digits := _INDEX_TEXT.fullmatch(value.strip())):
        return int(digits[0])
    return None


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


def session_key(record: Mapping[str, Any]) -> int | None:
    """A compact key for de-duplication: the MAC as an integer, else a hash of its text."""
    mac = record.get("macAddress")
    if mac.__class__ is str and len(mac) == 17:  # the usual aa:bb:cc:dd:ee:ff, without the slow path
        digits = mac.replace(":", "")
        if len(digits) == 12 and digits.isalnum():
            try:
                return int(digits, 16)
            except ValueError:
                pass
    for name in MAC_KEYS:
        mac = record.get(name)
        if isinstance(mac, str) and (text := mac.strip().lower()):
            digits = text.translate(_MAC_SEPARATORS)
            if 0 < len(digits) <= 12 and digits.isalnum():
                try:
                    return int(digits, 16)
                except ValueError:
                    pass
            return hash(text) & _HASH_MASK | _HASH_BIT  # above 48 bits: never equal to a parsed MAC
    return None


class SeenKeys:
    """A set of 64-bit session keys in flat arrays (open addressing, linear probing).

    About 16 bytes a session where a ``set`` of ints costs about 70. The keys are
    spread over 64 shards that grow one at a time, so growing never holds two copies
    of the whole table: at a million sessions the peak is 16 MiB, not 24.

    Keys come from the server, so where one goes must not be known in advance: with a
    fixed spread, crafted MACs could all probe from one slot, in quadratic time. Each key
    is multiplied by a random odd number, drawn per table, mod 2**64; its shard and slot are
    the top bits of the product, which depend on every bit of the key. Multiplying by an odd
    number is a bijection, so the product is stored in place of the key.
    """

    _MIN_SLOTS = 1 << 6  # per shard

    def __init__(self, expected: int = 0) -> None:
        shards = 1 << _SHARD_BITS
        slots = self._MIN_SLOTS
        while slots * shards < 2 * expected:
            slots *= 2
        self._shards = [array("Q", [0]) * slots for _ in range(shards)]
        self._used = [0] * shards
        self._zero = False  # 0 marks an empty slot, so the key 0 is kept aside
        self._multiplier = secrets.randbits(64) | 1

    def __len__(self) -> int:
        return sum(self._used) + self._zero

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was not there yet."""
        mixed = key * self._multiplier & _KEY_MASK
        if not mixed:
            new, self._zero = not self._zero, True
            return new
        shard = mixed >> _SLOT_BITS
        slots = self._shards[shard]
        if not _place(slots, mixed):
            return False
        self._used[shard] += 1
        if 4 * self._used[shard] > 3 * len(slots):
            bigger = array("Q", [0]) * (2 * len(slots))
            for held in slots:
                if held:
                    _place(bigger, held)
            self._shards[shard] = bigger
        return True


def _place(slots: array[int], mixed: int) -> bool:
    """Store a mixed key in its slot; False if it was there already.

    The slot is the top bits below the shard's: a product's low bits depend only on the key's low bits.
    """
    mask = len(slots) - 1
    i = mixed >> (_SLOT_BITS - mask.bit_length()) & mask
    held = slots[i]
    while held:
        if held == mixed:
            return False
        i = (i + 1) & mask
        held = slots[i]
    slots[i] = mixed
    return True


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

    def __init__(self, expected_sessions: int = 0) -> None:
        self.total = 0
        self._seen = SeenKeys(expected_sessions)
        self._counters: dict[str, dict[str, int]] = {label: {} for label in LABELS}
        # (first key, other keys, counter) per label, unpacked once rather than per record
        self._labels = tuple((keys[0], keys[1:], self._counters[label]) for label, keys in LABEL_KEYS.items())
        self._cache: dict[str, str] = {}

    def add_page(self, records: list[Any]) -> int:
        """Count a page; returns how many of its sessions were new to this poll.

        The hot path of a poll, so it is written for speed: the usual record has the
        documented keys and label values already seen, served from a small cache.
        """
        new = 0
        seen_add = self._seen.add
        cache = self._cache
        for record in records:
            if not isinstance(record, dict):
                raise PollError("bad_response", "a record is not a JSON object")
            key = session_key(record)
            if key is not None and not seen_add(key):
                continue
            new += 1
            for first, others, counter in self._labels:
                raw = record.get(first)
                if raw is None and others:
                    raw = next((v for k in others if (v := record.get(k)) is not None), None)
                value = cache.get(raw) if raw.__class__ is str else None
                if value is None:
                    value = self._normalise(raw)
                try:
                    counter[value] += 1
                except KeyError:
                    _first_sight(counter, value)
        self.total += new
        return new

    def _normalise(self, raw: Any) -> str:
        value = normalise(raw)
        if raw.__class__ is str and len(raw) <= _MAX_RAW_LENGTH:
            if len(self._cache) >= _MAX_CACHED_VALUES:
                self._cache.clear()
            self._cache[raw] = value
        return value

    def counts(self, max_label_values: int) -> Counts:
        return Counts(
            total=self.total,
            by_label={label: cap_values(c, max_label_values) for label, c in self._counters.items()},
        )


def _first_sight(counter: dict[str, int], value: str) -> None:
    if len(counter) >= MAX_TRACKED_VALUES:
        value = OTHER
    counter[value] = counter.get(value, 0) + 1


class _Prefetcher:
    """Keeps the next ``depth - 1`` full pages in flight while the walk counts one.

    Pages are still read, checked and counted in index order by the caller; only
    the waiting overlaps. The next request goes out as soon as a page is decoded
    and found full, before it is counted. A short page ends the walk, so at most
    ``depth - 1`` requests ever go past the end. While the walk has not passed the
    page where the last poll's walk ended, it asks no further: a venue whose size
    has not changed across a page boundary is polled with no request past the end.
    """

    def __init__(self, fetch_body: FetchBody, depth: int, pool: ThreadPoolExecutor, expected_sessions: int) -> None:
        self._fetch = fetch_body
        self._depth = depth
        self._pool = pool
        self._expected = expected_sessions
        self._in_flight: dict[int, Future[Body]] = {}

    def __call__(self, index: int, count: int) -> Page:
        self._ask_ahead(index, count)
        page = parse_page(self._in_flight.pop(index).result(), index)
        if len(page.records) == count:  # the walk goes on at index + count, whatever nextIndex says
            self._ask_ahead(index + count, count)
        return page

    def _ask_ahead(self, index: int, count: int) -> None:
        """Have the pages from ``index`` on in flight, as deep as allowed; cancel any others."""
        depth = self._depth
        if self._expected:  # 0 tells nothing: no poll yet, or an empty venue
            expected_end = self._expected // count * count
            if index <= expected_end:
                depth = min(depth, (expected_end - index) // count + 1)
        wanted = {index + k * count for k in range(depth)}
        for stale in self._in_flight.keys() - wanted:  # the walk moved off the expected indexes
            self._in_flight.pop(stale).cancel()
        for ahead in sorted(wanted - self._in_flight.keys()):
            self._in_flight[ahead] = self._pool.submit(self._fetch, ahead, count)


@contextmanager
def _page_source(fetch_body: FetchBody, concurrency: int, expected_sessions: int) -> Iterator[FetchPage]:
    if concurrency <= 1:
        yield lambda index, count: parse_page(fetch_body(index, count), index)
        return
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="page")
    try:
        yield _Prefetcher(fetch_body, concurrency, pool, expected_sessions)
    finally:  # requests already sent finish before the poll ends, so polls never overlap
        pool.shutdown(wait=True, cancel_futures=True)


def count_active_sessions(fetch_body: FetchBody, *, page_size: int, max_pages: int, max_label_values: int,
                          concurrency: int = 1, expected_sessions: int = 0,
                          poll_timeout: float | None = None) -> Counts:
    """Walk the pages and count. Raises PollError; a failed poll yields no counts at all.

    The list moves while we page (new logins push records down), so pages may
    overlap; the Tally keeps each session once. No single field is trusted to stop.
    ``expected_sessions`` (the last poll's total) sizes the de-duplication table up front,
    and tells concurrent fetching where the list probably ends. Past ``poll_timeout`` seconds
    no further page is asked for: each page answers in time, but pages without end would not.
    """
    deadline = time.monotonic() + poll_timeout if poll_timeout is not None else None
    tally = Tally(expected_sessions)
    with _page_source(fetch_body, concurrency, expected_sessions) as get_page:
        index = 0
        for _ in range(max_pages):  # the page is never named here, so it is freed before the next is decoded
            if deadline is not None and time.monotonic() > deadline:
                raise PollError("timeout", f"the poll did not end within {poll_timeout:g} s (CMX_POLL_TIMEOUT) "
                                           f"with {index} records read")
            received, more = _count_page(tally, get_page(index, page_size), index, page_size)
            index += received
            if not more:
                return tally.counts(max_label_values)
    raise PollError("pagination", f"more than {max_pages} pages; raise CMX_MAX_PAGES if CMX really "
                                  "holds that many sessions")


def _count_page(tally: Tally, page: Page, index: int, page_size: int) -> tuple[int, bool]:
    """Check and count one page; returns its record count and whether more may follow."""
    received = len(page.records)
    if received > page_size:
        raise PollError("bad_response", f"page at index {index} holds {received} records, "
                                        f"more than the {page_size} asked for")
    if received and not tally.add_page(page.records):
        raise PollError("pagination", f"page at index {index} holds only sessions already counted; "
                                      "the server seems to ignore 'index'")
    following = page.next_index
    if following and following < index:  # equal is not backwards: an empty last page may name itself
        raise PollError("pagination", f"nextIndex went backwards ({following} after index {index})")
    return received, received == page_size or (received > 0 and following is not None and following > index)
