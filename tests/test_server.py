"""The HTTP endpoints over real loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from cmx_connect_exporter.counting.dimensions import DIMENSIONS, LABELS
from cmx_connect_exporter.exposition.snapshot import State
from cmx_connect_exporter.outcome import Counts, PollError
from cmx_connect_exporter.web.server import MAX_HEAD_BYTES, REQUEST_TIMEOUT, HttpServer, make_app
from cmx_connect_exporter.web.webconfig import WebConfig
from exporter_process import ExporterProcess, up

COUNTS = Counts(total=3, by_label={label: {"a value": 3} for label in LABELS})


@pytest.fixture
def served() -> Iterator[tuple[str, State, list[bool]]]:
    state = State(stale_after=60, version="9.9.9")
    health = [True]
    server = HttpServer(make_app(state, healthy=lambda: health[0]), WebConfig())
    server.bind("127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", state, health
    finally:
        server.stop()


def test_metrics_is_served_with_the_exposition_content_type(served: tuple[str, State, list[bool]]) -> None:
    url, state, _ = served
    state.record_success(COUNTS, duration=0.5, requests=1)
    response = requests.get(url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert all(f'{d.metric}{{{d.label}="a value"}} 3.0' in response.text for d in DIMENSIONS)


def test_landing_page_links_and_shows_the_state(served: tuple[str, State, list[bool]]) -> None:
    url, state, _ = served
    state.record_failure(PollError("auth", "authentication failed (HTTP 401) <script>"), requests=1)
    page = requests.get(url + "/", timeout=5).text
    assert "href='/metrics'" in page and "href='/healthz'" in page
    assert "authentication failed (HTTP 401) &lt;script&gt;" in page
    assert "<script>" not in page


def test_healthz_follows_the_scheduler_not_cmx(served: tuple[str, State, list[bool]]) -> None:
    url, state, health = served
    state.record_failure(PollError("connection", "cannot connect"), requests=1)
    assert requests.get(url + "/healthz", timeout=5).status_code == 200
    health[0] = False
    assert requests.get(url + "/healthz", timeout=5).status_code == 503


def test_unknown_paths_and_methods(served: tuple[str, State, list[bool]]) -> None:
    url, _, _ = served
    assert requests.get(url + "/nope", timeout=5).status_code == 404
    assert requests.post(url + "/metrics", timeout=5).status_code == 405


@pytest.mark.parametrize("path", ["/metrics", "/", "/healthz"])
def test_head_has_the_headers_of_get_and_no_body(path: str, served: tuple[str, State, list[bool]]) -> None:
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


def exchange(url: str, data: bytes) -> bytes:
    """Send raw bytes, and read until the server closes the connection."""
    received = b""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=5) as sock:
        sock.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += chunk
    return received


def test_requests_on_a_kept_alive_connection_are_answered_in_turn(served: tuple[str, State, list[bool]]) -> None:
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
        request_bytes: bytes, status: bytes, served: tuple[str, State, list[bool]]) -> None:
    url, _, _ = served
    answer = exchange(url, request_bytes + b"GET /healthz HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 " + status) and answer.count(b"HTTP/1.1 ") == 1
    assert b"Connection: close" in answer


def test_headers_past_the_limit_drop_the_connection_unanswered(served: tuple[str, State, list[bool]]) -> None:
    url, _, _ = served
    assert exchange(url, b"GET /healthz HTTP/1.1\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n") == b""


def test_headers_trickled_a_byte_at_a_time_are_dropped_at_the_request_deadline(
        served: tuple[str, State, list[bool]]) -> None:
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
