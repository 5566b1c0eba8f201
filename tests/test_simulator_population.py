"""The simulator's population over real loopback HTTP: its ground truth against its records, the venue, times, churn."""

from __future__ import annotations

import datetime
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests

from cmx_connect_exporter.counting.dimensions import DEVICE, DIMENSIONS, OS, VISIT
from cmx_simulator import TIME_FORMATS, Simulator, VenueCounts
from cmx_simulator.vocabulary import DIMENSIONS as GUEST_DIMENSIONS
from sim_http import canonical, local_time, macs, page_all, sim_get

OFFSET_MS = -14400000  # the envelope's timeZoneOffset, as on the API page
SITE = ("location/Site",)


def venue_of(records: list[dict]) -> VenueCounts:
    """What the venue metrics should show for these records, read by the test's own rules.

    A guest is returning when the local date of the first login (the text's first ten characters,
    YYYY-MM-DD) is earlier than that of the last.
    """
    returning = sum(r["firstLoginTime"][:10] < r["lastLoginTime"][:10] for r in records)
    return VenueCounts(
        total=len(records),
        by_site=dict(Counter(canonical(r, SITE) for r in records)),
        by_portal=dict(Counter(r["portal"] for r in records)),
        by_portal_type=dict(Counter(r["type"] for r in records)),
        returning=returning,
        new=len(records) - returning,
        bytes_sent=sum(r["bytesSent"] for r in records),
        bytes_received=sum(r["bytesReceived"] for r in records),
    )


# --- labels ----------------------------------------------------------------------------------


def test_active_counts_match_the_api_under_the_canonical_rules(sim: Simulator, http: requests.Session) -> None:
    records = page_all(http, sim, status="active")
    truth = sim.active_counts()
    assert truth.total == len(records)
    for dimension in DIMENSIONS:
        if not dimension.derived:
            assert truth.by_label[dimension.label] == Counter(canonical(r, dimension.keys) for r in records), dimension
        assert sum(truth.by_label[dimension.label].values()) == truth.total
    # local times, so the day is the text's date: returning when the first login's is earlier
    first, last = VISIT.keys
    assert truth.by_label[VISIT.label] == Counter("returning" if r[first][:10] < r[last][:10] else "new"
                                                  for r in records)


def test_population_is_realistically_messy(sim: Simulator, http: requests.Session) -> None:
    records = page_all(http, sim)
    sent = [r[key] for r in records for d in GUEST_DIMENSIONS for key in d.keys if key in r]
    assert any(v is None for v in sent), "null"
    assert "" in sent, "empty"
    assert any(isinstance(v, str) and v != " ".join(v.split()) and v.strip() for v in sent), "untidy white space"
    assert any(isinstance(v, str) and len(v) > 64 for v in sent), "over-long"
    for dimension in GUEST_DIMENSIONS:
        assert any(key in r for r in records for key in dimension.keys[1:]), f"alternate keys for {dimension.label}"
    assert any(not any(k in r for k in DEVICE.keys) for r in records), "missing key"
    assert "android" in sim.active_counts().by_label[OS.label], "case is kept"
    assert {"Name", "Email", "Company Name", "Industry", "agent", "portal", "type"} <= set(records[0])


def test_population_is_deterministic_per_seed(http: requests.Session) -> None:
    def first_macs(seed: int) -> list[str]:
        with Simulator(200, seed=seed) as server:
            return macs(sim_get(http, server).json()["records"])

    assert first_macs(11) == first_macs(11) != first_macs(12)


# --- the venue: sites, portals, times, bytes ---------------------------------------------------


def test_session_truth_is_what_each_record_says(sim: Simulator, http: requests.Session) -> None:
    records = page_all(http, sim, status="active")
    truths = sim.active_sessions()
    assert [t.mac for t in truths] == macs(records)  # newest first, as the API lists them
    now = time.time()
    for record, truth in zip(records, truths, strict=True):
        assert truth.site == canonical(record, SITE)
        assert (truth.portal, truth.portal_type) == (record["portal"], record["type"])
        assert truth.first_login == local_time(record["firstLoginTime"], OFFSET_MS)
        assert truth.last_login == local_time(record["lastLoginTime"], OFFSET_MS)
        assert truth.dwell(now) == now - truth.last_login
        assert (truth.bytes_sent, truth.bytes_received) == (record["bytesSent"], record["bytesReceived"])
    assert sim.venue_counts() == venue_of(records) == VenueCounts.of(truths)


