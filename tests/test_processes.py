"""Process metrics of the running exporter and of its poll worker, checked against /proc."""

from __future__ import annotations

import subprocess
import time

from cmx_connect_exporter.exposition.names import POLL_WORKER_NAMESPACE
from exporter_process import ExporterProcess, children, proc_status, up
from tool_policy import require_tool

WORKER = f"{POLL_WORKER_NAMESPACE}_process"
FAMILIES = ("resident_memory_bytes", "virtual_memory_bytes", "start_time_seconds", "cpu_seconds_total",
            "open_fds", "max_fds")


def test_both_processes_serve_their_process_metrics_and_promtool_accepts_them() -> None:
    with ExporterProcess("--demo") as exporter:
        samples = exporter.wait_for(up)
        (worker_pid,) = children(exporter.pid)
        for prefix in ("process", WORKER):
            missing = [family for family in FAMILIES if (f"{prefix}_{family}", ()) not in samples]
            assert missing == [], prefix
        for prefix, pid in (("process", exporter.pid), (WORKER, worker_pid)):
            rss = proc_status(pid)["VmRSS"] * 1024
            assert 0.5 * rss < samples[(f"{prefix}_resident_memory_bytes", ())] < 2 * rss, prefix
            assert abs(samples[(f"{prefix}_start_time_seconds", ())] - time.time()) < 120
        text = exporter.metrics_text()
    result = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_replaced_worker_is_measured_in_its_place() -> None:
    with ExporterProcess("--demo", "--poll-interval", "1") as exporter:
        exporter.wait_for(up)
        (first,) = children(exporter.pid)
        started = exporter.scrape()[(f"{WORKER}_start_time_seconds", ())]
        subprocess.run(["kill", "-KILL", str(first)], check=True, timeout=10)
        samples = exporter.wait_for(lambda s: s.get((f"{WORKER}_start_time_seconds", ()), started) > started
                                    and up(s), timeout=30)
        (second,) = children(exporter.pid)
        assert second != first
        assert samples[(f"{WORKER}_resident_memory_bytes", ())] > 0
