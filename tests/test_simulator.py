"""The CMX Connect simulator over real loopback HTTP: API, ground truth, churn and faults."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cmx_simulator import Simulator
from exporter_process import self_signed_certificate

CLIENTS = "/api/connect/v1/clients"
EXPORT = CLIENTS + "/export"
AUTH = ("demo", "demo")
ENVELOPE_KEYS = ["nextIndex", "timeZoneOffset", "queryRecordCount", "timeZone", "records", "returnRecordCount"]

# The canonical label rules, written out here independently of the simulator and the exporter.
LABEL_KEYS = {
    "authtype": ("authType", "authtype"),
    "os": ("operationSystem", "os", "operatingSystem"),
    "device": ("device",),
    "language": ("language",),
}


def canonical(record: dict, label: str) -> str:
    """Trim, fold inner white space, keep case, empty/missing/null -> unknown, cut to 64 characters."""
    value = next((record[key] for key in LABEL_KEYS[label] if key in record), None)
    text = "" if value is None else " ".join(str(value).split())
    return (text or "unknown")[:64]


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A shared, unchanging population; tests that change a simulator get their own."""
    with Simulator(2000, seed=7) as server:
        yield server


@pytest.fixture
def fresh() -> Iterator[Simulator]:
    with Simulator(300, seed=3) as server:
        yield server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = AUTH
        yield session


def get(http: requests.Session, sim: Simulator, path: str = CLIENTS, **params: object) -> requests.Response:
    return http.get(sim.url + path, params=params, timeout=5)


def page_all(http: requests.Session, sim: Simulator, count: int = 1000, **params: object) -> list[dict]:
    """Every record of a query, paging the way the exporter does, checking each envelope on the way."""
    records: list[dict] = []
    index = 0
    while True:
        body = get(http, sim, index=index, count=count, **params).json()
        assert body["returnRecordCount"] == len(body["records"]) <= count
        records += body["records"]
        if body["nextIndex"] == 0:
            return records
        assert body["nextIndex"] == index + count
        index = body["nextIndex"]


def macs(records: list[dict]) -> list[str]:
    return [r["macAddress"] for r in records]


# --- paging and the envelope ---------------------------------------------------------------


@pytest.mark.parametrize("count", [1000, 37])
def test_paging_covers_every_active_session_once(sim: Simulator, http: requests.Session, count: int) -> None:
    records = page_all(http, sim, count=count, status="active")
    assert len(records) == len(set(macs(records))) == sim.active_counts().total == 1400
    assert {r["state"] for r in records} == {"ACTIVE"}
    logins = [r["lastLoginTime"] for r in records]
    assert logins == sorted(logins, reverse=True)


def test_envelope_and_the_1000_cap(sim: Simulator, http: requests.Session) -> None:
    body = get(http, sim, count=5000).json()
    assert list(body) == ENVELOPE_KEYS
    assert body["timeZoneOffset"] == -14400000
    assert body["timeZone"] == "Eastern Standard Time"
    assert body["queryRecordCount"] == body["returnRecordCount"] == len(body["records"]) == 1000
    assert body["nextIndex"] == 1000


def test_last_page_has_next_index_zero() -> None:
    with Simulator(400, active_fraction=0.5, seed=5) as exact, requests.Session() as http:
        http.auth = AUTH
        first = get(http, exact, status="active", count=100, index=100).json()  # a full, final page
        beyond = get(http, exact, status="active", count=100, index=200).json()
        short = get(http, exact, status="active", count=150, index=150).json()
    assert (first["returnRecordCount"], first["nextIndex"]) == (100, 0)
    assert (beyond["returnRecordCount"], beyond["nextIndex"]) == (0, 0)
    assert (short["returnRecordCount"], short["nextIndex"], short["queryRecordCount"]) == (50, 0, 150)


