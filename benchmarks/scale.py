"""Many targets in one exporter: N simulated CMX of 1,000 sessions each, 20 ms pages, one targets file.

    .venv/bin/python benchmarks/scale.py                          # 1 (baseline), 10, 30, 100 targets, 60 s
    .venv/bin/python benchmarks/scale.py --targets 10 --interval 10 --intervals 2   # a quick look

For each N it starts the simulators (in one process of their own, at a lower priority, as CMX are
appliances of their own), then the exporter as users run it, and watches it for a number of intervals:
- whether every target completed a poll in each interval (its last-success time moves every interval);
- the p50/p99 latency of /metrics from a few scrapers, during polls (any target's poll in flight,
  as its last success and duration tell) and between them;
- peak RSS of the exporter and all its poll workers together, sampled every 0.2 s, and the sum of
  their own peaks (VmHWM), which bounds it from above;
- ``promtool check metrics`` on the full /metrics text.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

import requests

from cmx_connect_exporter.exposition.names import LAST_SUCCESS, POLL_DURATION, TARGET_LABEL, UP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import AUTH, _scrape_loop, free_port, percentile, wait_until

SESSIONS = 1000
PAGE_LATENCY = 0.02
SCRAPERS = 4
SCRAPE_PAUSE = 0.25  # each scraper waits 0 to 2x this: some 16 scrapes/s in all

SIMULATORS = """
import json, sys
from cmx_simulator import Simulator
sims = [Simulator(sessions={sessions}, active_fraction=1, seed=n, latency={latency}).start() for n in range({count})]
print(json.dumps([sim.url for sim in sims]), flush=True)
sys.stdin.read()
"""


@dataclass
class ScaleRun:
    targets: int
    intervals: int
    complete: int = 0  # targets that completed a poll in every interval watched
    polls: int = 0
    scrape_in: list[float] = field(default_factory=list)
    scrape_idle: list[float] = field(default_factory=list)
    peak_rss_mib: float = 0.0
    hwm_sum_mib: float = 0.0
    processes: int = 0
    promtool: str = "not run"


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _gauge_by_target(name: str) -> re.Pattern[str]:
    return re.compile(rf'^{name}{{{TARGET_LABEL}="([^"]*)"}} (\S+)$', re.MULTILINE)


_LAST_SUCCESS_LINE, _DURATION_LINE = _gauge_by_target(LAST_SUCCESS.name), _gauge_by_target(POLL_DURATION.name)


def poll_windows(text: str) -> dict[str, tuple[float, float]]:
    """Each target's last completed poll as (start, end) in wall-clock time. Read from the two gauges' lines
    alone: parsing the whole text of 100 targets takes some 185 ms, and the watcher reads it twice a second,
    which took a third of one of the two cores from the exporter it measures."""
    last = {name: float(value) for name, value in _LAST_SUCCESS_LINE.findall(text)}
    duration = {name: float(value) for name, value in _DURATION_LINE.findall(text)}
    return {name: (end - duration.get(name, 0.0), end) for name, end in last.items()}


def scale_run(count: int, interval: float, intervals: int, workdir: Path) -> ScaleRun:
    run = ScaleRun(count, intervals)
    sims = subprocess.Popen(["nice", "-n", "10", sys.executable, "-c",
                             SIMULATORS.format(sessions=SESSIONS, latency=PAGE_LATENCY, count=count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert sims.stdout is not None
        urls = json.loads(sims.stdout.readline())
        (workdir / "password").write_text(AUTH[1] + "\n")
        lines = [f"defaults:\n  username: {AUTH[0]}\n  password_file: {workdir / 'password'}\n"
                 f"  poll_interval: {interval:g}\ntargets:"]
        lines += [f"  - name: cmx-{n:03d}\n    url: {url}" for n, url in enumerate(urls)]
        (workdir / "targets.yml").write_text("\n".join(lines) + "\n")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        exporter = subprocess.Popen([sys.executable, "-m", "cmx_connect_exporter", "--targets-file",
                                     str(workdir / "targets.yml"), "--listen-address", f"127.0.0.1:{port}",
                                     "--log-level", "warning"])
        try:
            return watch(run, exporter.pid, base, interval, intervals, count)
        finally:
            exporter.terminate()
            exporter.wait(30)
    finally:
        sims.communicate("", timeout=60)


def _scrape_process(port: int, seconds: float, out: Connection) -> None:
    """The scrape timings of run.py's scrapers, fewer of them and slower: the text of 100 targets is large. They
    ask for gzip, as Prometheus does."""
    out.send(asyncio.run(_scrape_loop(port, seconds, SCRAPERS, SCRAPE_PAUSE, gzip=True))[0])


def watch(run: ScaleRun, pid: int, base: str, interval: float, intervals: int, count: int) -> ScaleRun:
    """Scrapers in a process of their own, so that reading the polls' windows here takes none of their time."""
    def all_up() -> bool:
        text = requests.get(base + "/metrics", timeout=10).text
        return text.count(f"{UP.name}{{") == count and f"}} 0.0\n{UP.name}" not in text and \
            len(poll_windows(text)) == count
    wait_until(all_up, interval + 120, f"the first poll of all {count} targets")
    started = time.time()
    stop = started + intervals * interval
    receive, send = multiprocessing.Pipe(duplex=False)
    scrapers = multiprocessing.get_context("spawn").Process(
        target=_scrape_process, args=(int(base.rsplit(":", 1)[1]), intervals * interval, send))
    scrapers.start()
    seen: dict[str, set[float]] = {}
    windows: set[tuple[float, float]] = set()
    next_read = 0.0
    with requests.Session() as http:
        while time.time() < stop:
            if time.time() >= next_read:  # the polls' windows, from a light watcher, twice a second
                for name, window in poll_windows(http.get(base + "/metrics", timeout=10).text).items():
                    seen.setdefault(name, set()).add(window[1])
                    windows.add(window)
                next_read = time.time() + 0.5
            try:
                pids = process_tree(pid)
                run.peak_rss_mib = max(run.peak_rss_mib, sum(status_kib(p, "VmRSS") for p in pids) / 1024)
                run.hwm_sum_mib = sum(status_kib(p, "VmHWM") for p in pids) / 1024
                run.processes = max(run.processes, len(pids))
            except OSError:
                pass
            time.sleep(0.2)
    timings = receive.recv()
    scrapers.join()
    text = requests.get(base + "/metrics", timeout=10).text
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=60, check=False)
        run.promtool = "clean" if result.returncode == 0 else (result.stdout + result.stderr).strip()[:200]
    # a target completed every interval if no two of its successes, nor the watch's ends, are more than an
    # interval (and a second's slack) apart
    for finished in seen.values():
        times = sorted(t for t in finished if t >= started)
        run.polls += len(times)
        edges = [started, *times, stop]
        if all(later - earlier <= interval + 1 for earlier, later in itertools.pairwise(edges)):
            run.complete += 1
    for began, elapsed in timings:
        busy = any(start <= began <= end for start, end in windows)
        (run.scrape_in if busy else run.scrape_idle).append(elapsed * 1000)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, nargs="+", default=[1, 10, 30, 100],
                        help="target counts; 1 is the baseline the others compare with")
    parser.add_argument("--interval", type=float, default=60)
    parser.add_argument("--intervals", type=int, default=2, help="intervals watched after the first polls")
    args = parser.parse_args()
    print("targets | intervals | targets complete every interval | polls seen | scrape p50/p99 in polls ms | "
          "scrape p50/p99 between ms | scrapes in/between | peak RSS MiB (sampled) | sum of VmHWM MiB | "
          "processes | promtool")
    for count in args.targets:
        with tempfile.TemporaryDirectory() as folder:
            run = scale_run(count, args.interval, args.intervals, Path(folder))
        cells = [count, run.intervals, f"{run.complete}/{run.targets}", run.polls,
                 f"{statistics.median(run.scrape_in or [float('nan')]):.1f}/{percentile(run.scrape_in, 0.99):.1f}",
                 f"{statistics.median(run.scrape_idle or [float('nan')]):.1f}/"
                 f"{percentile(run.scrape_idle, 0.99):.1f}",
                 f"{len(run.scrape_in)}/{len(run.scrape_idle)}", f"{run.peak_rss_mib:.1f}",
                 f"{run.hwm_sum_mib:.1f}", run.processes, run.promtool]
        print(" | ".join(map(str, cells)), flush=True)


if __name__ == "__main__":
    main()
