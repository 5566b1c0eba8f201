"""Builders shared by the unit tests: CMX records and pages as real servers send them."""

from __future__ import annotations

import itertools
import json
import os
import shutil
from typing import Any

import pytest
import responses
from responses import matchers

from exporter.client import CLIENTS_PATH, CmxClient

BASE_URL = "https://cmx.test"
ENDPOINT = BASE_URL + CLIENTS_PATH
_macs = itertools.count(0x0200_0000_0000)


def record(mac: str | None = None, **fields: Any) -> dict[str, Any]:
    """A session record; defaults are plausible, any field can be overridden or set to None."""
    base: dict[str, Any] = {
        "macAddress": mac or ":".join(f"{next(_macs):012x}"[i:i + 2] for i in range(0, 12, 2)),
        "authType": "SMS",
        "operationSystem": "iOS",
        "device": "Mobile",
        "language": "English",
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
             headers: dict[str, str] | None = None) -> None:
    """Answer one exact page request; ``body`` is JSON-encoded unless it is already bytes or str."""
    raw = body if isinstance(body, bytes | str) else json.dumps(body)
    rsps.get(ENDPOINT, body=raw, status=status, headers=headers,
             match=[matchers.query_param_matcher({"status": "active", "index": str(index), "count": str(count)})])


def make_client(**overrides: Any) -> CmxClient:
    options: dict[str, Any] = {"username": "api", "password": "s3cr3t-canary", "timeout": 5.0}
    options.update(overrides)
    return CmxClient(BASE_URL, **options)


def require_tool(name: str) -> str:
    """The tool's path; skip without it, except in CI, where a missing tool is a failure."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI but was not found on PATH")
        pytest.skip(f"{name} not installed")
    return path
