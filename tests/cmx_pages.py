"""CMX records and pages as real servers send them, answered through ``responses``; and a poll over them."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import responses
from responses import matchers

from cmx_connect_exporter.cmx.client import CLIENTS_PATH, CmxClient
from cmx_connect_exporter.cmx.wire import Page, page_reader
from cmx_connect_exporter.counting.dimensions import AUTHTYPE, DEVICE, LANGUAGE, OS
from cmx_connect_exporter.counting.tally import Tally
from cmx_connect_exporter.outcome import Counts
from cmx_connect_exporter.polling.poll import count_active_sessions

BASE_URL = "https://cmx.test"
ENDPOINT = BASE_URL + CLIENTS_PATH
_macs = itertools.count(0x0200_0000_0000)


def record(mac: str | None = None, **fields: Any) -> dict[str, Any]:
    """A session record; defaults are plausible, any field can be overridden or set to None."""
    base: dict[str, Any] = {
        "macAddress": mac or ":".join(f"{next(_macs):012x}"[i:i + 2] for i in range(0, 12, 2)),
        AUTHTYPE.keys[0]: "SMS",
        OS.keys[0]: "iOS",
        DEVICE.keys[0]: "Mobile",
        LANGUAGE.keys[0]: "English",
        "state": "ACTIVE",
        "Name": "Jane Doe",
        "Email": "jane.doe@example.com",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def envelope(records: list[Any], next_index: Any = 0, count: int = 1000) -> dict[str, Any]:
    return {"nextIndex": next_index, "timeZoneOffset": -14400000, "queryRecordCount": count,
            "timeZone": "Eastern Standard Time", "records": records, "returnRecordCount": len(records)}


def add_page(rsps: responses.RequestsMock, index: int, count: int, body: Any, status: int = 200,
             headers: dict[str, str] | None = None, since: int | None = None) -> None:
    """Answer one exact page request, of active sessions or (``since``) of every login since then;
    ``body`` is JSON-encoded unless it is already bytes or str."""
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    query = {"status": "active", "index": str(index), "count": str(count)}
    if since is not None:
        query.update(status="all", start=str(since))
    rsps.get(ENDPOINT, body=raw, status=status, headers=headers, match=[matchers.query_param_matcher(query)])


def make_client(**overrides: Any) -> CmxClient:
    options: dict[str, Any] = {"username": "api", "password": "s3cr3t-canary", "timeout": 5.0}
    options.update(overrides)
    return CmxClient(BASE_URL, **options)


def read_page(body: bytes | bytearray, index: int = 0) -> Page:
    """A page decoded as a poll with the default options reads it."""
    return page_reader(Tally().keys)(body, index)


def as_records(objects: list[dict[str, Any]], keys: tuple[str, ...] | None = None) -> list[Any]:
    """JSON objects as a page carries them once read for ``keys`` (by default, a default poll's): sent as JSON
    and decoded as a poll decodes it."""
    body = json.dumps({"records": objects}).encode()
    return page_reader(Tally().keys if keys is None else keys)(body, 0).records


def count_records(tally: Tally, records: list[dict[str, Any]], tz_offset: int | None = None) -> int:
    """Count JSON objects as a page would carry them: as records of the keys the tally reads."""
    return tally.add_page(as_records(records, tally.keys), tz_offset)


def poll(page_size: int, max_pages: int = 100, max_label_values: int = 50, concurrency: int = 1) -> Counts:
    return count_active_sessions(make_client().fetch_body, page_size=page_size, max_pages=max_pages,
                                 max_label_values=max_label_values, concurrency=concurrency)


def slow_poll(page_size: int, concurrency: int, expected_sessions: int) -> Counts:
    """A poll whose pages take 20 ms each, so that every request sent ahead is made before the walk ends."""
    fetch_body = make_client().fetch_body

    def fetch_slowly(index: int, count: int) -> bytes | bytearray:
        time.sleep(0.02)
        return fetch_body(index, count)

    return count_active_sessions(fetch_slowly, page_size=page_size, max_pages=100, max_label_values=50,
                                 concurrency=concurrency, expected_sessions=expected_sessions)


def serve_pages(rsps: responses.RequestsMock, pages: list[list[dict[str, Any]]], page_size: int,
                next_index: Any = "auto") -> None:
    """Serve consecutive pages the way CMX does: nextIndex names the next page while there is one."""
    index = 0
    for number, records in enumerate(pages):
        last = number == len(pages) - 1
        nxt = (0 if last else index + len(records)) if next_index == "auto" else next_index
        add_page(rsps, index, page_size, envelope(records, nxt, page_size))
        index += len(records)


def requested_indexes(rsps: responses.RequestsMock) -> list[str]:
    return [call.request.params["index"] for call in rsps.calls]
