"""What a hostile CMX must not do to the exporter, besides the failures of the fault matrix.

Each case answers validly, so no poll may fail: the console script polls the simulator over real
HTTP while a fault steers the de-duplication table, feeds the worker huge label values, or closes
kept-alive connections under it.
"""

from __future__ import annotations

import time

from cmx_connect_exporter.counting.dimensions import ACTIVE_SESSIONS, OS
from cmx_connect_exporter.exposition.names import LAST_SUCCESS, POLL_DURATION, POLL_REQUESTS
from cmx_simulator import HUGE_LABEL_PAGES, Simulator
from exporter_process import ExporterProcess, Samples, children, of_target, poll_errors, proc_status, session_counts, up

SESSIONS = 300
PAGE_SIZE = 50


def _last_success(samples: Samples) -> float:
    return of_target(samples).get((LAST_SUCCESS.name, ()), 0.0)


def poll_durations(exporter: ExporterProcess, polls: int, after: float, timeout: float = 30) -> list[float]:
    """``cmx_connect_poll_duration_seconds`` of the next ``polls`` polls that end after ``after`` (wall clock)."""
    durations: list[float] = []
    seen = after
    deadline = time.monotonic() + timeout
    while len(durations) < polls:
        assert time.monotonic() < deadline, f"only {len(durations)} polls in {timeout} s:\n{exporter.log[-3000:]}"
        samples = exporter.scrape()
        if _last_success(samples) > seen:
            seen = _last_success(samples)
            durations.append(of_target(samples)[(POLL_DURATION.name, ())])
        time.sleep(0.05)
    return durations


def test_crafted_macs_poll_in_about_the_time_of_ordinary_ones() -> None:
    """MACs chosen to land on one slot of an unsalted table made a poll quadratic (16,000 took 23.6 s)."""
    with Simulator(20_000, active_fraction=1.0, seed=7) as sim, \
            ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", "1",
                            env={"CMX_PASSWORD": "demo"}) as exporter:
        truth = sim.active_counts()
        exporter.wait_for(lambda s: up(s) and session_counts(s) == truth)
        ordinary = min(poll_durations(exporter, 3, after=time.time()))
        sim.fault = "crafted_macs"
        crafted_from = time.time()
        crafted = min(poll_durations(exporter, 3, after=crafted_from))
        samples = exporter.scrape()
    assert session_counts(samples) == truth, "crafted MACs are still one session each"
    assert sum(poll_errors(samples).values()) == 0
    assert crafted <= 3 * ordinary + 0.2, f"crafted MACs: {crafted:.2f} s a poll, ordinary ones {ordinary:.2f} s"


def test_huge_label_values_do_not_grow_the_worker() -> None:
    """Sixty one-record pages with four distinct 3 MiB label values each: 720 MiB that nothing may keep."""
    with Simulator(SESSIONS, seed=5) as sim, \
            ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", "1",
                            env={"CMX_PASSWORD": "demo"}) as exporter:
        sim.fault = "huge_labels"
        samples = exporter.wait_for(lambda s: up(s), timeout=60)
        (worker,) = children(exporter.pid)
        peak_mib = proc_status(worker)["VmHWM"] / 1024
    assert of_target(samples)[(ACTIVE_SESSIONS, ())] == HUGE_LABEL_PAGES
    label_values = [labels for (name, labels) in of_target(samples) if name == OS.metric]
    assert all(len(value) <= 64 for ((_, value),) in label_values), "label values are cut to 64 characters"
    assert peak_mib < 200, f"the poll worker peaked at {peak_mib:.0f} MiB"


def test_a_kept_alive_connection_that_cmx_closes_is_asked_once_more() -> None:
    """CMX closes an idle kept-alive connection just as a request goes out: that request never reached it."""
    with Simulator(SESSIONS, seed=5) as sim, \
            ExporterProcess("--url", sim.url, "--username", "demo", "--poll-interval", "1",
                            "--page-size", str(PAGE_SIZE), env={"CMX_PASSWORD": "demo"}) as exporter:
        truth = sim.active_counts()
        pages = truth.total // PAGE_SIZE + 1
        exporter.wait_for(lambda s: up(s) and session_counts(s) == truth)
        sim.fault = "closes_kept_alive"
        after = time.time()
        poll_durations(exporter, 3, after=after)
        samples = exporter.scrape()
    assert up(samples) and session_counts(samples) == truth
    assert sum(poll_errors(samples).values()) == 0, "a poll failed on a connection closed before any answer"
    # every page but the first on a connection is refused once, then asked on a new connection
    assert of_target(samples)[(POLL_REQUESTS.name, ())] >= 2 * pages - 1
