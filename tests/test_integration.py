"""The exporter's console script against the simulator, both over real HTTP on loopback."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
import requests

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
        samples = exporter.wait_for(lambda s: poll_errors(s)["auth"] >= 2)
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
