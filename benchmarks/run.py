"""The exporter's poll against the fetch-and-parse floor, on one simulator, in one run.

    .venv/bin/python benchmarks/run.py                 # the full table, written to benchmarks/results.md
    .venv/bin/python benchmarks/run.py --sizes 10000 --latencies 0 --no-write   # a quick look

For each size N and page latency it starts the simulator with N active sessions, then measures:
- the floor: a minimal loop of requests and json that fetches every page in turn and counts four fields;
- the exporter, as its own process, with its defaults (every dimension, the dwell histogram, the
  bytes): poll wall time, peak RSS (VmHWM), requests per poll, and the p50/p99 latency of /metrics
  under 20 concurrent scrapers, during polls and between them.
  A poll's time is the median of the polls after the first; the first poll, timed like the others
  by the poll worker itself (never its start), has no last total to size its work by, so it is
  given apart: as the median of the first polls of ``--starts`` exporter starts, one a sample
  being as noisy as any single poll.
Every figure is also given as a ratio to the floor measured in the same run. Counts are checked
too: the exporter's totals must equal N, and sequential and concurrent polls must agree exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from cmx_connect_exporter.cmx.client import CLIENTS_PATH as CLIENTS
from cmx_connect_exporter.cmx.wire import page_reader
from cmx_connect_exporter.counting.dimensions import ACTIVE_SESSIONS, AUTHTYPE, DEVICE, LANGUAGE, OS
from cmx_connect_exporter.counting.tally import Tally
from cmx_connect_exporter.exposition.names import LAST_SUCCESS, POLL_DURATION, POLL_REQUESTS, TARGET_LABEL

HERE = Path(__file__).resolve().parent
AUTH = ("demo", "demo")
FIELDS = tuple(dimension.keys[0] for dimension in (AUTHTYPE, OS, DEVICE, LANGUAGE))  # the floor's four, fixed
SCRAPERS = 20
SCRAPE_PAUSE = 0.05  # each scraper waits 0 to 2x this between scrapes, at random: 400 scrapes/s in all
_LAST_SUCCESS = re.compile(rb"^" + LAST_SUCCESS.name.encode() + rb"(?:{[^}]*})? (\S+)$", re.M)
_DURATION = re.compile(rb"^" + POLL_DURATION.name.encode() + rb"(?:{[^}]*})? (\S+)$", re.M)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@contextmanager
def simulator(sessions: int, latency: float) -> Iterator[str]:
    port = free_port()
    # CMX is an appliance of its own; at a lower priority the simulator does not take the
    # exporter's core on a two-core machine, for the floor and the exporter alike.
    proc = subprocess.Popen(["nice", "-n", "10", sys.executable, "-m", "cmx_simulator", "--port", str(port),
                             "--sessions", str(sessions), "--active-fraction", "1", "--latency", str(latency)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(url + CLIENTS, params={"count": "1"}, auth=AUTH, timeout=5).ok,
                   120, "the simulator")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def floor_poll(url: str, page_size: int = 1000) -> tuple[float, int, int]:
    """The least any poller can do: fetch every page in turn, decode it, count four fields."""
    started = time.perf_counter()
    counts = {name: Counter() for name in FIELDS}
    total = requests_made = index = 0
    with requests.Session() as session:
        session.auth = AUTH
        while True:
            response = session.get(url + CLIENTS, params={"status": "active", "index": index,
                                                           "count": page_size}, timeout=60)
            requests_made += 1
            records = json.loads(response.content)["records"]
            for record in records:
                for name in FIELDS:
                    counts[name][record.get(name)] += 1
            total += len(records)
            index += len(records)
            if len(records) < page_size:
                return time.perf_counter() - started, requests_made, total


@dataclass
class ExporterRun:
    first_polls: list[float] = field(default_factory=list)  # one per exporter start
    polls: list[float] = field(default_factory=list)
    requests: int = 0
    peak_rss_mib: float = 0.0
    counts: dict[str, float] = field(default_factory=dict)
    scrape_during: list[float] = field(default_factory=list)
    scrape_between: list[float] = field(default_factory=list)

    @property
    def poll(self) -> float:
        return statistics.median(self.polls) if self.polls else float("nan")

    @property
    def first_poll(self) -> float:
        return statistics.median(self.first_polls) if self.first_polls else float("nan")


async def _scrape_loop(port: int, seconds: float, scrapers: int = SCRAPERS, pause: float = SCRAPE_PAUSE,
                       gzip: bool = False) -> tuple[list[tuple[float, float]], set[tuple[float, float]]]:
    """``scrapers`` scrapers, each timing whole responses (connect to last byte) and pausing between them.

    A pause rather than a closed loop: Prometheus scrapes on an interval, and a closed loop of
    20 clients measures the server's throughput, not the latency a scrape sees. The pause is
    random so the scrapers stay independent rather than arriving in lock-step bursts.
    """
    rng = random.Random(1)
    samples: list[tuple[float, float]] = []
    windows: set[tuple[float, float]] = set()
    end = time.time() + seconds
    encoding = "Accept-Encoding: gzip\r\n" if gzip else ""  # as Prometheus asks; the time is to the last byte
    request = f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{encoding}Connection: close\r\n\r\n".encode()

    async def scraper() -> None:
        await asyncio.sleep(rng.uniform(0, pause))
        while time.time() < end:
            started_wall, started = time.time(), time.perf_counter()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            body = await reader.read()
            writer.close()
            samples.append((started_wall, time.perf_counter() - started))
            if not gzip:  # a gzipped body is not read: its poll windows come from elsewhere (scale.py)
                _windows(body, windows)
            await asyncio.sleep(rng.uniform(0, 2 * pause))

    await asyncio.gather(*(scraper() for _ in range(scrapers)))
    return samples, windows


def _scrape_process(port: int, seconds: float, out: multiprocessing.connection.Connection) -> None:
    out.send(asyncio.run(_scrape_loop(port, seconds)))


@contextmanager
def exporter(url: str, *, concurrency: int, interval: float) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The real console script, polling ``url``, and its port once it answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cmx_connect_exporter", "--url", url, "--username", AUTH[0],
                             "--password", AUTH[1], "--listen-address", f"127.0.0.1:{port}",
                             "--poll-interval", f"{interval:g}", "--concurrency", str(concurrency),
                             "--timeout", "60", "--log-level", "warning"])
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 30, "the exporter")
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _poll_windows(port: int, polls: int, interval: float) -> list[tuple[float, float]]:
    """The (start, end) windows of the exporter's first ``polls`` polls, oldest first, watched lightly."""
    seen: set[tuple[float, float]] = set()
    url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: len(_windows(requests.get(url, timeout=5).content, seen)) >= polls,
               interval * (polls + 2) + 60, f"{polls} polls")
    return sorted(seen)[:polls]


