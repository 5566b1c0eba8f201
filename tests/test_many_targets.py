"""Many CMX in one exporter, through the console script over real HTTP: a failing CMX keeps to itself."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cmx_connect_exporter.exposition.names import LAST_SUCCESS
from cmx_connect_exporter.outcome import Counts, PollError
from cmx_connect_exporter.polling.messages import ClientOptions, Hello, PollOutcome, PollRequest
from cmx_connect_exporter.polling.pool import GROW_AFTER, WorkerPool
from cmx_simulator import Simulator
from exporter_process import ExporterProcess, console_script, of_target, poll_errors, session_counts, up

INTERVAL = 2.0
WATCH = 13.0  # six intervals or so
ON_TIME = 1.0  # how late a healthy target's poll may be


def closed_port() -> int:
    """A port nothing listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def venues() -> Iterator[tuple[Simulator, Simulator, Simulator]]:
    with Simulator(sessions=1500, seed=21) as mall, Simulator(sessions=900, seed=22) as airport, \
            Simulator(sessions=600, seed=23) as broken:
        yield mall, airport, broken


def targets_file(folder: Path, urls: dict[str, str]) -> Path:
    secret = folder / "cmx.password"
    secret.write_text("demo\n")
    entries = "".join(f"  - name: {name}\n    url: {url}\n" for name, url in urls.items())
    path = folder / "targets.yml"
    path.write_text(f"defaults:\n  username: demo\n  password_file: {secret}\n  poll_interval: {INTERVAL}\n"
                    f"  timeout: 2\ntargets:\n{entries}")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "reason"), [
    ("hang", "timeout"),
    ("refused", "connection"),
    ("status:429", "http"),
    ("plain_text", "bad_response"),
])
def test_a_failing_cmx_never_delays_nor_touches_the_others(tmp_path: Path, fault: str, reason: str,
                                                          venues: tuple[Simulator, Simulator, Simulator]) -> None:
    mall, airport, broken = venues
    broken_url = f"http://127.0.0.1:{closed_port()}" if fault == "refused" else broken.url
    if fault != "refused":
        broken.fault = fault
    path = targets_file(tmp_path, {"mall": mall.url, "airport": airport.url, "broken": broken_url})
    truth = {"mall": mall.active_counts(), "airport": airport.active_counts()}
    successes: dict[str, set[float]] = {"mall": set(), "airport": set()}
    with ExporterProcess("--targets-file", str(path), command=console_script()) as exporter:
        started = time.monotonic()
        while time.monotonic() - started < WATCH:
            samples = exporter.wait_for(lambda s: up(s, "mall") or up(s, "airport"), timeout=10)
            for name, counts in truth.items():
                target = of_target(samples, name)
                if (finished := target.get((LAST_SUCCESS.name, ()))) is not None:
                    successes[name].add(finished)
                    assert session_counts(samples, name) == counts, f"{name} counts are exact in every scrape"
            time.sleep(0.1)
        final = exporter.scrape()
        exporter.stop()
    for name, finished in successes.items():
        times = sorted(finished)
        # from the second poll on: the first one's end includes starting the poll workers
        gaps = [later - earlier for earlier, later in itertools.pairwise(times[1:])]
        assert len(times) >= WATCH / INTERVAL - 2, f"{name} published {len(times)} polls in {WATCH} s"
        assert all(abs(gap - INTERVAL) <= ON_TIME for gap in gaps), f"{name} polls were late: {gaps}"
    assert not up(final, "broken")
    assert poll_errors(final, "broken")[reason] >= 1
    assert session_counts(final, "broken") is None
    assert sum(poll_errors(final, "mall").values()) == sum(poll_errors(final, "airport").values()) == 0