def test_status_all_includes_inactive_sessions(sim: Simulator, http: requests.Session) -> None:
    everyone = page_all(http, sim)
    assert len(everyone) == 2000
    assert Counter(r["state"] for r in everyone) == {"ACTIVE": 1400, "INACTIVE": 600}


@pytest.mark.parametrize("params", [{"count": "x"}, {"index": "-1"}, {"start": "soon"}, {"status": "gone"}])
def test_invalid_parameters_get_400(sim: Simulator, http: requests.Session, params: dict) -> None:
    response = get(http, sim, **params)
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("text/plain")


# --- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "label", "expected"),
    [
        ("authtype", "sms", "authtype", "SMS"),
        ("os", "Mac OS X", "os", "Mac OS X"),
        ("device", "Tablet", "device", "Tablet"),
        ("language", "French", "language", "French"),
        ("language", "fr", "language", "French"),
        ("language", "ES", "language", "Spanish"),
    ],
)
def test_label_filters(
    sim: Simulator, http: requests.Session, param: str, value: str, label: str, expected: str
) -> None:
    records = page_all(http, sim, status="active", **{param: value})
    assert records
    assert {canonical(r, label) for r in records} == {expected}
    assert len(records) == sim.active_counts().by_label[label][expected]


def test_mac_filter_normalises_and_ignores_everything_else(sim: Simulator, http: requests.Session) -> None:
    inactive = next(r for r in get(http, sim).json()["records"] if r["state"] == "INACTIVE")
    spelled = inactive["macAddress"].upper().replace(":", "-")
    body = get(http, sim, mac=spelled, status="active", index=50, count="x").json()
    assert body["records"] == [inactive]
    assert get(http, sim, mac="02:00:00:00:00:00").json()["records"] == []


def test_all_searches_every_field(sim: Simulator, http: requests.Session) -> None:
    target = get(http, sim, count=1, index=10).json()["records"][0]
    records = page_all(http, sim, all=target["Email"].upper())
    assert target in records
    assert all(any(target["Email"] in str(v) for v in r.values()) for r in records)