def exporter_run(url: str, *, concurrency: int, interval: float, polls: int, starts: int) -> ExporterRun:
    """The real console script; scrapers in their own process so they do not share its GIL. The first poll
    is timed again in ``starts - 1`` more starts."""
    run = ExporterRun()
    with exporter(url, concurrency=concurrency, interval=interval) as (proc, port):
        # Poll times first, with one light watcher, so scrapers do not slow the polls being timed.
        quiet = _poll_windows(port, polls + 1, interval)
        receive, send = multiprocessing.Pipe(duplex=False)
        scrapers = multiprocessing.get_context("spawn").Process(
            target=_scrape_process, args=(port, interval * 2.5, send))
        scrapers.start()
        samples, windows = receive.recv()
        scrapers.join()
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        run.peak_rss_mib = _peak_rss_mib(proc.pid)
    families = list(text_string_to_metric_families(text))
    # the one target's counts, keyed without its cmx label
    run.counts = {s.name + json.dumps({k: v for k, v in s.labels.items() if k != TARGET_LABEL}, sort_keys=True): s.value
                  for fam in families for s in fam.samples if s.name.startswith(ACTIVE_SESSIONS)}
    run.requests = int(next(s.value for fam in families for s in fam.samples if s.name == POLL_REQUESTS.name))
    first, *run.polls = [end - start for start, end in quiet]
    run.first_polls = [first]
    for _ in range(starts - 1):
        with exporter(url, concurrency=concurrency, interval=interval) as (_, port):
            ((start, end),) = _poll_windows(port, 1, interval)
        run.first_polls.append(end - start)
    for started, latency in samples:
        in_poll = any(start <= started <= end for start, end in windows)
        (run.scrape_during if in_poll else run.scrape_between).append(latency)
    return run


