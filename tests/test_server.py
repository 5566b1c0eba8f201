"""The HTTP endpoints over real loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import time
import zlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from cmx_connect_exporter.config.targets import PollOptions, Target
from cmx_connect_exporter.counting.dimensions import DIMENSIONS, LABELS
from cmx_connect_exporter.exposition.snapshot import Store, TargetState
from cmx_connect_exporter.outcome import Counts, PollError
from cmx_connect_exporter.web.server import (
    MAX_HEAD_BYTES,
    REQUEST_TIMEOUT,
    App,
    HttpServer,
    accepts_gzip,
    landing_page,
    make_app,
)
from cmx_connect_exporter.web.webconfig import WebConfig
from exporter_process import ExporterProcess, parse_samples, up

COUNTS = Counts(total=3, by_label={label: {"a value": 3} for label in LABELS})


class FixedTargets:
    """The schedule as the HTTP side sees it, for one target polled in mode all."""

    def __init__(self, *targets: Target) -> None:
        self._targets = list(targets)

    def targets(self) -> list[Target]:
        return self._targets

    def probed(self, name: str) -> bool:
        return any(target.name == name for target in self._targets)

    def polled_here(self, name: str) -> bool | None:
        return None


TARGET = Target("venue-1", "https://cmx.test", PollOptions(poll_interval=30))


@pytest.fixture
def served() -> Iterator[tuple[str, TargetState, list[bool]]]:
    store = Store(version="9.9.9")
    state = store.add(TARGET.name, stale_after=60)
    health = [True]
    with running(make_app(store, FixedTargets(TARGET), healthy=lambda: health[0])) as url:
        yield url, state, health


@contextlib.contextmanager
def running(app: App) -> Iterator[str]:
    """The app served on a free loopback port, by its URL."""
    server = HttpServer(app, WebConfig())
    server.bind("127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def test_metrics_is_served_with_the_exposition_content_type(served: tuple[str, TargetState, list[bool]]) -> None:
    url, state, _ = served
    state.record_success(COUNTS, duration=0.5, requests=1)
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    got = parse_samples(response.text)
    assert all(got[(d.metric, tuple(sorted({"cmx": "venue-1", d.label: "a value"}.items())))] == 3
               for d in DIMENSIONS)


def test_landing_page_links_and_shows_the_state(served: tuple[str, TargetState, list[bool]]) -> None:
    url, state, _ = served
    state.record_failure(PollError("auth", "authentication failed (HTTP 401) <script>"), requests=1)
    page = requests.get(url + "/", timeout=5).text
    assert "href='/metrics'" in page and "href='/healthz'" in page
    assert "authentication failed (HTTP 401) &lt;script&gt;" in page
    assert "<script>" not in page


def test_healthz_follows_the_scheduler_not_cmx(served: tuple[str, TargetState, list[bool]]) -> None:
    url, state, health = served
    state.record_failure(PollError("connection", "cannot connect"), requests=1)
    assert requests.get(url + "/healthz", timeout=5).status_code == 200
    health[0] = False
    assert requests.get(url + "/healthz", timeout=5).status_code == 503


def test_unknown_paths_and_methods(served: tuple[str, TargetState, list[bool]]) -> None:
    url, _, _ = served
    assert requests.get(url + "/nope", timeout=5).status_code == 404
    assert requests.post(url + "/metrics", timeout=5).status_code == 405


@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz"])
def test_head_has_the_headers_of_get_and_no_body(path: str, served: tuple[str, TargetState, list[bool]]) -> None:
    """A body after HEAD would be read as the start of the next response on the connection.

    The GET pipelined behind the HEAD may be answered or not (the server closes after one request),
    but whatever follows the HEAD's headers must be a status line, never content.
    """
    url, state, _ = served
    state.record_success(COUNTS, duration=0.5, requests=1)
    get = requests.get(url + path, timeout=5)
    requests_sent = (f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    received = b""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5) as sock:
        sock.sendall(requests_sent.encode())
        while chunk := sock.recv(65536):  # the server closes the connection; the timeout bounds each wait
            received += chunk
    head, _, after = received.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert status.endswith(" 200 OK")
    assert headers["Content-Length"] == str(len(get.content)) != "0"
    assert headers["Content-Type"] == get.headers["Content-Type"]
    assert after == b"" or after.startswith(b"HTTP/1."), after[:80]


FORGED = "2026-01-01 00:00:00,000 INFO exporter: forged"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_request_line_can_neither_forge_nor_colour_log_lines(log_format: str) -> None:
    """At debug level every request line is logged; raw, its control characters could end a log line
    early (CR, NEL) to forge the next one, or drive the terminal of whoever reads the log (ESC)."""
    with ExporterProcess("--demo", "--log-level", "debug", "--log-format", log_format) as exporter:
        exporter.wait_for(up)
        for request_line in ("GET /\x1b[31minjected\r HTTP/1.0",  # a valid request for a path that is not there
                             f"GET /\x1b[31minjected\r\x85{FORGED} HTTP/1.0"):  # a malformed one
            with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as sock:
                sock.sendall(request_line.encode("latin-1") + b"\r\n\r\n")
                while sock.recv(65536):  # until the server closes; the timeout bounds each wait
                    pass
        log = exporter.stop()
    lines = log.splitlines()  # also at NEL and the other breaks a log viewer may honour
    messages = [json.loads(line)["message"] for line in lines] if log_format == "json" else lines
    ours = [message for message in messages if "injected" in message or "forged" in message]
    assert len(ours) == 2, ours  # the 404 and the 400, one line each
    for message in ours:
        assert '"GET /' in message, f"a log line was split: {message!r}"
        assert message.isprintable(), f"raw control characters: {message!r}"


@pytest.fixture
def two_targets() -> Iterator[tuple[str, Store]]:
    other = Target("venue-2", "https://cmx2.test", PollOptions(poll_interval=60))
    store = Store(version="9.9.9")
    store.add(TARGET.name, stale_after=60).record_success(COUNTS, duration=0.5, requests=1)
    store.add(other.name, stale_after=120).record_failure(PollError("auth", "CMX answered HTTP 401"), requests=1)
    with running(make_app(store, FixedTargets(TARGET, other), healthy=lambda: True)) as url:
        yield url, store


def test_probe_serves_one_targets_series_and_metrics_serves_all(two_targets: tuple[str, Store]) -> None:
    url, _ = two_targets
    probed = parse_samples(requests.get(url + "/probe", params={"target": "venue-2"}, timeout=5).text)
    every = parse_samples(requests.get(url + "/metrics", timeout=5).text)
    assert {dict(labels).get("cmx") for _, labels in probed} == {"venue-2"}
    assert {dict(labels).get("cmx") for _, labels in every} == {"venue-1", "venue-2", None}
    assert probed.items() <= every.items()


@pytest.mark.parametrize("path", ["/metrics", "/probe?target=venue-2"])
def test_gzip_for_scrapers_that_accept_it_is_one_member_of_the_same_text(two_targets: tuple[str, Store],
                                                                       path: str) -> None:
    """Prometheus asks for gzip; the text of many targets crosses as some 6% of its size, and decoded it is
    the text served to a scraper that does not ask."""
    url, _ = two_targets
    plain = requests.get(url + path, headers={"Accept-Encoding": "identity"}, timeout=5)
    refused = requests.get(url + path, headers={"Accept-Encoding": "gzip;q=0, identity"}, timeout=5)
    packed = requests.get(url + path, headers={"Accept-Encoding": "deflate, gzip"}, stream=True, timeout=5)
    raw = packed.raw.read(decode_content=False)
    assert "Content-Encoding" not in plain.headers and "Content-Encoding" not in refused.headers
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
    member = zlib.decompressobj(31)
    assert member.decompress(raw) == plain.content == refused.content
    assert member.eof and member.unused_data == b"", "one gzip member, which every client reads whole"


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True), ("GZip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False), ("gzip; q=0.000", False),
    ("identity", False), ("x-gzip, br", False), (None, False),
])
def test_accept_encoding_is_read_as_rfc_9110_weighs_it(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(header) is gzip


@pytest.mark.parametrize(("query", "status"), [
    ({"target": "nowhere"}, 404),
    ({"target": "https://attacker.example/"}, 404),
    ({"target": "venue-1", "url": "https://attacker.example/"}, 400),
    ({"target": "venue-1", "password": "x"}, 400),
    ({}, 400),
])
def test_probe_takes_only_a_configured_name(two_targets: tuple[str, Store], query: dict[str, str],
                                            status: int) -> None:
    url, _ = two_targets
    response = requests.get(url + "/probe", params=query, timeout=5)
    assert response.status_code == status
    assert "cmx_connect" not in response.text
    assert ("no target named" if status == 404 else "URLs and credentials are never taken") in response.text


def test_landing_page_lists_every_target_and_names_the_failure(two_targets: tuple[str, Store]) -> None:
    url, _ = two_targets
    page = requests.get(url + "/", timeout=5).text
    rows = page.split("<tr>")[2:]
    assert [row.split("</td>")[0].removeprefix("<td>") for row in rows] == ["venue-1", "venue-2"]
    assert "<td>up</td>" in rows[0] and "<td>30 s</td>" in rows[0]
    assert "<td>down</td>" in rows[1] and "CMX refused the credentials" in rows[1] and "<td>60 s</td>" in rows[1]
    assert "not reachable" not in page


def test_in_probed_mode_metrics_serves_only_the_process_wide_series() -> None:
    """Each target's series come from /probe of the replica that polls it; here they would show a target
    polled elsewhere as never polled."""
    store = Store(version="9.9.9")
    store.add(TARGET.name, stale_after=60).record_success(COUNTS, duration=0.5, requests=1)
    with running(make_app(store, FixedTargets(TARGET), healthy=lambda: True, probed_mode=True)) as url:
        every = parse_samples(requests.get(url + "/metrics", timeout=5).text)
        probed = parse_samples(requests.get(url + "/probe", params={"target": TARGET.name}, timeout=5).text)
    assert {name for name, _ in every} == {"cmx_connect_exporter_build_info"}
    assert probed[("cmx_connect_active_sessions", (("cmx", TARGET.name),))] == 3


class ProbedTargets(FixedTargets):
    """Probed mode: this replica polls only ``here``."""

    def __init__(self, here: str, *targets: Target) -> None:
        super().__init__(*targets)
        self.here = here

    def polled_here(self, name: str) -> bool | None:
        return name == self.here


def test_in_probed_mode_the_landing_page_says_which_targets_this_replica_polls() -> None:
    other = Target("venue-2", "https://cmx2.test", PollOptions(poll_interval=60))
    store = Store(version="9.9.9")
    store.add(TARGET.name, stale_after=60)
    store.add(other.name, stale_after=120)
    page = landing_page(store, ProbedTargets("venue-2", TARGET, other))
    first, second = page.split("<tr>")[2:]
    assert "Polled by this replica" in page
    assert "<td>no (not probed here lately)</td>" in first and "<td>never polled</td>" in first
    assert "<td>yes</td>" in second


def exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes, and read until the server closes the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5) as sock:
        sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def test_requests_on_a_kept_alive_connection_are_answered_in_turn(served: tuple[str, TargetState, list[bool]]) -> None:
    url, _, _ = served
    answers = exchange(url, b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n" * 2
                       + b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3 and answers.endswith(b"ok\n")


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", b"405"),
    (b"GET /metrics\r\n\r\n", b"400"),
    (b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n", b"400"),
], ids=["a-body-ends-the-connection", "no-version", "a-header-without-colon"])
def test_a_request_the_server_does_not_take_is_answered_and_its_connection_closed(
        request_bytes: bytes, status: bytes, served: tuple[str, TargetState, list[bool]]) -> None:
    url, _, _ = served
    answer = exchange(url, request_bytes + b"GET /healthz HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status) and answer.count(b"HTTP/1.1 ") == 1
    assert b"Connection: close" in answer


def test_headers_past_the_limit_drop_the_connection_unanswered(served: tuple[str, TargetState, list[bool]]) -> None:
    url, _, _ = served
    assert exchange(url, b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n") == b""


def test_headers_trickled_a_byte_at_a_time_are_dropped_at_the_request_deadline(
        served: tuple[str, TargetState, list[bool]]) -> None:
    """Each byte comes in time for a per-read timeout; the whole request does not come in time."""
    url, _, _ = served
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")
            while time.monotonic() - started < REQUEST_TIMEOUT + 3:
                sock.sendall(b"X")
                time.sleep(0.25)
        dropped_after = time.monotonic() - started
    assert REQUEST_TIMEOUT <= dropped_after < REQUEST_TIMEOUT + 2
