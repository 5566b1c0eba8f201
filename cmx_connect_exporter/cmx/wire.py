"""The wire format of a clients page: its envelope decoded and checked for shape, read tolerantly."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

try:  # orjson decodes pages several times faster; the stdlib is the fallback
    from orjson import loads as fast_loads
except ImportError:  # pragma: no cover - depends on the optional extra
    fast_loads = json.loads

from cmx_connect_exporter.outcome import PollError

# Below 2**63, and never more digits than int() converts; an index has no sign, an offset may.
_INDEX_TEXT = re.compile(r"[0-9]{1,18}")
_OFFSET_TEXT = re.compile(r"[+-]?[0-9]{1,18}")

Body = bytes | bytearray


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Any]
    next_index: int | None
    tz_offset: int | None  # timeZoneOffset as sent: CMX's offset from UTC (in milliseconds, it seems)


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
    return Page(records=records, next_index=as_int(envelope.get("nextIndex")),
                tz_offset=as_int(envelope.get("timeZoneOffset"), _OFFSET_TEXT))


def as_int(value: Any, text: re.Pattern[str] = _INDEX_TEXT) -> int | None:
    """An integer field, as a JSON number or as text; None when it is missing or not a plain integer.

    The envelope's numbers are hints (full pages are followed whatever nextIndex says), so text
    that is not 1 to 18 ASCII digits (``text``) counts as missing rather than failing the poll:
    ``str.isdigit`` accepts superscripts ``int`` refuses, and ``int`` refuses more than a few
    thousand digits.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (digits := text.fullmatch(value.strip())):
        return int(digits[0])
    return None