def _windows(body: bytes, into: set[tuple[float, float]]) -> set[tuple[float, float]]:
    """Adds the (start, end) wall-clock window of the last completed poll, as /metrics tells it."""
    last, duration = _LAST_SUCCESS.search(body), _DURATION.search(body)
    if last and duration:
        into.add((float(last.group(1)) - float(duration.group(1)), float(last.group(1))))
    return into


def _peak_rss_mib(pid: int) -> float:
    """Peak RSS of the exporter and its poll worker together."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total_kib = 0
    for process in (pid, *map(int, children)):
        status = Path(f"/proc/{process}/status").read_text()
        total_kib += int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return total_kib / 1024


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Row:
    sessions: int
    latency: float
    concurrency: int
    floor: float
    run: ExporterRun

    def cells(self) -> list[str]:
        poll = self.run.poll
        ms = [1000 * percentile(v, q) for v in (self.run.scrape_during, self.run.scrape_between) for q in (.5, .99)]
        return [f"{self.sessions:,}", f"{1000 * self.latency:g} ms", str(self.concurrency), f"{self.floor:.2f} s",
                f"{poll:.2f} s", f"{poll / self.floor:.2f}", f"{self.run.first_poll:.2f} s", str(self.run.requests),
                f"{self.run.peak_rss_mib:.1f}",
                *(f"{v:.1f}" for v in ms), f"{len(self.run.scrape_during)}/{len(self.run.scrape_between)}"]


HEADER = ["sessions", "page latency", "concurrency", "floor", "exporter poll", "ratio to floor", "first poll",
          "requests/poll", "peak RSS MiB", "scrape p50 in poll ms", "scrape p99 in poll ms", "scrape p50 idle ms",
          "scrape p99 idle ms", "scrapes in/idle"]


def measure(sessions: int, latency: float, concurrencies: list[int], floors: int, polls: int,
            starts: int) -> list[Row]:
    rows = []
    with simulator(sessions, latency) as url:
        floor_poll(url)  # warm-up: the simulator encodes each record on first serve
        floor_times = []
        for _ in range(floors):
            seconds, _, total = floor_poll(url)
            if total != sessions:
                raise SystemExit(f"floor counted {total} sessions, expected {sessions}")
            floor_times.append(seconds)
        floor = statistics.median(floor_times)
        reference: dict[str, float] | None = None
        for concurrency in concurrencies:
            # Polls take at most about half the interval, so scrapes land both in polls and between them.
            interval = max(1.0, round(1.6 * floor + 0.5))
            run = exporter_run(url, concurrency=concurrency, interval=interval, polls=polls, starts=starts)
            if (counted := run.counts.get(ACTIVE_SESSIONS + "{}")) != sessions:
                raise SystemExit(f"exporter counted {counted} "
                                 f"sessions, expected {sessions}")
            if reference is not None and run.counts != reference:
                raise SystemExit(f"concurrency {concurrency} counted differently from concurrency 1")
            reference = run.counts
            rows.append(Row(sessions, latency, concurrency, floor, run))
            print(" | ".join(rows[-1].cells()), flush=True)
    return rows


def decode_comparison(sessions: int = 10_000) -> str:
    """What the exporter's decoder saves on one full page: msgspec, into records of just the keys a poll reads,
    against the stdlib's json, into dicts of every field, as the floor decodes."""
    with simulator(sessions, 0.0) as url:
        body = requests.get(url + CLIENTS, params={"status": "active", "count": "1000"}, auth=AUTH, timeout=30).content
    read = page_reader(Tally().keys)
    times = {}
    for name, decode in (("json", json.loads), ("exporter", lambda page: read(page, 0))):
        samples = []
        for _ in range(30):
            started = time.perf_counter()
            decode(body)
            samples.append(time.perf_counter() - started)
        times[name] = statistics.median(samples)
    return (f"Decoding one 1000-record page ({len(body) / 1024:.0f} KiB): json {1000 * times['json']:.2f} ms, "
            f"the exporter's msgspec reader {1000 * times['exporter']:.2f} ms "
            f"({times['json'] / times['exporter']:.1f}x faster).")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}")


