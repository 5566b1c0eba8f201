"""The simulator's clients API over real loopback HTTP: paging, the envelope, filters, auth, export, the process."""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from cmx_connect_exporter.counting.dimensions import AUTHTYPE, DEVICE, DIMENSIONS, LANGUAGE, OS, Dimension
from cmx_simulator import Simulator
from exporter_process import self_signed_certificate
from sim_http import SIM_AUTH, canonical, local_time, macs, page_all, sim_get

CLIENTS = "/api/connect/v1/clients"
EXPORT = CLIENTS + "/export"
ENVELOPE_KEYS = ["nextIndex", "timeZoneOffset", "queryRecordCount", "timeZone", "records", "returnRecordCount"]
OFFSET_MS = -14400000  # the envelope's timeZoneOffset, as on the API page


def login(record: dict) -> int:
    return local_time(record["lastLoginTime"], OFFSET_MS)


# --- paging and the envelope ---------------------------------------------------------------


@pytest.mark.parametrize("count", [1000, 37])
def test_paging_covers_every_active_session_once(sim: Simulator, http: requests.Session, count: int) -> None:
    records = page_all(http, sim, count=count, status="active")
    assert len(records) == len(set(macs(records))) == sim.active_counts().total == 1400
    assert {r["state"] for r in records} == {"ACTIVE"}
    logins = [login(r) for r in records]
    assert logins == sorted(logins, reverse=True)


def test_envelope_and_the_1000_cap(sim: Simulator, http: requests.Session) -> None:
    body = sim_get(http, sim, count=5000).json()
    assert list(body) == ENVELOPE_KEYS
    assert body["timeZoneOffset"] == OFFSET_MS
    assert body["timeZone"] == "Eastern Standard Time"
    assert body["queryRecordCount"] == body["returnRecordCount"] == len(body["records"]) == 1000
    assert body["nextIndex"] == 1000


def test_last_page_has_next_index_zero(http: requests.Session) -> None:
    with Simulator(400, active_fraction=0.5, seed=5) as exact:
        first = sim_get(http, exact, status="active", count=100, index=100).json()  # a full, final page
        beyond = sim_get(http, exact, status="active", count=100, index=200).json()
        short = sim_get(http, exact, status="active", count=150, index=150).json()
    assert (first["returnRecordCount"], first["nextIndex"]) == (100, 0)
    assert (beyond["returnRecordCount"], beyond["nextIndex"]) == (0, 0)
    assert (short["returnRecordCount"], short["nextIndex"], short["queryRecordCount"]) == (50, 0, 150)


def test_status_all_includes_inactive_sessions(sim: Simulator, http: requests.Session) -> None:
    everyone = page_all(http, sim)
    assert len(everyone) == 2000
    assert Counter(r["state"] for r in everyone) == {"ACTIVE": 1400, "INACTIVE": 600}


@pytest.mark.parametrize("params", [{"count": "x"}, {"index": "-1"}, {"start": "soon"}, {"status": "gone"}])
def test_invalid_parameters_get_400(sim: Simulator, http: requests.Session, params: dict) -> None:
    response = sim_get(http, sim, **params)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")


# --- filters: the API's parameters are spelled as the catalogue's labels --------------------


@pytest.mark.parametrize(
    ("dimension", "value", "expected"),
    [
        (AUTHTYPE, "sms", "SMS"),
        (OS, "Mac OS X", "Mac OS X"),
        (DEVICE, "Tablet", "Tablet"),
        (LANGUAGE, "French", "French"),
        (LANGUAGE, "fr", "French"),
        (LANGUAGE, "ES", "Spanish"),
    ],
    ids=lambda v: v.label if isinstance(v, Dimension) else v,
)
def test_label_filters(sim: Simulator, http: requests.Session, dimension: Dimension, value: str, expected: str) -> None:
    records = page_all(http, sim, status="active", **{dimension.label: value})
    assert records
    assert {canonical(r, dimension.keys) for r in records} == {expected}
    assert len(records) == sim.active_counts().by_label[dimension.label][expected]


