"""The exporter's console script against the simulator, both over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

from cmx_connect_exporter.counting.dimensions import (
    ACTIVE_SESSIONS,
    AUTHTYPE,
    BYTES,
    DEVICE,
    DWELL,
    LANGUAGE,
    OS,
    PORTAL,
    SITE,
    VISIT,
)
from cmx_simulator import Simulator
from exporter_process import ExporterProcess, of_target, poll_errors, session_counts, up
from tool_policy import require_tool


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    with Simulator(sessions=4000, seed=11, password="integration-pw") as sim:
        yield sim


def cmx_args(sim: Simulator, *extra: str) -> list[str]:
    return ["--url", sim.url, "--username", "demo", "--password", "integration-pw", "--poll-interval", "1", *extra]


@pytest.mark.parametrize(("page_size", "concurrency"), [(1000, 1), (97, 4)],
                         ids=["defaults", "small-pages-concurrent"])
def test_metrics_match_the_simulators_own_counts(simulator: Simulator, page_size: int, concurrency: int) -> None:
    truth = simulator.active_counts()
    args = cmx_args(simulator, "--page-size", str(page_size), "--concurrency", str(concurrency))
    with ExporterProcess(*args) as exporter:
        samples = exporter.wait_for(up)
        exporter.stop()
    assert session_counts(samples) == truth
    pages = truth.total // page_size + 1  # the last page is short, or empty on an exact multiple
    assert pages <= of_target(samples)[("cmx_connect_poll_requests", ())] <= pages + concurrency - 1


def test_label_cap_folds_the_rest_into_other(simulator: Simulator) -> None:
    truth = simulator.active_counts()
    with ExporterProcess(*cmx_args(simulator, "--max-label-values", "3")) as exporter:
        counts = session_counts(exporter.wait_for(up))
    assert counts is not None
    for label, series in counts.by_label.items():
        assert len(series) <= 3
        assert sum(series.values()) == truth.total
        top = max(truth.by_label[label].items(), key=lambda kv: kv[1])
        assert series[top[0]] == top[1], "the most frequent value keeps its own series"


def test_promtool_accepts_the_live_output(simulator: Simulator) -> None:
    promtool = require_tool("promtool")
    with ExporterProcess(*cmx_args(simulator)) as exporter:
        exporter.wait_for(up)
        text = exporter.metrics_text()
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wrong_password_is_an_auth_error_and_the_process_lives_on(simulator: Simulator) -> None:
    args = cmx_args(simulator)
    args[args.index("integration-pw")] = "wrong-pw-canary"
    with ExporterProcess(*args) as exporter:
        samples = exporter.wait_for(lambda s: poll_errors(s).get("auth", 0) >= 2)
        assert not up(samples)
        assert session_counts(samples) is None
        assert requests.get(exporter.url + "/healthz", timeout=5).status_code == 200
        log = exporter.stop()
    assert "authentication failed (HTTP 401)" in log
    assert "wrong-pw-canary" not in log


def test_sigterm_exits_cleanly_within_seconds(simulator: Simulator) -> None:
    with ExporterProcess(*cmx_args(simulator)) as exporter:
        exporter.wait_for(up)
        started = time.monotonic()
        log = exporter.stop(timeout=10)
        assert exporter.proc.returncode == 0, log
        assert time.monotonic() - started < 5
    assert "Traceback" not in log


def test_demo_mode_needs_no_settings() -> None:
    with ExporterProcess("--demo") as exporter:
        samples = exporter.wait_for(up)
        exporter.stop()
    assert of_target(samples)[("cmx_connect_active_sessions", ())] > 0


def test_split_by_site_and_chosen_dimensions_through_the_console_script(simulator: Simulator) -> None:
    """Every active-session family gets the site label; only the named breakdowns are exported."""
    venue = simulator.venue_counts()
    args = cmx_args(simulator, "--split-by", SITE.label, "--dimensions", f"{AUTHTYPE.label},{SITE.label},visit")
    with ExporterProcess(*args) as exporter:
        samples = of_target(exporter.wait_for(up))
        exporter.stop()
    per_site = {dict(labels)[SITE.label]: value for (name, labels), value in samples.items() if name == ACTIVE_SESSIONS}
    assert per_site == venue.by_site
    names = {name for name, _ in samples}
    assert {OS.metric, DEVICE.metric, LANGUAGE.metric, PORTAL.metric, SITE.metric}.isdisjoint(names), \
        "dropped breakdowns are not exported, and the split's totals are the by-site figures"
    for dimension in (AUTHTYPE, VISIT):
        for site, total in per_site.items():
            series = [v for (name, labels), v in samples.items()
                      if name == dimension.metric and dict(labels)[SITE.label] == site]
            assert sum(series) == total, (dimension.label, site)
    inf = {dict(labels)[SITE.label]: v for (name, labels), v in samples.items()
           if name == DWELL.metric + "_bucket" and dict(labels)["le"] == "+Inf"}
    assert inf == per_site, "every simulated login time is readable"
    sent = sum(v for (name, labels), v in samples.items() if name == BYTES.metric and ("direction", "sent") in labels)
    assert sent == venue.bytes_sent