def test_a_crashed_worker_loses_only_its_poll_and_is_replaced() -> None:
    """Two targets on a pool of two: the worker polling one is killed mid-poll; the other's poll, on the
    other worker, counts exactly, and the killed one's next poll runs on a replacement."""
    with Simulator(sessions=2000, seed=31) as slow, Simulator(sessions=700, seed=32) as fast:
        pool = WorkerPool(Hello(log_level="warning", log_format="text"), size=2)
        try:
            assert counts_of(pool.poll(request(fast))).total == fast.active_counts().total
            (first,) = pool.pids
            slow.latency = 0.3  # ten pages of 200: three seconds of polling to kill it in
            outcome: list[PollOutcome] = []
            polling = threading.Thread(target=lambda: outcome.append(pool.poll(request(slow))))
            polling.start()
            time.sleep(0.5)
            other = pool.poll(request(fast))  # the only worker is busy: a second one is started for this
            os.kill(first, signal.SIGKILL)
            polling.join(30)
            slow.latency = 0
            again = pool.poll(request(slow))
        finally:
            pool.close()
    assert counts_of(other).total == fast.active_counts().total
    assert isinstance(outcome[0].result, PollError) and outcome[0].result.reason == "internal"
    assert counts_of(again).total == slow.active_counts().total
    assert first not in pool.pids


def test_polls_queued_behind_a_worker_that_turns_over_share_it() -> None:
    """Eight polls at once, as targets starting together: each waits for the one worker, past GROW_AFTER for
    the last ones, but the worker ends a poll every 50 ms or so, so no second worker (35 MiB) is started."""
    with Simulator(sessions=200, seed=43) as sim:
        sim.latency = 0.05
        pool = WorkerPool(Hello(log_level="warning", log_format="text"), size=4)
        try:
            assert counts_of(pool.poll(request(sim))).total == sim.active_counts().total
            outcomes: list[PollOutcome] = []
            polls = [threading.Thread(target=lambda: outcomes.append(pool.poll(request(sim)))) for _ in range(8)]
            started = time.monotonic()
            for poll in polls:
                poll.start()
            for poll in polls:
                poll.join(30)
            waited = time.monotonic() - started
            assert [counts_of(o).total for o in outcomes] == [sim.active_counts().total] * 8
            assert waited > GROW_AFTER, "the last polls waited longer than GROW_AFTER for the worker"
            assert len(pool.pids) == 1
        finally:
            pool.close()


def wait_for_no_connections(sim: Simulator, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while sim.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.open_connections == 0, "a worker still holds a connection to the removed target's CMX"


@pytest.mark.parametrize("busy", [False, True])
def test_workers_forget_a_target_a_reload_removed(busy: bool) -> None:
    """Each worker keeps a client per target, with its connections open; once the target is no longer
    configured, an idle worker closes them at once, and a worker busy with its poll as that poll ends."""
    with Simulator(sessions=400, seed=41) as kept, Simulator(sessions=400, seed=42) as removed:
        pool = WorkerPool(Hello(log_level="warning", log_format="text"), size=2)
        try:
            for sim in (kept, removed):
                assert counts_of(pool.poll(request(sim))).total == sim.active_counts().total
            assert kept.open_connections and removed.open_connections, "connections stay open between polls"
            removed.latency = 0.3  # two pages: a reload comes while its poll is in flight
            polling = threading.Thread(target=pool.poll, args=(request(removed),))
            if busy:
                polling.start()
                time.sleep(0.2)
            pool.keep([request(kept).target])
            if busy:
                polling.join(30)
            wait_for_no_connections(removed)
            assert counts_of(pool.poll(request(kept))).total == kept.active_counts().total
            assert kept.open_connections, "the target still configured keeps its client"
        finally:
            pool.close()


def request(sim: Simulator) -> PollRequest:
    client = ClientOptions(url=sim.url, username="demo", password="demo", timeout=5.0, verify=True,
                           max_retry_wait=5.0)
    return PollRequest(target=sim.url, client=client, page_size=200, max_pages=100, max_label_values=50,
                       concurrency=1, poll_timeout=30)


def counts_of(outcome: PollOutcome) -> Counts:
    assert isinstance(outcome.result, Counts), outcome.result
    return outcome.result