def test_mac_filter_normalises_and_ignores_everything_else(sim: Simulator, http: requests.Session) -> None:
    inactive = next(r for r in sim_get(http, sim).json()["records"] if r["state"] == "INACTIVE")
    spelled = inactive["macAddress"].upper().replace(":", "-")
    body = sim_get(http, sim, mac=spelled, status="active", index=50, count="x").json()
    assert body["records"] == [inactive]
    assert sim_get(http, sim, mac="02:00:00:00:00:00").json()["records"] == []


def test_all_searches_every_field(sim: Simulator, http: requests.Session) -> None:
    target = sim_get(http, sim, count=1, index=10).json()["records"][0]
    records = page_all(http, sim, all=target["Email"].upper())
    assert target in records
    assert all(any(target["Email"] in str(v) for v in r.values()) for r in records)


def test_start_and_end_bound_the_last_login_in_epoch_seconds(sim: Simulator, http: requests.Session) -> None:
    everyone = page_all(http, sim)
    start, end = login(everyone[1500]), login(everyone[500])
    within = [r for r in everyone if start <= login(r) <= end]
    assert 900 <= len(within) < len(everyone)
    assert page_all(http, sim, start=start, end=end) == within
    assert len(page_all(http, sim, count=300, start=start)) == len([r for r in everyone if login(r) >= start])


# --- auth, export ----------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("demo", "wrong")])
def test_bad_credentials_get_401_with_the_realm(sim: Simulator, auth: tuple[str, str] | None) -> None:
    before = sim.requests_served
    response = requests.get(sim.url + CLIENTS, auth=auth, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="MSE API Service"'
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sim.requests_served == before + 1


def test_export_is_csv_of_the_whole_query(sim: Simulator, http: requests.Session) -> None:
    social = {AUTHTYPE.label: "social"}
    response = sim_get(http, sim, EXPORT, status="active", **social)
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == sim.active_counts().by_label[AUTHTYPE.label]["social"]
    first = sim_get(http, sim, status="active", **social).json()["records"][0]
    assert rows[0]["macAddress"] == first["macAddress"]
    assert {d.keys[0] for d in DIMENSIONS} | {"location/Site", "portal", "type", "lastLoginTime"} <= set(rows[0])
    assert rows[0]["lastLoginTime"] == first["lastLoginTime"]
    assert len(list(csv.reader(io.StringIO(sim_get(http, sim, EXPORT).text)))) == 2001  # header + everyone
    assert len(list(csv.reader(io.StringIO(sim_get(http, sim, EXPORT, **{OS.label: "none"}).text)))) == 1  # the header


def test_error_rate_and_latency(fresh_sim: Simulator, http: requests.Session) -> None:
    fresh_sim.error_rate = 1.0
    response = sim_get(http, fresh_sim)
    assert (response.status_code, response.text) == (500, "CMX Error")
    fresh_sim.error_rate, fresh_sim.latency = 0.0, 0.2
    began = time.monotonic()
    assert sim_get(http, fresh_sim).status_code == 200
    assert time.monotonic() - began >= 0.2


# --- standalone and TLS ---------------------------------------------------------------------


def test_command_line_serves_until_sigterm() -> None:
    env = {**os.environ, "SIM_PASSWORD": "s3cret"}
    cmd = [sys.executable, "-m", "cmx_simulator", "--port", "0", "--sessions", "50", "--churn", "1",
           "--time-format", "epoch_ms_number"]  # fmt: skip
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent) as proc:
        try:
            assert proc.stderr is not None
            url = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stderr.readline()).group(1)
            body = requests.get(url + CLIENTS, auth=("demo", "s3cret"), timeout=5).json()
            assert body["returnRecordCount"] == 51  # one guest churned in
            assert isinstance(body["records"][0]["lastLoginTime"], int)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()  # only if an assertion left it running


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with Simulator(20, certfile=str(cert), keyfile=str(key)) as secure:
        assert secure.url.startswith("https://127.0.0.1:")
        response = requests.get(secure.url + CLIENTS, auth=SIM_AUTH, verify=str(cert), timeout=5)
        assert response.json()["returnRecordCount"] == 20
