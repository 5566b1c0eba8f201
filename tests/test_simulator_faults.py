"""The simulator's faults over real loopback HTTP: each answers wrongly in its own way, and stop() ends them."""

from __future__ import annotations

import contextlib
import json
import threading
import time

import pytest
import requests

from cmx_simulator import Simulator
from sim_http import SIM_AUTH, sim_get

CLIENTS = "/api/connect/v1/clients"


def test_body_faults(fresh_sim: Simulator, http: requests.Session) -> None:
    fresh_sim.fault = "plain_text"
    response = sim_get(http, fresh_sim)
    assert (response.status_code, response.text, response.headers["Content-Type"][:10]) == (
        200,
        "CMX Error",
        "text/plain",
    )
    fresh_sim.fault = "html"
    assert sim_get(http, fresh_sim).text.startswith("<!DOCTYPE html>")
    fresh_sim.fault = "truncated"
    with pytest.raises(json.JSONDecodeError):
        json.loads(sim_get(http, fresh_sim).content)
    fresh_sim.fault = "wrong_shape"
    body = sim_get(http, fresh_sim).json()
    assert not isinstance(body, dict) or "records" not in body


@pytest.mark.parametrize(("status", "retry_after"), [(429, "1"), (503, "1"), (500, None), (502, None)])
def test_status_fault(fresh_sim: Simulator, http: requests.Session, status: int, retry_after: str | None) -> None:
    fresh_sim.fault = f"status:{status}"
    response = sim_get(http, fresh_sim)
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.headers.get("Retry-After") == retry_after


def test_paging_faults(fresh_sim: Simulator, http: requests.Session) -> None:
    first = sim_get(http, fresh_sim, status="active", count=10).json()
    fresh_sim.fault = "ignore_index"
    assert sim_get(http, fresh_sim, status="active", count=10, index=40).json()["records"] == first["records"]
    fresh_sim.fault = "too_many"
    assert len(sim_get(http, fresh_sim, status="active", count=10).json()["records"]) > 10
    fresh_sim.fault = "next_backwards"
    assert 0 < sim_get(http, fresh_sim, status="active", count=10, index=40).json()["nextIndex"] < 40
    with pytest.raises(ValueError, match="unknown fault"):
        fresh_sim.fault = "gremlins"
    with pytest.raises(ValueError, match="unknown fault"):
        fresh_sim.fault = "redirect:elsewhere"


def test_fault_from_index_spares_the_first_pages(fresh_sim: Simulator, http: requests.Session) -> None:
    fresh_sim.fault, fresh_sim.fault_from_index = "status:500", 20
    assert sim_get(http, fresh_sim, status="active", count=10, index=10).status_code == 200
    assert sim_get(http, fresh_sim, status="active", count=10, index=20).status_code == 500
    assert sim_get(http, fresh_sim, status="active", count=10, index=30).status_code == 500


def test_redirect_fault_points_the_same_request_elsewhere(fresh_sim: Simulator, http: requests.Session) -> None:
    fresh_sim.fault = "redirect:http://127.0.0.2:8080/"
    response = http.get(fresh_sim.url + CLIENTS, params={"index": 5, "count": 10}, timeout=5, allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == f"http://127.0.0.2:8080{CLIENTS}?index=5&count=10"


def test_huge_fault_streams_50_mb(fresh_sim: Simulator, http: requests.Session) -> None:
    fresh_sim.fault = "huge"
    with http.get(fresh_sim.url + CLIENTS, stream=True, timeout=5) as response:
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
    assert requests.get(hung.url + CLIENTS, auth=SIM_AUTH, timeout=2).status_code == 200  # served meanwhile
    hung.fault = "hang"

    def wait_for_answer() -> None:
        with contextlib.suppress(requests.ConnectionError):  # stop() cuts it
            requests.get(hung.url + CLIENTS, auth=SIM_AUTH, timeout=10)

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
