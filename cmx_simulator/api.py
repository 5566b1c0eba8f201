"""The clients API as the reference describes it: queries parsed, pages chosen and wrapped, CSV export.

Everything here works on a population the caller holds still (the simulator's lock); nothing
here speaks HTTP.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from cmx_connect_exporter.counting.dimensions import LANGUAGE
from cmx_simulator.population import TIME_ZONE, TIME_ZONE_OFFSET_MS, Population, Session
from cmx_simulator.records import Records
from cmx_simulator.vocabulary import (
    ALIAS_KEYS,
    LABELS,
    LANGUAGE_BY_CODE,
    PORTAL_KEY,
    PORTAL_TYPE_KEY,
    RECORD_KEYS,
    SITE_KEY,
)

CLIENTS_PATH = "/api/connect/v1/clients"
EXPORT_PATH = CLIENTS_PATH + "/export"
MAX_COUNT = 1000
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
CSV = "text/csv; charset=utf-8"

# The export's columns are not documented; these are the record's keys, the registration form's last.
CSV_COLUMNS = (
    "macAddress", *RECORD_KEYS.values(), "state", PORTAL_KEY, PORTAL_TYPE_KEY, "agent",
    "firstLoginTime", "lastLoginTime", "lastAcceptTime", "lastLogoutTime", "bytesSent", "bytesReceived",
    "bandwidth", SITE_KEY, "Name", "Email", "Company Name", "Industry",
)  # fmt: skip
_CSV_ALIASES = {RECORD_KEYS[label]: ALIAS_KEYS[label] for label in LABELS}


@dataclass(frozen=True)
class Query:
    """A parsed clients/export query."""

    active_only: bool = False
    index: int = 0
    count: int = MAX_COUNT
    mac: str | None = None
    match: Callable[[Session], bool] | None = None


class BadQuery(ValueError):
    """A query parameter the server cannot use; answered with 400."""


def parse_mac(text: str) -> int | None:
    """Accept any separator and case, as the ``mac`` filter should; None when not a MAC."""
    digits = re.sub(r"[\s:.\-]", "", text)
    if len(digits) != 12:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


def _label_test(slot: int, wanted: str) -> Callable[[Session], bool]:
    """Match one canonical label value, ignoring case, as a search box would."""
    folded = wanted.casefold()
    return lambda s: s.labels[slot].casefold() == folded


def _int_param(params: dict[str, str], name: str, minimum: int | None = None) -> int | None:
    """The integer parameter ``name``, None when absent; BadQuery when not a (large enough) integer."""
    if name not in params:
        return None
    try:
        value = int(params[name])
    except ValueError:
        raise BadQuery(f"invalid {name}") from None
    if minimum is not None and value < minimum:
        raise BadQuery(f"invalid {name}")
    return value


def _search_text(records: Records, s: Session) -> str:
    return "\n".join(str(v) for v in records.fields(s).values() if v is not None).casefold()


def parse_query(query: str, records: Records) -> Query:
    """Turn the query string into a Query; raises BadQuery for unusable values.

    The API's filter parameters are spelled as the catalogue's labels, so each label is a filter.
    """
    params = {k: v[-1] for k, v in parse_qs(query).items()}
    if "mac" in params:  # with a MAC, every other parameter is ignored
        return Query(mac=params["mac"])
    status = params.get("status", "all").lower()
    if status not in ("all", "active"):
        raise BadQuery("invalid status")
    index = _int_param(params, "index", minimum=0)
    count = _int_param(params, "count", minimum=0)
    start = _int_param(params, "start")
    end = _int_param(params, "end")
    tests: list[Callable[[Session], bool]] = []
    for slot, label in enumerate(LABELS):
        if label in params:
            wanted = params[label].strip()
            if label == LANGUAGE.label:
                wanted = LANGUAGE_BY_CODE.get(wanted.lower(), wanted)
            tests.append(_label_test(slot, wanted))
    if start is not None:
        tests.append(lambda s: s.login >= start)
    if end is not None:
        tests.append(lambda s: s.login <= end)
    if "all" in params:
        needle = params["all"].casefold()
        tests.append(lambda s: needle in _search_text(records, s))
    return Query(
        active_only=status == "active",
        index=index or 0,
        count=MAX_COUNT if count is None else min(count, MAX_COUNT),
        match=(lambda s: all(test(s) for test in tests)) if tests else None,
    )


def select(population: Population, q: Query, limit: int | None) -> tuple[list[Session], bool]:
    """Sessions for q from q.index, newest first, at most ``limit``; and whether more remain.

    Unfiltered pages are an O(limit) slice; filtered ones scan only until the page is full.
    """
    if q.mac is not None:
        mac = parse_mac(q.mac)
        found = population.find(mac) if mac is not None else None
        return ([found] if found else []), False
    if q.match is None:
        return population.newest(q.active_only, q.index, limit)
    matches = filter(q.match, population.newest_first(q.active_only))
    stop = None if limit is None else q.index + limit + 1
    chosen = list(itertools.islice(matches, q.index, stop))
    more = limit is not None and len(chosen) > limit
    return chosen[:limit], more


def envelope(records: list[bytes], next_index: int, count: int) -> bytes:
    """The clients envelope, built around pre-encoded records with one join."""
    return b"".join(
        (
            b'{"nextIndex":%d,"timeZoneOffset":%d,"queryRecordCount":%d,' % (next_index, TIME_ZONE_OFFSET_MS, count),
            b'"timeZone":"%s","records":[' % TIME_ZONE.encode(),
            b",".join(records),
            b'],"returnRecordCount":%d}' % len(records),
        )
    )


def _csv_field(record: dict[str, object], column: str) -> object:
    """A record's value for a CSV column, also under the key spellings other deployments use."""
    for key in (column, *_CSV_ALIASES.get(column, ())):
        if key in record:
            return "" if record[key] is None else record[key]
    return ""


def csv_export(batches: Iterable[list[dict[str, object]]]) -> Iterator[bytes]:
    """The export's CSV, a chunk per batch of records after the header, so a million rows never sit in memory."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for batch in batches:
        writer.writerows([_csv_field(r, col) for col in CSV_COLUMNS] for r in batch)
        yield buf.getvalue().encode()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue().encode()  # the header alone when there was no batch
