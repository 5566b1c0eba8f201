"""The simulator over HTTP, read by rules written out here, apart from the simulator's code."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import requests

from cmx_connect_exporter.cmx.client import CLIENTS_PATH
from cmx_simulator import Simulator

SIM_AUTH = ("demo", "demo")


def sim_get(http: requests.Session, sim: Simulator, path: str = CLIENTS_PATH, **params: object) -> requests.Response:
    return http.get(sim.url + path, params=params, timeout=5)


def page_all(http: requests.Session, sim: Simulator, count: int = 1000, **params: object) -> list[dict]:
    """Every record of a query, paging the way the exporter does, checking each envelope on the way."""
    records: list[dict] = []
    index = 0
    while True:
        body = sim_get(http, sim, index=index, count=count, **params).json()
        assert body["returnRecordCount"] == len(body["records"]) <= count
        records += body["records"]
        if body["nextIndex"] == 0:
            return records
        assert body["nextIndex"] == index + count
        index = body["nextIndex"]


def macs(records: list[dict]) -> list[str]:
    return [r["macAddress"] for r in records]


def canonical(record: dict, keys: Sequence[str]) -> str:
    """The first of ``keys`` in the record, trimmed, inner white space folded, case kept,
    empty/missing/null as unknown, cut to 64 characters."""
    value = next((record[key] for key in keys if key in record), None)
    text = "" if value is None else " ".join(str(value).split())
    return (text or "unknown")[:64]


def local_time(text: str, offset_ms: int) -> int:
    """Epoch seconds of "YYYY-MM-DD HH:MM:SS" in a CMX's local time, which is UTC plus ``offset_ms``."""
    zone = datetime.timezone(datetime.timedelta(milliseconds=offset_ms))
    return int(datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone).timestamp())
