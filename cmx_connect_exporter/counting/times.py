"""Times in CMX records, read tolerantly: the format real servers send is not documented.

Accepted: epoch seconds or milliseconds, as numbers or numeric text (a value above 10**11 is taken
as milliseconds: as seconds it would lie past the year 5000); ISO 8601 with an offset; and local
times without one, ``YYYY-MM-DD HH:MM:SS[.fff]`` or ISO 8601 without an offset, read in CMX's time
zone from the envelope's ``timeZoneOffset``. Anything else, zero or negative, is unreadable (None):
never guessed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from itertools import repeat
from operator import sub
from typing import Any, cast

_MS_ABOVE = 10**11
_MAX_NUMBER = 10**15  # milliseconds past the year 33000: no time at all
_EPOCH = datetime(1970, 1, 1)
_fromisoformat = datetime.fromisoformat
_NUMBER = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,9})?")
_MAX_TEXT = 40  # longer is no time; fromisoformat is never handed a huge string
# timeZoneOffset's unit: the reference says milliseconds. A value beyond 14 hours in seconds is
# milliseconds; one up to 14 hours in minutes is minutes; anything between, seconds.
_MAX_OFFSET_S = 14 * 3600
_MAX_OFFSET_MIN = 14 * 60
DAY = 86400
_LOCAL_FORM_LENGTH = len("2026-11-18 07:06:40")
_LOCAL_FORM_MARKS = ((4, "-"), (7, "-"), (10, " T"), (13, ":"), (16, ":"))  # where, and what may stand there
_ORDINAL_1970 = _EPOCH.toordinal()


def offset_seconds(tz_offset: int | None) -> int | None:
    """CMX's offset from UTC in seconds, from the envelope's timeZoneOffset, whatever its unit."""
    if tz_offset is None:
        return None
    size = abs(tz_offset)
    if size > _MAX_OFFSET_S:
        seconds = round(tz_offset / 1000)
    elif size <= _MAX_OFFSET_MIN:
        seconds = tz_offset * 60
    else:
        seconds = tz_offset
    return seconds if abs(seconds) <= _MAX_OFFSET_S else None


def epoch_seconds(value: Any, offset_s: int | None) -> float | None:
    """Epoch seconds of a record's time; None when it cannot be read, or a local time has no known zone.

    Runs twice a record, so the likely forms come first and cost one call to the C parser.
    """
    if value.__class__ is str:
        if len(value) > _MAX_TEXT:
            return None
        if value.isdigit() and value.isascii():
            return _from_number(int(value))
        try:
            moment = _fromisoformat(value)
        except ValueError:  # the rarer forms: white space around it, a number with a fraction
            return _from_padded_text(value.strip(), offset_s)
        if moment.tzinfo is not None:
            return _after_epoch(moment.timestamp())
        if offset_s is None:
            return None
        since = moment - _EPOCH
        if since.microseconds:
            return _after_epoch(since.total_seconds() - offset_s)
        seconds = since.days * DAY + since.seconds - offset_s  # whole seconds, in ints: total_seconds() is slower
        return float(seconds) if seconds > 0 else None
    if value.__class__ is int or value.__class__ is float:
        return _from_number(value)
    return None  # null, bool, lists and objects


def _from_number(number: float) -> float | None:
    if not 0 < number < _MAX_NUMBER:  # also NaN, and integers too large to divide into a float
        return None
    return number / 1000 if number > _MS_ABOVE else float(number)


def _after_epoch(seconds: float) -> float | None:
    """A time at or before 1970 is a placeholder for none (such as 1970-01-01 or 0001-01-01), as 0 is."""
    return seconds if seconds > 0 else None


def _from_padded_text(text: str, offset_s: int | None) -> float | None:
    if _NUMBER.fullmatch(text):
        return _from_number(float(text))
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return None
    return epoch_seconds(text, offset_s)


def local_form_seconds(texts: list[Any], offset_s: int | None) -> list[float | None] | None:
    """``epoch_seconds`` of each of ``texts``, read in C, when all are in CMX's local form (``_local_form``)
    and after the epoch; None if any is not, or there is no offset to read them with."""
    moments = _local_form(texts) if offset_s is not None else None
    if moments is None:
        return None
    seconds = list(map(sub, map(timedelta.total_seconds, map(sub, moments, repeat(_EPOCH))), repeat(offset_s)))
    return cast(list[float | None], seconds) if min(seconds) > 0 else None  # as epoch_seconds types its results


def local_form_days(texts: list[Any]) -> list[int] | None:
    """The local days, counted from 1970-01-01, of times all in CMX's local form (``_local_form``), each on
    1970-01-03 or later, read in C; None if any is not. Such a time's date is its local day, whatever the
    offset, and ``epoch_seconds`` reads it so too."""
    moments = _local_form(texts)
    if moments is None:
        return None
    days = [ordinal - _ORDINAL_1970 for ordinal in map(datetime.toordinal, moments)]
    return days if min(days) > 1 else None  # earlier, epoch_seconds may find it at or before the epoch


def _local_form(texts: list[Any]) -> list[datetime] | None:
    """``texts`` read, if all are in CMX's local form, ``YYYY-MM-DD HH:MM:SS`` (or with a ``T``), and valid."""
    if not texts or set(map(type, texts)) != {str} or set(map(len, texts)) != {_LOCAL_FORM_LENGTH}:
        return None
    joined = "".join(texts)
    if any(joined[at::_LOCAL_FORM_LENGTH].strip(marks) for at, marks in _LOCAL_FORM_MARKS):
        return None
    try:
        return list(map(_fromisoformat, texts))
    except ValueError:
        return None


def local_day(epoch_s: float, offset_s: int) -> int:
    """The day an instant falls on in CMX's local time, counted from 1970-01-01."""
    return int((epoch_s + offset_s) // DAY)

