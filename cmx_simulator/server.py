"""The simulator as a server: HTTP plumbing, and the Simulator that ties population, API and faults.

It serves ``GET /api/connect/v1/clients`` and ``/api/connect/v1/clients/export`` the way
``shared/reference/cmx-connect-api.md`` describes them, so the exporter's demo mode,
integration tests and benchmarks can run against real HTTP without a CMX. The data is
deliberately messy (padding, ``null``, missing and alternate keys, over-long values), while
each session remembers what the generator chose, so :meth:`Simulator.active_counts`,
:meth:`Simulator.active_sessions` and :meth:`Simulator.venue_counts` are independent ground truth.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import logging
import random
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from cmx_connect_exporter.counting.dimensions import LAST_LOGOUT_KEYS
from cmx_simulator import faults
from cmx_simulator.api import (
    CLIENTS_PATH,
    CSV,
    EXPORT_PATH,
    MAX_COUNT,
    TEXT,
    BadQuery,
    Query,
    csv_export,
    parse_query,
    select,
)
from cmx_simulator.population import ActiveCounts, Population, SessionTruth, VenueCounts
from cmx_simulator.records import DEFAULT_TIME_FORMAT, Records

log = logging.getLogger(__name__)

REALM = 'Basic realm="MSE API Service"'


class Simulator:
    """A CMX Connect API server over a deterministic synthetic population."""

    def __init__(
        self,
        sessions: int = 5000,
        *,
        active_fraction: float = 0.7,
        seed: int = 1,
        username: str = "demo",
        password: str = "demo",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        error_rate: float = 0.0,
        churn: int = 0,
        time_format: str = DEFAULT_TIME_FORMAT,
        logout_key: str = LAST_LOGOUT_KEYS[0],
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        """``sessions`` guests, ``active_fraction`` of them active, drawn from ``seed``.

        ``churn`` guests log in, and as many log out, before each request is answered;
        ``time_format`` names how records write their times, one of records.TIME_FORMATS;
        ``logout_key`` how they spell the logout time, either spelling the catalogue accepts.
        """
        self.latency = latency
        self.error_rate = error_rate
        self.churn = churn
        self.requests_served = 0
        # Requests by their Host header: which of several names for this server a client used
        self.requests_by_host: Counter[str] = Counter()
        self.fault_from_index = 0  # the fault hits clients requests from this index on: "page k of n"
        self._host, self._port = host, port
        self._certfile, self._keyfile = certfile, keyfile
        self.set_credentials(username, password)
        self._fault: str | None = None
        self._lock = threading.RLock()  # the population and its records change under churn
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error_rng = random.Random(seed ^ 0x5EED)  # error_rate draws, independent of churn
        self._population = Population(sessions, active_fraction, seed)
        self._records = Records(self._population, time_format, logout_key)

    def set_credentials(self, username: str, password: str) -> None:
        """What the API accepts from now on, as when CMX's API user is given a new password."""
        self._auth = b"Basic " + base64.b64encode(f"{username}:{password}".encode())

    # --- ground truth -----------------------------------------------------------------

    def active_counts(self) -> ActiveCounts:
        """Active sessions by canonical label value, as the generator chose them."""
        with self._lock:
            return self._population.active_counts()

    def active_sessions(self) -> list[SessionTruth]:
        """Every active session as the generator chose it: site, portal, times, bytes. O(active sessions)."""
        with self._lock:
            return self._population.active_sessions()

    def venue_counts(self) -> VenueCounts:
        """Active sessions by site, portal and portal type; new and returning; bytes summed."""
        return VenueCounts.of(self.active_sessions())

    def visitors_since(self, start: int) -> VenueCounts:
        """The same for every session, active or not, with its last login at ``start`` (epoch seconds) or later."""
        with self._lock:
            return VenueCounts.of(self._population.sessions_since(start))

    # --- what faults use --------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """The misbehaviour applied to clients requests, or None: a name in faults.FAULTS, ``status:NNN``
        or ``redirect:URL``."""
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value is not None:
            faults.check(value)
        self._fault = value

    def page(self, q: Query, limit: int | None = None) -> tuple[list[bytes], int]:
        """Encoded records and nextIndex for q; ``limit`` overrides the page size (faults use it)."""
        with self._lock:
            sessions, more = select(self._population, q, q.count if limit is None else limit)
            records = [self._records.json(s) for s in sessions]
        return records, (q.index + len(records) if more else 0)

    def wait(self, seconds: float) -> bool:
        """Sleep unless stopping; False means the server is shutting down."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    @property
    def open_connections(self) -> int:
        """Client connections open now: a client keeps some between polls, one that forgot this CMX none."""
        server = self._server
        if server is None:
            return 0
        with server.connections_lock:
            return len(server.connections)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # --- serving ----------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        """Answer one GET: count, delay, authenticate, churn, fail on purpose, then serve."""
        with self._lock:
            self.requests_served += 1
            self.requests_by_host[h.headers.get("Host", "")] += 1
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/")
        if path not in (CLIENTS_PATH, EXPORT_PATH):
            h.send_body(404, TEXT, b"Not Found")
            return
        if not self.wait(self.latency):
            h.close_connection = True
            return
        if not hmac.compare_digest(h.headers.get("Authorization", "").encode(), self._auth):
            h.send_body(401, TEXT, b"Unauthorized", {"WWW-Authenticate": REALM})
            return
        try:
            q = parse_query(parts.query, self._records)
        except BadQuery as exc:
            h.send_body(400, TEXT, str(exc).encode())
            return
        with self._lock:
            self._population.churn(self.churn)
            failed = self.error_rate > 0 and self._error_rng.random() < self.error_rate
        fault = self._fault if q.index >= self.fault_from_index else None
        if failed:
            h.send_body(500, TEXT, b"CMX Error")
        elif path == EXPORT_PATH:
            self._export(h, q)
        elif fault is None:
            faults.serve_page(h, q)
        else:
            faults.answer(h, q, fault)

    def _export(self, h: _Handler, q: Query) -> None:
        """The whole query as CSV, streamed in chunks so a million rows never sit in memory."""
        with self._lock:
            sessions, _ = select(self._population, replace(q, index=0), None)

        def batches() -> Iterator[list[dict[str, object]]]:
            for start in range(0, len(sessions), MAX_COUNT):
                with self._lock:
                    batch = [self._records.fields(s) for s in sessions[start : start + MAX_COUNT]]
                yield batch

        h.send_chunked(200, CSV, csv_export(batches()), {"Content-Disposition": "attachment"})

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self._certfile else 'http'}://{host}:{port}"

    def start(self) -> Simulator:
        """Listen and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        context = None
        if self._certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._certfile, self._keyfile)
        self._stopping.clear()
        self._server = _Server((self._host, self._port), self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="cmx-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections, so slow faults end too."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- HTTP plumbing -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler that hands every GET to the simulator."""

    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120  # an idle keep-alive connection is dropped after this
    answered = False  # whether the closes_kept_alive fault answered a request on this connection
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for an ACK between

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, not in the accept loop, so a slow client blocks no one
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        super().finish()

    def do_GET(self) -> None:
        self.sim._handle(self)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: benchmarks make millions of requests."""

    def _head(self, status: int, content_type: str, headers: dict[str, str] | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)

    def send_body(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._head(status, content_type, headers)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_stream(self, status: int, content_type: str, length: int, chunks: Iterable[bytes]) -> None:
        """Headers with a known Content-Length, then the body piece by piece."""
        self._head(status, content_type, None)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()

    def send_chunked(
        self, status: int, content_type: str, chunks: Iterable[bytes], headers: dict[str, str] | None = None
    ) -> None:
        """A body of unknown length, with chunked transfer encoding (keeps the connection usable)."""
        self._head(status, content_type, headers)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections, so stop() can cut them."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a hanging handler

    def __init__(self, address: tuple[str, int], sim: Simulator, context: ssl.SSLContext | None) -> None:
        self.sim = sim
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self.connections_lock:
            if add:
                self.connections.add(sock)
            else:
                self.connections.discard(sock)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-answer are normal here (timeouts, faults); log quietly."""
        log.debug("simulator connection from %s ended with an error", client_address, exc_info=True)
