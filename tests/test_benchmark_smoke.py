"""The benchmark at N = 10k, as CI runs it: it must run end to end and count right; times are not checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_runs_and_counts_right() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--sizes", "10000", "--latencies", "0",
         "--concurrency", "1", "4", "--floors", "1", "--polls", "1", "--starts", "2", "--no-write"],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    # run.py exits non-zero when the exporter's totals differ from N or concurrency changes any count.
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0].split(" | ")
    rows = [dict(zip(header, line.split(" | "), strict=True))
            for line in result.stdout.splitlines() if line.startswith("10,000 |")]
    assert [row["concurrency"] for row in rows] == ["1", "4"]
    # 11 pages; polls after the first know where the list ends and ask nothing past it
    assert [row["requests/poll"] for row in rows] == ["11", "11"], rows