def test_start_and_end_bound_the_last_login(sim: Simulator, http: requests.Session) -> None:
    everyone = page_all(http, sim)
    start, end = everyone[1500]["lastLoginTime"] // 1000, everyone[500]["lastLoginTime"] // 1000
    within = [r for r in everyone if start <= r["lastLoginTime"] // 1000 <= end]
    assert page_all(http, sim, start=start, end=end) == within
    assert len(page_all(http, sim, count=300, start=start)) == len(
        [r for r in everyone if r["lastLoginTime"] >= start * 1000]
    )


# --- auth, export, ground truth -------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, ("demo", "wrong")])
def test_bad_credentials_get_401_with_the_realm(sim: Simulator, auth: tuple[str, str] | None) -> None:
    before = sim.requests_served
    response = requests.get(sim.url + CLIENTS, auth=auth, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="MSE API Service"'
    assert response.headers["Content-Type"].startswith("text/plain")
    assert sim.requests_served == before + 1


def test_export_is_csv_of_the_whole_query(sim: Simulator, http: requests.Session) -> None:
    response = get(http, sim, EXPORT, status="active", authtype="social")
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == sim.active_counts().by_label["authtype"]["social"]
    assert (
        rows[0]["macAddress"] == get(http, sim, status="active", authtype="social").json()["records"][0]["macAddress"]
    )
    assert len(list(csv.reader(io.StringIO(get(http, sim, EXPORT).text)))) == 2001  # header + everyone


def test_active_counts_match_the_api_under_the_canonical_rules(sim: Simulator, http: requests.Session) -> None:
    records = page_all(http, sim, status="active")
    truth = sim.active_counts()
    assert truth.total == len(records)
    for label in LABEL_KEYS:
        assert truth.by_label[label] == Counter(canonical(r, label) for r in records), label
        assert sum(truth.by_label[label].values()) == truth.total


def test_population_is_realistically_messy(sim: Simulator, http: requests.Session) -> None:
    records = page_all(http, sim)
    sent = [r.get(key) for r in records for keys in LABEL_KEYS.values() for key in keys if key in r]
    assert any(v is None for v in sent), "null"
    assert "" in sent, "empty"
    assert any(isinstance(v, str) and v != " ".join(v.split()) and v.strip() for v in sent), "untidy white space"
    assert any(isinstance(v, str) and len(v) > 64 for v in sent), "over-long"
    assert any("authtype" in r or "os" in r or "operatingSystem" in r for r in records), "alternate keys"
    assert any(not any(k in r for k in LABEL_KEYS["device"]) for r in records), "missing key"
    assert "android" in sim.active_counts().by_label["os"], "case is kept"
    assert {"Name", "Email", "Company Name", "Industry", "location/Site", "agent"} <= set(records[0])


def test_population_is_deterministic_per_seed() -> None:
    def first_macs(seed: int) -> list[str]:
        with Simulator(200, seed=seed) as server:
            return macs(requests.get(server.url + CLIENTS, auth=AUTH, timeout=5).json()["records"])

    assert first_macs(11) == first_macs(11) != first_macs(12)


# --- run-time behaviour: churn, errors, latency ----------------------------------------------


def test_churn_shifts_pages_and_keeps_the_total(fresh: Simulator, http: requests.Session) -> None:
    before = fresh.active_counts()
    page = macs(get(http, fresh, status="active", count=50).json()["records"])
    oldest = macs(get(http, fresh, status="active", index=before.total - 3).json()["records"])
    fresh.churn = 3
    shifted = macs(get(http, fresh, status="active", count=50).json()["records"])
    fresh.churn = 0
    assert shifted[3:] == page[:-3]
    assert not set(shifted[:3]) & set(macs(page_all(http, fresh)[3:]))  # new MACs
    assert fresh.active_counts().total == before.total == len(page_all(http, fresh, status="active"))
    assert {get(http, fresh, mac=mac).json()["records"][0]["state"] for mac in oldest} == {"INACTIVE"}
    truth = fresh.active_counts().by_label
    assert truth["os"] == Counter(canonical(r, "os") for r in page_all(http, fresh, status="active"))


def test_error_rate_and_latency(fresh: Simulator, http: requests.Session) -> None:
    fresh.error_rate = 1.0
    response = get(http, fresh)
    assert (response.status_code, response.text) == (500, "CMX Error")
    fresh.error_rate, fresh.latency = 0.0, 0.2
    began = time.monotonic()
    assert get(http, fresh).status_code == 200
    assert time.monotonic() - began >= 0.2


# --- faults ---------------------------------------------------------------------------------


def test_body_faults(fresh: Simulator, http: requests.Session) -> None:
    fresh.fault = "plain_text"
    response = get(http, fresh)
    assert (response.status_code, response.text, response.headers["Content-Type"][:10]) == (
        200,
        "CMX Error",
        "text/plain",
    )
    fresh.fault = "html"
    assert get(http, fresh).text.startswith("<!DOCTYPE html>")
    fresh.fault = "truncated"
    with pytest.raises(json.JSONDecodeError):
        json.loads(get(http, fresh).content)
    fresh.fault = "wrong_shape"
    body = get(http, fresh).json()
    assert not isinstance(body, dict) or "records" not in body


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, "1"), (500, None), (502, None)])
def test_status_fault(fresh: Simulator, http: requests.Session, status: int, retry_after: str | None) -> None:
    fresh.fault = f"status:{status}"
    response = get(http, fresh)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers.get("Retry-After") == retry_after


def test_paging_faults(fresh: Simulator, http: requests.Session) -> None:
    first = get(http, fresh, status="active", count=10).json()
    fresh.fault = "ignore_index"
    assert get(http, fresh, status="active", count=10, index=40).json()["records"] == first["records"]
    fresh.fault = "too_many"
    assert len(get(http, fresh, status="active", count=10).json()["records"]) > 10
    fresh.fault = "next_backwards"
    assert 0 < get(http, fresh, status="active", count=10, index=40).json()["nextIndex"] < 40
    with pytest.raises(ValueError, match="unknown fault"):
        fresh.fault = "gremlins"
    with pytest.raises(ValueError, match="unknown fault"):
        fresh.fault = "redirect:elsewhere"