def test_the_venue_is_realistic(sim: Simulator, http: requests.Session) -> None:
    everyone = page_all(http, sim)
    counts = sim.venue_counts()
    sites = {site: n for site, n in counts.by_site.items() if site != "unknown"}
    assert 3 <= len(sites) <= 8
    assert max(sites.values()) > 3 * min(sites.values()), "unequal shares"
    assert 0 < counts.by_site["unknown"] < 0.05 * counts.total
    assert any("location/Site" not in r for r in everyone), "missing"
    assert any(r.get("location/Site", "") is None for r in everyone), "null"
    assert 2 <= len(counts.by_portal) <= 3
    assert 2 <= len(counts.by_portal_type) <= len(counts.by_portal)
    assert 0.2 < counts.returning / counts.total < 0.8
    for r in everyone:
        logins = [local_time(r[key], OFFSET_MS) for key in ("firstLoginTime", "lastLoginTime", "lastAcceptTime")]
        assert logins == sorted(logins)
        if r["lastLogoutTime"] is not None:
            assert r["state"] == "ACTIVE" or local_time(r["lastLogoutTime"], OFFSET_MS) >= logins[1]
    first_visits = [r for r in everyone if r["state"] == "ACTIVE" and r["firstLoginTime"] == r["lastLoginTime"]]
    assert first_visits and all(r["lastLogoutTime"] is None for r in first_visits)


# How each time format reads back as epoch seconds, written out apart from the simulator.
TIME_READERS: dict[str, Callable[[Any], int]] = {
    "local": lambda v: local_time(v, OFFSET_MS),
    "iso": lambda v: int(datetime.datetime.fromisoformat(v).timestamp()),
    "epoch_s": int,
    "epoch_ms": lambda v: int(v) // 1000,
    "epoch_ms_number": lambda v: v // 1000,
}


def test_every_time_format_is_read_back() -> None:
    assert set(TIME_READERS) == set(TIME_FORMATS)
    with pytest.raises(ValueError, match="unknown time format"):
        Simulator(10, time_format="rfc2822")


@pytest.mark.parametrize("time_format", sorted(TIME_READERS))
def test_time_format_writes_the_chosen_instants(http: requests.Session, time_format: str) -> None:
    with Simulator(100, seed=2, time_format=time_format) as server:
        records = page_all(http, server, status="active")
        truths = server.active_sessions()
    read = TIME_READERS[time_format]
    for record, truth in zip(records, truths, strict=True):
        assert isinstance(record["lastLoginTime"], int) == (time_format == "epoch_ms_number")
        assert (read(record["firstLoginTime"]), read(record["lastLoginTime"])) == (truth.first_login, truth.last_login)


# --- churn --------------------------------------------------------------------------------------


def test_churn_shifts_pages_and_keeps_the_truth(fresh_sim: Simulator, http: requests.Session) -> None:
    before = fresh_sim.active_counts()
    page = macs(sim_get(http, fresh_sim, status="active", count=50).json()["records"])
    oldest = macs(sim_get(http, fresh_sim, status="active", index=before.total - 3).json()["records"])
    fresh_sim.churn = 3
    shifted = macs(sim_get(http, fresh_sim, status="active", count=50).json()["records"])
    fresh_sim.churn = 0
    assert shifted[3:] == page[:-3]
    assert not set(shifted[:3]) & set(macs(page_all(http, fresh_sim)[3:]))  # new MACs
    active = page_all(http, fresh_sim, status="active")
    assert fresh_sim.active_counts().total == before.total == len(active)
    assert {sim_get(http, fresh_sim, mac=mac).json()["records"][0]["state"] for mac in oldest} == {"INACTIVE"}
    assert fresh_sim.active_counts().by_label[OS.label] == Counter(canonical(r, OS.keys) for r in active)
    assert fresh_sim.venue_counts() == venue_of(active)
