"""The exporter's HTTP side under hostile clients, through the console script over real loopback sockets:
a flood of wrong passwords, thousands of idle connections, stalled TLS handshakes, the fd limit.

Each test runs for seconds, with bounded loops; the thresholds are those of issue 14, and the figures
each run measured are printed (``pytest -s``) for the README's Failure behaviour section.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from cmx_connect_exporter.web.server import MAX_CONNECTIONS, REQUEST_TIMEOUT
from cmx_simulator import Simulator
from exporter_process import (
    ExporterProcess,
    Scraper,
    cpu_seconds,
    issued_certificate,
    open_fds,
    p99,
    proc_status,
    up,
)

pytestmark = pytest.mark.slow

USER, PASSWORD = "prometheus", "scrape-pw-5d1e"
COST = 10  # what htpasswd -nBC 10 makes: each wrong guess costs the exporter a real bcrypt check
FLOOD = Path(__file__).with_name("auth_flood.py")


@pytest.fixture(scope="module")
def cmx() -> Iterator[Simulator]:
    with Simulator(300, seed=4) as sim:
        yield sim


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return issued_certificate(tmp_path_factory.mktemp("hostile-tls"))


def web_config(folder: Path, tls: tuple[Path, Path, Path] | None = None) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(COST)).decode()
    section = f"tls_server_config:\n  cert_file: {tls[1]}\n  key_file: {tls[2]}\n" if tls else ""
    path = folder / "web.yml"
    path.write_text(f"{section}basic_auth_users:\n  {USER}: {hashed}\n")
    return path


@contextlib.contextmanager
def exporter_behind(cmx: Simulator, config: Path, *wrapper: str, tls_ca: Path | None = None,
                    ) -> Iterator[ExporterProcess]:
    with ExporterProcess("--url", cmx.url, "--username", "demo", "--poll-interval", "30",
                         env={"CMX_PASSWORD": "demo", "CMX_WEB_CONFIG_FILE": str(config)}, wrapper=wrapper,
                         scheme="https" if tls_ca else "http") as exporter:
        exporter.http.auth = (USER, PASSWORD)
        if tls_ca:
            exporter.http.verify = str(tls_ca)
        exporter.wait_for(up)  # and the credentials have passed bcrypt once: remembered from here on
        yield exporter


def hold(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing; those the server drops are simply dropped."""
    held = []
    for _ in range(count):
        with contextlib.suppress(OSError):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    return held


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed or reset this connection (a blocking read waits up to its timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_flood_of_wrong_passwords_neither_slows_scrapes_nor_takes_more_than_a_core(
        cmx: Simulator, tmp_path: Path) -> None:
    """1,000 wrong-password requests a second for 10 s, from 50 loopback addresses."""
    with exporter_behind(cmx, web_config(tmp_path)) as exporter:
        healthz = requests.Session()
        scrapers = [Scraper(exporter.http, exporter.url + "/metrics"), Scraper(healthz, exporter.url + "/healthz")]
        cpu_before, started = cpu_seconds(exporter.pid), time.monotonic()
        flood = subprocess.Popen([sys.executable, str(FLOOD), str(exporter.port), "10", "1000", "50"],
                                 stdout=subprocess.PIPE, text=True)
        for scraper in scrapers:
            scraper.start()
        statuses = json.loads(flood.communicate(timeout=60)[0])
        cores = (cpu_seconds(exporter.pid) - cpu_before) / (time.monotonic() - started)
        metrics, health = (scraper.finish() for scraper in scrapers)
        log = exporter.stop()
    sent = sum(statuses.values())
    print(f"\nauth flood: {sent} requests in 10 s {dict(statuses)}; exporter {cores:.2f} cores; "
          f"/metrics p99 {p99(metrics):.1f} ms of {len(metrics)}, /healthz p99 {p99(health):.1f} ms of {len(health)}")
    assert sent >= 9000, "the flood did not reach 900 requests a second"
    assert statuses["401"] > 0 and statuses["429"] > 0 and "200" not in statuses
    assert p99(metrics) < 100 and p99(health) < 100
    assert cores <= 1.2
    assert "Traceback" not in log


def test_thousands_of_idle_connections_hold_no_threads_and_little_memory(cmx: Simulator, tmp_path: Path) -> None:
    """5,000 connections that send nothing: the server holds at most MAX_CONNECTIONS of them, drops the oldest
    for each new one, and drops the rest after REQUEST_TIMEOUT."""
    with exporter_behind(cmx, web_config(tmp_path)) as exporter:
        time.sleep(1)
        before = proc_status(exporter.pid)
        fds_before = open_fds(exporter.pid)
        held = hold(exporter.port, 5000)
        scraper = Scraper(exporter.http, exporter.url + "/metrics", every=0.02)  # ~200 scrapes: p99 is not the worst
        scraper.start()
        time.sleep(4)
        during, fds_during = proc_status(exporter.pid), open_fds(exporter.pid)
        millis = scraper.finish()
        time.sleep(REQUEST_TIMEOUT + 2)
        after, fds_after = proc_status(exporter.pid), open_fds(exporter.pid)
        for sock in held:
            sock.close()
        exporter.stop()
    growth = (during["VmHWM"] - before["VmRSS"]) / 1024  # from the peak: connections come and go meanwhile
    print(f"\nidle connections: {len(held)} opened; threads {before['Threads']} -> {during['Threads']} -> "
          f"{after['Threads']}; fds {fds_before} -> {fds_during} -> {fds_after}; peak RSS +{growth:.1f} MiB; "
          f"/metrics p99 {p99(millis):.1f} ms of {len(millis)}")
    assert len(held) == 5000
    assert during["Threads"] <= 100 and fds_during <= fds_before + MAX_CONNECTIONS + 10
    assert growth < 20
    assert p99(millis) < 50 and scraper.failures == 0
    assert after["Threads"] <= before["Threads"] and fds_after <= fds_before  # less when a scraper's connection ended


def test_stalled_tls_handshakes_cost_no_thread_and_no_traceback(cmx: Simulator, tmp_path: Path,
                                                                 tls: tuple[Path, Path, Path]) -> None:
    """300 clients that connect to the TLS port and never finish a handshake: half send nothing, half the first
    bytes of a ClientHello."""
    with exporter_behind(cmx, web_config(tmp_path, tls), tls_ca=tls[0]) as exporter:
        held = hold(exporter.port, 300)
        for sock in held[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # a handshake record of 512 bytes, of which one comes
        scraper = Scraper(exporter.http, exporter.url + "/metrics", every=0.02)  # ~200 scrapes: p99 is not the worst
        scraper.start()
        time.sleep(4)
        threads = proc_status(exporter.pid)["Threads"]
        millis = scraper.finish()
        time.sleep(REQUEST_TIMEOUT + 1)
        dropped = sum(closed_by_server(sock) for sock in held)  # the server closed each at its deadline
        for sock in held:
            sock.close()
        log = exporter.stop()
    print(f"\nstalled TLS handshakes: 300; threads {threads}; /metrics p99 {p99(millis):.1f} ms of {len(millis)}; "
          f"{dropped} dropped at the deadline")
    assert p99(millis) < 50 and scraper.failures == 0
    assert threads <= 100
    assert dropped == 300
    assert "Traceback" not in log and "Error" not in log


def test_at_the_fd_limit_the_server_neither_spins_nor_stops_serving(cmx: Simulator, tmp_path: Path) -> None:
    """Under ``ulimit -n 64``, 200 connections held: the server keeps as many as its fds allow, drops the
    oldest for a new one, and a scrape gets in."""
    with exporter_behind(cmx, web_config(tmp_path), "sh", "-c", 'ulimit -n 64 && exec "$@"', "sh") as exporter:
        assert open_fds(exporter.pid) < 64
        held = hold(exporter.port, 200)
        time.sleep(1)
        cpu_before, started = cpu_seconds(exporter.pid), time.monotonic()
        time.sleep(5)
        cores = (cpu_seconds(exporter.pid) - cpu_before) / (time.monotonic() - started)
        started = time.monotonic()
        answered = exporter.http.get(exporter.url + "/metrics", timeout=5).status_code
        during = time.monotonic() - started
        for sock in held:
            sock.close()
        started = time.monotonic()
        answered_after = exporter.http.get(exporter.url + "/metrics", timeout=5).status_code
        after = time.monotonic() - started
        log = exporter.stop()
    warnings = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    print(f"\nfd limit 64, 200 connections held: exporter {cores * 100:.1f}% of a core; "
          f"scrape in {during * 1000:.0f} ms while held, {after * 1000:.0f} ms after; warnings: {warnings}")
    assert cores < 0.1
    assert (answered, answered_after) == (200, 200) and during < 1 and after < 1
    assert len(warnings) <= 1, warnings
    assert "Traceback" not in log


def test_past_its_bound_the_server_drops_the_oldest_waiting_connection_first(cmx: Simulator, tmp_path: Path) -> None:
    with exporter_behind(cmx, web_config(tmp_path), "sh", "-c", 'ulimit -n 64 && exec "$@"', "sh") as exporter:
        first = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
        held = hold(exporter.port, 100)
        time.sleep(1)
        assert closed_by_server(first), "the oldest connection was dropped"
        held[-1].sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert held[-1].recv(100).startswith(b"HTTP/1.1 200 OK"), "the newest was kept"
        for sock in (first, *held):
            sock.close()
        exporter.stop()


def test_connections_dropped_mid_handshake_to_make_room_are_dropped_quietly(
        cmx: Simulator, tmp_path: Path, tls: tuple[Path, Path, Path]) -> None:
    """Under ``ulimit -n 64`` with TLS on, 100 connections stalled in their handshakes: the oldest make room
    for the newest, and each one dropped so is routine, never an "unexpected" error."""
    with exporter_behind(cmx, web_config(tmp_path, tls), "sh", "-c", 'ulimit -n 64 && exec "$@"', "sh",
                         tls_ca=tls[0]) as exporter:
        first = socket.create_connection(("127.0.0.1", exporter.port), timeout=5)
        first.sendall(b"\x16\x03\x01\x02\x00\x01")  # inside a ClientHello when it is dropped
        held = hold(exporter.port, 100)
        for sock in held[::2]:
            sock.sendall(b"\x16\x03\x01\x02\x00\x01")
        time.sleep(1)
        assert closed_by_server(first), "the oldest connection was dropped"
        for sock in (first, *held):
            sock.close()
        answered = exporter.http.get(exporter.url + "/metrics", timeout=5).status_code
        log = exporter.stop()
    assert answered == 200
    assert "unexpected" not in log and " ERROR " not in log and "Traceback" not in log, log
