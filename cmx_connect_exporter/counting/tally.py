"""Records folded through the catalogue into counts: each session once, each label value normalised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cmx_connect_exporter.counting.dedupe import SeenKeys, session_key
from cmx_connect_exporter.counting.dimensions import DIMENSIONS
from cmx_connect_exporter.outcome import Counts, PollError

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


class Tally:
    """Counts sessions once each, keyed by MAC; records without one are counted as they come."""

    def __init__(self, expected_sessions: int = 0) -> None:
        self.total = 0
        self._seen = SeenKeys(expected_sessions)
        self._counters: dict[str, dict[str, int]] = {dimension.label: {} for dimension in DIMENSIONS}
        # (first key, other keys, counter) per dimension, unpacked once rather than per record
        self._labels = tuple((d.keys[0], d.keys[1:], self._counters[d.label]) for d in DIMENSIONS)
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
                value = cache.get(raw) if raw.__class__ is str and len(raw) <= _MAX_RAW_LENGTH else None
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