def targets(rows: list[Row]) -> list[str]:
    """Each target of the performance issue, checked against this run's rows."""
    checks = []
    for row in rows:
        where = f"{row.sessions:,} sessions, {1000 * row.latency:g} ms pages, concurrency {row.concurrency}"
        if row.sessions == 100_000 and row.concurrency == 1:  # every dimension on, the histogram and the bytes
            checks.append((f"sequential poll <= 1.0x floor ({where}): {row.run.poll / row.floor:.2f}x",
                           row.run.poll <= row.floor))
        if row.sessions == 100_000:
            checks.append((f"peak RSS <= 80 MiB ({where}): {row.run.peak_rss_mib:.1f} MiB",
                           row.run.peak_rss_mib <= 80))
        if row.latency >= 0.02 and row.concurrency == 4:
            for which, took, samples in (("poll", row.run.poll, row.run.polls),
                                         ("first poll", row.run.first_poll, row.run.first_polls)):
                spread = ", ".join(f"{sample / row.floor:.2f}" for sample in samples)
                checks.append((f"{which} <= 0.35x sequential floor ({where}): {took / row.floor:.2f}x, the median "
                               f"of {spread}", took <= 0.35 * row.floor))
        p99 = max(percentile(row.run.scrape_during, 0.99), percentile(row.run.scrape_between, 0.99))
        checks.append((f"/metrics p99 < 10 ms in and between polls ({where}): {1000 * p99:.1f} ms", p99 < 0.010))
    by_config = {(r.latency, r.concurrency, r.sessions): r.run.peak_rss_mib for r in rows}
    for (latency, concurrency, sessions), rss in by_config.items():
        if sessions == 1_000_000 and (small := by_config.get((latency, concurrency, 10_000))) is not None:
            checks.append((f"RSS growth 10k -> 1M < 30 MiB ({1000 * latency:g} ms pages, concurrency "
                           f"{concurrency}): {rss - small:.1f} MiB", rss - small < 30))
    return [f"- {'met' if ok else 'NOT MET'}: {text}" for text, ok in checks]


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.02], help="seconds per page")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--floors", type=int, default=3, help="floor polls per configuration (median)")
    parser.add_argument("--polls", type=int, default=4, help="exporter polls per configuration, after the first")
    parser.add_argument("--starts", type=int, default=5, help="exporter starts per configuration, for the first poll")
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    if args.starts < 1:
        parser.error("--starts must be at least 1: the run's own start times the first poll")

    print(" | ".join(HEADER), flush=True)
    rows = [row for latency in args.latencies for n in args.sizes
            for row in measure(n, latency, args.concurrency, args.floors, args.polls, args.starts)]
    decoding = decode_comparison()
    checks = "\n".join(targets(rows))
    print(f"{decoding}\n{checks}")
    report = (f"# Benchmark results\n\nMachine: {machine()}\n\n"
              f"Command: `python benchmarks/run.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
              f"{table(rows)}\n\nCounts were checked in every row: the exporter's total equals the sessions "
              f"served, and concurrent polls count exactly as sequential ones.\n\n{decoding}\n\n"
              f"## Targets\n\n{checks}\n")
    if not args.no_write:
        args.output.write_text(report + _other_sections(args.output, report))
        print(f"written to {args.output}")


def _other_sections(path: Path, report: str) -> str:
    """The sections of ``path`` that other benchmarks wrote, such as seen_keys.py's, kept as they are."""
    if not path.exists():
        return ""
    ours = {line for line in report.splitlines() if line.startswith("## ")}
    sections = re.split(r"^(?=## )", path.read_text(), flags=re.MULTILINE)[1:]
    return "".join("\n" + section.rstrip("\n") + "\n" for section in sections
                   if section.splitlines()[0] not in ours)


if __name__ == "__main__":
    main()