def test_fault_from_index_spares_the_first_pages(fresh: Simulator, http: requests.Session) -> None:
    fresh.fault, fresh.fault_from_index = "status:500", 20
    assert get(http, fresh, status="active", count=10, index=10).status_code == 200
    assert get(http, fresh, status="active", count=10, index=20).status_code == 500
    assert get(http, fresh, status="active", count=10, index=30).status_code == 500


def test_redirect_fault_points_the_same_request_elsewhere(fresh: Simulator, http: requests.Session) -> None:
    fresh.fault = "redirect:http://127.0.0.2:8080/"
    response = http.get(fresh.url + CLIENTS, params={"index": 5, "count": 10}, timeout=5, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == f"http://127.0.0.2:8080{CLIENTS}?index=5&count=10"


def test_huge_fault_streams_50_mb(fresh: Simulator, http: requests.Session) -> None:
    fresh.fault = "huge"
    with http.get(fresh.url + CLIENTS, stream=True, timeout=5) as response:
        size = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    assert size == int(response.headers["Content-Length"]) >= 50_000_000


def stop_quickly(sim: Simulator) -> float:
    began = time.monotonic()
    sim.stop()
    return time.monotonic() - began


def test_hang_blocks_only_its_own_request_and_not_stop(http: requests.Session) -> None:
    hung = Simulator(100).start()
    hung.fault = "hang"
    with pytest.raises(requests.ReadTimeout):
        http.get(hung.url + CLIENTS, timeout=(1, 0.3))
    hung.fault = None
    assert requests.get(hung.url + CLIENTS, auth=AUTH, timeout=2).status_code == 200  # served meanwhile
    hung.fault = "hang"

    def wait_for_answer() -> None:
        with contextlib.suppress(requests.ConnectionError):  # stop() cuts it
            requests.get(hung.url + CLIENTS, auth=AUTH, timeout=10)

    waiting = threading.Thread(target=wait_for_answer, daemon=True)
    waiting.start()
    time.sleep(0.2)
    assert stop_quickly(hung) < 2


def test_trickle_sends_a_byte_at_a_time_and_stop_cuts_it(http: requests.Session) -> None:
    slow = Simulator(100).start()
    slow.fault = "trickle"
    with http.get(slow.url + CLIENTS, stream=True, timeout=(1, 2)) as response:
        assert int(response.headers["Content-Length"]) >= 1 << 20
        began = time.monotonic()
        assert response.raw.read(2) == b'{"'
        assert time.monotonic() - began >= 0.4
        assert stop_quickly(slow) < 2


# --- standalone and TLS ---------------------------------------------------------------------


def test_command_line_serves_until_sigterm() -> None:
    env = {**os.environ, "SIM_PASSWORD": "s3cret"}
    cmd = [sys.executable, "-m", "cmx_simulator", "--port", "0", "--sessions", "50", "--churn", "1"]
    with subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent) as proc:
        try:
            assert proc.stderr is not None
            url = re.search(r"(http://127\.0\.0\.1:\d+)", proc.stderr.readline()).group(1)
            body = requests.get(url + CLIENTS, auth=("demo", "s3cret"), timeout=5).json()
            assert body["returnRecordCount"] == 51  # one guest churned in
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
        finally:
            proc.kill()  # only if an assertion left it running


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    with Simulator(20, certfile=str(cert), keyfile=str(key)) as secure:
        assert secure.url.startswith("https://127.0.0.1:")
        response = requests.get(secure.url + CLIENTS, auth=AUTH, verify=str(cert), timeout=5)
        assert response.json()["returnRecordCount"] == 20
