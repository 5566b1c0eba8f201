"""A soak run: the exporter polls fast against a simulator that keeps failing in new ways, while
scrapers hammer it. tests/test_soak.py runs it for a minute or so in CI; benchmarks/soak.py runs it
for as long as you like.

The run alternates dirty windows (a random fault, error rate and churn) with clean ones (none of
them). It records a problem when the exporter dies or exits uncleanly, a scrape goes unanswered,
a scrape's counts are inconsistent, a poll that ran wholly inside a clean window does not match the
simulator's own counts exactly, a clean window sees no such poll, or memory or threads keep growing.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from cmx_simulator import Simulator
from exporter_process import ExporterProcess, of_target, parse_samples, poll_errors, proc_status, session_counts

PASSWORD = "soak-canary-pw-2b7d"
FAULTS = ("plain_text", "html", "truncated", "wrong_shape", "ignore_index", "too_many", "next_backwards", "hang",
          "trickle", "huge", "status:401", "status:429", "status:500", "status:503", "redirect:http://127.0.0.2:9")
ANSWER_LIMIT = 2.0  # seconds; a scrape slower than this counts as unanswered
MAX_LABEL_VALUES = 50  # the default; the simulator's vocabulary stays under it, so counts compare exactly


@dataclass
class SoakReport:
    seconds: float = 0.0
    windows: Counter[str] = field(default_factory=Counter)  # dirty windows by fault, and "clean"
    clean_polls_checked: int = 0
    scrapes: int = 0
    latencies: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    errors: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        ordered = sorted(self.latencies) or [0.0]
        return "\n".join([
            f"soaked {self.seconds:.0f} s: {self.windows['clean']} clean windows, "
            f"{sum(self.windows.values()) - self.windows['clean']} dirty "
            f"({', '.join(sorted(set(self.windows) - {'clean'}))})",
            f"clean polls checked against the simulator: {self.clean_polls_checked}",
            f"scrapes: {self.scrapes}, p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms",
            f"exporter RSS {min(self.rss_kb, default=0) // 1024}-{max(self.rss_kb, default=0) // 1024} MiB, "
            f"threads {min(self.threads, default=0)}-{max(self.threads, default=0)}",
            f"failed polls by reason: {self.errors}",
            f"problems: {len(self.problems)}", *(f"  - {p}" for p in self.problems[:20]),
        ])


class _Scrapers:
    """Threads that scrape /metrics (now and then / and /healthz) back to back, checking each answer."""

    def __init__(self, url: str, count: int, report: SoakReport) -> None:
        self._url, self._report = url, report
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._scrape, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> _Scrapers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(ANSWER_LIMIT + 1)

    def _problem(self, text: str) -> None:
        with self._lock:
            self._report.problems.append(text)

    def _scrape(self, number: int) -> None:
        with requests.Session() as http:
            http.trust_env = False
            for turn in range(1_000_000_000):
                if self._stop.wait(0.05):
                    return
                path = ("/metrics", "/metrics", "/metrics", "/", "/healthz")[(turn + number) % 5]
                began = time.monotonic()
                try:
                    response = http.get(self._url + path, timeout=ANSWER_LIMIT)
                except requests.RequestException as exc:
                    self._problem(f"{path} unanswered: {type(exc).__name__}")
                    continue
                took = time.monotonic() - began
                with self._lock:
                    self._report.scrapes += 1
                    self._report.latencies.append(took)
                if response.status_code != 200:
                    self._problem(f"{path} answered {response.status_code}")
                elif path == "/metrics":
                    for issue in inconsistencies(response.text):
                        self._problem(issue)


def inconsistencies(text: str) -> list[str]:
    """What is wrong with one scrape on its own: a label that does not sum to the total, too many series, a leak."""
    issues = []
    counts = session_counts(parse_samples(text))
    if counts is not None:
        for label, values in counts.by_label.items():
            if sum(values.values()) != counts.total:
                issues.append(f"{label} sums to {sum(values.values())}, not {counts.total}")
            if len(values) > MAX_LABEL_VALUES:
                issues.append(f"{label} has {len(values)} series, more than the cap")
    if PASSWORD in text:
        issues.append("the password is in /metrics")
    return issues


def _sample_process(pid: int, report: SoakReport, stop: threading.Event) -> None:
    while not stop.wait(0.5):
        try:
            status = proc_status(pid)
        except OSError:
            return
        report.rss_kb.append(status["VmRSS"])
        report.threads.append(status["Threads"])


def _growth(samples: list[int]) -> tuple[int, int]:
    """Peak of the second quarter (warmed up) and of the last quarter."""
    quarter = max(1, len(samples) // 4)
    return max(samples[quarter:2 * quarter] or samples), max(samples[-quarter:])


def soak(seconds: float, *, seed: int = 1, scrapers: int = 4, sessions: int = 3000, page_size: int = 100,
         concurrency: int = 2, progress: Callable[[str], None] = lambda _: None) -> SoakReport:
    """Run the soak for about ``seconds`` and report what went wrong, if anything."""
    rng = random.Random(seed)
    report = SoakReport()
    faults = list(FAULTS)
    rng.shuffle(faults)
    began = time.monotonic()
    with Simulator(sessions, seed=seed, password=PASSWORD) as sim, \
            ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", "1", "--timeout", "1",
                            "--page-size", str(page_size), "--concurrency", str(concurrency), "--stale-after", "3",
                            env={"CMX_PASSWORD": PASSWORD}) as exporter:
        exporter.wait_for(lambda samples: True)  # listening: from now on every scrape must be answered
        stop_sampling = threading.Event()
        sampler = threading.Thread(target=_sample_process, args=(exporter.pid, report, stop_sampling), daemon=True)
        sampler.start()
        with _Scrapers(exporter.url, scrapers, report):
            for window in range(1_000_000):
                if time.monotonic() - began >= seconds or exporter.proc.poll() is not None:
                    break
                fault = faults[window % len(faults)]
                _dirty(sim, fault, rng, page_size)
                report.windows[fault] += 1
                time.sleep(rng.uniform(2, 4))
                report.clean_polls_checked += _clean(sim, exporter, report)
                report.windows["clean"] += 1
                progress(f"{time.monotonic() - began:5.0f} s  after {fault}: {report.clean_polls_checked} "
                         f"clean polls checked, {len(report.problems)} problems")
        stop_sampling.set()
        sampler.join(2)
        if exporter.proc.poll() is not None:
            report.problems.append(f"the exporter died with status {exporter.proc.returncode}")
        report.errors = poll_errors(exporter.scrape())
        log = exporter.stop()
        if exporter.proc.returncode != 0:
            report.problems.append(f"the exporter exited with {exporter.proc.returncode} on SIGTERM")
    report.seconds = time.monotonic() - began
    if "Traceback" in log or PASSWORD in log:
        report.problems.append("a traceback or the password in the log")
    _check_growth(report)
    return report


def _dirty(sim: Simulator, fault: str, rng: random.Random, page_size: int) -> None:
    sim.fault_from_index = rng.choice((0, 0, page_size, 5 * page_size))
    sim.error_rate = rng.choice((0.0, 0.0, 0.05, 0.3))
    sim.churn = rng.choice((0, 5, 50))
    sim.fault = fault


def _clean(sim: Simulator, exporter: ExporterProcess, report: SoakReport, longest: float = 12.0) -> int:
    """Stop every fault, then compare each poll that ran wholly inside the window with the simulator's counts."""
    sim.fault, sim.error_rate, sim.churn = None, 0.0, 0
    time.sleep(0.2)  # a request being answered may still be churning
    opened = time.time()
    truth = sim.active_counts()
    checked, last_seen = 0, None
    deadline = time.monotonic() + longest
    while checked < 2 and time.monotonic() < deadline and exporter.proc.poll() is None:
        time.sleep(0.1)
        try:
            samples = of_target(parse_samples(exporter.metrics_text(timeout=ANSWER_LIMIT)))
        except requests.RequestException:
            continue  # the scrapers report unanswered scrapes
        finished = samples.get(("cmx_connect_last_success_timestamp_seconds", ()))
        duration = samples.get(("cmx_connect_poll_duration_seconds", ()), 0.0)
        if finished is None or finished == last_seen or finished - duration < opened:
            continue
        last_seen = finished
        checked += 1
        if session_counts(samples) != truth:
            report.problems.append(f"a clean poll at {finished:.1f} does not match the simulator's counts")
    if checked == 0:
        report.problems.append(f"no clean poll within {longest:g} s of the faults stopping")
    return checked


def _check_growth(report: SoakReport) -> None:
    """Peaks late in the run may not exceed those early in it by more than noise."""
    if len(report.rss_kb) < 8:
        report.problems.append("too few memory samples to judge growth")
        return
    early, late = _growth(report.rss_kb)
    if late > early + max(8 * 1024, early // 10):
        report.problems.append(f"RSS grew from {early // 1024} MiB to {late // 1024} MiB")
    early, late = _growth(report.threads)
    if late > early + 4:
        report.problems.append(f"threads grew from {early} to {late}")
