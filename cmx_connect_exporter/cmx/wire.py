"""The wire format of a clients page: its envelope decoded and checked for shape, read tolerantly.

A record is decoded into a Record of just the keys the counting reads (msgspec skips the rest,
such as names and e-mail addresses, without making a Python object of them): each key is any JSON
value, or None when the record lacks it. A page msgspec refuses is read whole by the stdlib's json,
then cut down to the same records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from operator import attrgetter
from typing import Any

import msgspec

from cmx_connect_exporter.outcome import PollError

# Below 2**63, and never more digits than int() converts; an index has no sign, an offset may.
_INDEX_TEXT = re.compile(r"[0-9]{1,18}")
_OFFSET_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
_NOT_AN_IDENTIFIER = re.compile(r"\W")

Body = bytes | bytearray


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Any]  # Records
    next_index: int | None
    tz_offset: int | None  # timeZoneOffset as sent: CMX's offset from UTC (in milliseconds, it seems)


def field(key: str) -> Callable[[Any], Any]:
    """Reads a record key's value from a Record: any JSON value, or None when the record lacks the key."""
    return attrgetter(_attribute(key))


def _attribute(key: str) -> str:
    """A Record's attribute for a record key, which may hold a slash (``location/Site``)."""
    return "k_" + _NOT_AN_IDENTIFIER.sub("_", key)


class PageReader:
    """Decodes pages whose records are read for ``keys``; one per set of keys, as ``page_reader`` keeps them."""

    def __init__(self, keys: Iterable[str]) -> None:
        keys = tuple(dict.fromkeys(keys))
        if len({_attribute(key) for key in keys}) != len(keys):
            raise ValueError("two record keys map to one attribute")
        # gc=False: decoded JSON holds no reference cycles, and a record is then 16 bytes smaller
        record = msgspec.defstruct("Record", [(_attribute(key), Any, msgspec.field(name=key, default=None))
                                              for key in keys], gc=False)
        self._envelope = msgspec.defstruct("Envelope", [
            ("records", list[record] | None | msgspec.UnsetType, msgspec.UNSET),  # type: ignore[valid-type]
            ("nextIndex", Any, None),
            ("timeZoneOffset", Any, None),
        ])
        self._decoder = msgspec.json.Decoder(self._envelope)

    def __call__(self, body: Body, index: int) -> Page:
        """The envelope of one page, checked for shape. Raises PollError, naming the problem, never the content."""
        try:
            envelope = self._decoder.decode(body)
        except msgspec.DecodeError:  # not JSON, or not the expected shape: the stdlib says which
            envelope = msgspec.convert(_checked(_decode_leniently(body, index), index), self._envelope)
        except RecursionError:
            raise PollError("bad_response", f"page at index {index} is nested too deeply") from None
        if envelope.records is msgspec.UNSET:
            raise PollError("bad_response", f"page at index {index} has no 'records' list")
        return Page(records=envelope.records or [],  # some servers send null rather than [] when nothing matches
                    next_index=as_int(envelope.nextIndex),
                    tz_offset=as_int(envelope.timeZoneOffset, _OFFSET_TEXT))


@cache
def page_reader(keys: tuple[str, ...]) -> PageReader:
    """The PageReader for a set of record keys, made once: each poll of a target reads the same keys."""
    return PageReader(keys)


def _decode_leniently(body: Body, index: int) -> Any:
    """The stdlib's json, which also accepts what msgspec refuses: lone surrogates, a BOM, NaN, huge integers."""
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        problem = "is truncated JSON" if body.lstrip()[:1] in (b"{", b"[") else "is not JSON"
        raise PollError("bad_response", f"page at index {index} {problem}") from None
    except ValueError:  # the only other kind: an integer longer than int() converts (4300 digits by default)
        raise PollError("bad_response", f"page at index {index} holds a number too long to read") from None
    except RecursionError:
        raise PollError("bad_response", f"page at index {index} is nested too deeply") from None


def _checked(envelope: Any, index: int) -> dict[str, Any]:
    """The envelope, if it has the shape of a page: an object whose records, if any, are a list of objects."""
    records = envelope.get("records", []) if isinstance(envelope, dict) else ...
    if not isinstance(records, list | None):
        raise PollError("bad_response", f"page at index {index} has no 'records' list")
    if records and not all(isinstance(record, dict) for record in records):
        raise PollError("bad_response", f"page at index {index} holds a record that is not a JSON object")
    return envelope


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
