"""The HTTP side: ``/metrics``, ``/probe?target=<name>``, a landing page at ``/`` and ``/healthz``, on one
asyncio event loop.

Hostile clients cost little and are dropped soon: a connection is a few kilobytes, never a thread;
each request, TLS handshake included, must arrive whole within ``REQUEST_TIMEOUT``; at most
``max_connections`` are held, and past that the one waiting longest for its request is dropped, so a
scraper that sends its request at once always finds room. A TLS handshake runs on the loop, for
each connection with the context in force when it arrived, so a renewed certificate is served from
the next connection. wsgiref, cheroot and uvicorn were measured and read first: see the README's
Failure behaviour for why none of them holds these bounds.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST

from cmx_connect_exporter.config.targets import Target
from cmx_connect_exporter.exposition.snapshot import Snapshot, Store
from cmx_connect_exporter.outcome import REASON_TEXT
from cmx_connect_exporter.web.auth import AuthGate, Verdict
from cmx_connect_exporter.web.webconfig import CHALLENGE, OPEN_PATHS, WebConfig, load_web_config

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # from connect (or the last answer) to the end of a request's headers, TLS handshake included
WRITE_TIMEOUT = 5.0  # for a client to take an answer
MAX_HEAD_BYTES = 16384  # request line and headers
MAX_CONNECTIONS = 1000  # held at once, and no more than the fd limit leaves room for
FD_RESERVE = 32  # file descriptors kept for everything but connections: the worker's pipes, logs, imports
BACKLOG = 128  # a burst of scrapers must not overflow the accept queue: each dropped SYN costs a 1 s retransmit
OUT_OF_FDS_LOG_EVERY = 60.0
_REFUSED = re.compile(r"q\s*=\s*0(\.0{0,3})?")  # an Accept-Encoding's weight of zero

# What a logged request line may not hold raw: control characters could end the log line early, forging
# the next one, or drive the terminal of whoever reads the log. The request line is decoded as Latin-1,
# so nothing above U+00FF comes; the backslash is escaped too, so an escape cannot be faked.
_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in range(0x100) if not chr(c).isprintable()} | {ord("\\"): "\\\\"})


@dataclass(frozen=True, slots=True)
class Response:
    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class Targets(Protocol):
    """What the HTTP side knows of the schedule: the targets, and probes of them."""

    def targets(self) -> list[Target]: ...

    def probed(self, name: str) -> bool: ...

    def polled_here(self, name: str) -> bool | None: ...


App = Callable[[str, str, bool], Response]  # the path and the query of a GET or HEAD, and whether gzip is accepted


def make_app(store: Store, targets: Targets, healthy: Callable[[], bool], probed_mode: bool = False) -> App:
    """In probed mode ``/metrics`` serves only the process-wide series: each target's come from ``/probe`` of
    the one replica that polls it, and a target polled elsewhere would show here as never polled."""

    def app(path: str, query: str, gzipped: bool) -> Response:
        if path == "/metrics":
            return _exposition(store.exposition(targets=not probed_mode, gzipped=gzipped), gzipped)
        if path == "/probe":
            return _probe(query, store, targets, gzipped)
        if path == "/healthz":
            ok = healthy()
            return Response("200 OK", b"ok\n") if ok else Response("503 Service Unavailable", b"scheduler stopped\n")
        if path == "/":
            return Response("200 OK", landing_page(store, targets).encode(), "text/html; charset=utf-8")
        return Response("404 Not Found", b"not found; try /metrics\n")

    return app


def _exposition(body: bytes, gzipped: bool) -> Response:
    encoding = (("Content-Encoding", "gzip"),) if gzipped else ()
    return Response("200 OK", body, CONTENT_TYPE_LATEST, headers=(*encoding, ("Vary", "Accept-Encoding")))


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an Accept-Encoding header takes gzip: named, and not refused by ``q=0`` (RFC 9110)."""
    for coding in (accept_encoding or "").split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() == "gzip":
            return _REFUSED.fullmatch(params.strip().lower()) is None
    return False


def _probe(query: str, store: Store, targets: Targets, gzipped: bool) -> Response:
    """One configured target's series, by name only: a URL or credentials in the query are refused, as
    blackbox_exporter does, so a scrape config can never point the exporter at a host of its choosing."""
    params = parse_qs(query, keep_blank_values=True)
    names = params.get("target", [])
    if set(params) != {"target"} or len(names) != 1:
        return Response("400 Bad Request",
                        b"give exactly one parameter, target=<name> of a configured target; URLs and credentials "
                        b"are never taken from the query, only from the targets file\n")
    name = names[0]
    state = store.get(name)
    if state is None or not targets.probed(name):
        shown = name[:64].translate(_ESCAPES)
        return Response("404 Not Found",
                        f"no target named {shown!r} is configured; the targets are listed at /\n".encode())
    return _exposition(state.exposition(gzipped), gzipped)


def landing_page(store: Store, targets: Targets) -> str:
    """Links and every target's state; every value shown is the exporter's own, escaped."""
    probed = [(target, targets.polled_here(target.name)) for target in targets.targets()]
    mode = any(here is not None for _, here in probed)
    head = ["CMX", "State", "Active sessions", "Last successful poll", "Last error", "Interval",
            *(["Polled by this replica"] if mode else [])]
    rows = []
    for target, here in probed:
        state = store.get(target.name)
        snap = state.snapshot if state is not None else Snapshot()
        error = snap.last_error
        cells = [
            target.name,
            "up" if snap.up else ("never polled" if error is None else "down"),
            str(snap.counts.total) if snap.counts else "none yet",
            _time(snap.last_success),
            f"{REASON_TEXT[error.reason]} ({error.reason}: {error})" if error is not None else "none",
            f"{target.options.poll_interval:g} s",
            *([("yes" if here else "no (not probed here lately)")] if mode else []),
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
    header = "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in head) + "</tr>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>CMX Connect exporter</title></head>"
        "<body><h1>CMX Connect exporter</h1>"
        "<p><a href='/metrics'>Metrics</a> (every target) &middot; /probe?target=&lt;name&gt; (one target) "
        "&middot; <a href='/healthz'>Health</a></p>"
        f"<table>{header}{''.join(rows)}</table></body></html>"
    )


def _time(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds") if timestamp else "never"


_METHOD_NOT_ALLOWED = Response("405 Method Not Allowed", b"only GET\n", headers=(("Allow", "GET, HEAD"),))
_BAD_REQUEST = Response("400 Bad Request", b"bad request\n")
_UNAUTHORIZED = Response("401 Unauthorized", b"401 Unauthorized: this exporter needs basic auth credentials\n",
                         headers=(("WWW-Authenticate", CHALLENGE),))
_BUSY = Response("429 Too Many Requests", b"too many authentication attempts; try again later\n",
                 headers=(("Retry-After", "1"),))


class _Request:
    """A request line and its headers, as far as a server of GET and HEAD needs them."""

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.line = lines[0]
        parts = self.line.split(" ")
        self.valid = len(parts) == 3 and parts[2] in ("HTTP/1.0", "HTTP/1.1")
        self.method, target = (parts[0], parts[1]) if self.valid else ("", "")
        self.path, _, self.query = target.partition("?")
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self.valid = False
                break
            self.headers[name.lower()] = value.strip()
        connection = self.headers.get("connection", "").lower()
        has_body = self.headers.get("content-length", "0") != "0" or "transfer-encoding" in self.headers
        # a body is never read, so a request that has one ends its connection
        self.keep_alive = self.valid and not has_body and (
            connection == "keep-alive" if parts[2:] == ["HTTP/1.0"] else connection != "close")


class HttpServer:
    """The event loop in its own thread, and what it serves; ``reload`` swaps TLS and users while it runs."""

    def __init__(self, app: App, web: WebConfig) -> None:
        self._app = app
        self.web = web
        self._tls = web.ssl_context
        self._gate = AuthGate(web.users) if web.users else None
        self._next_gate = self._gate  # the one the last reload chose, which the loop may not have taken yet
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.max_connections = max(4, min(MAX_CONNECTIONS, limit - FD_RESERVE))
        self._open = 0
        # the tasks of connections waiting for a request (TLS handshake included), oldest first
        self._waiting: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_error)
        self._last_out_of_fds = -OUT_OF_FDS_LOG_EVERY
        self._sock: socket.socket | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    def bind(self, host: str, port: int) -> None:
        """Listen on ``host:port`` now, so that a bad address stops the start. Raises OSError."""
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._sock = sock

    @property
    def port(self) -> int:
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def start(self) -> None:
        """Serve in a daemon thread."""
        ready = threading.Event()

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._connection, sock=self._sock, limit=MAX_HEAD_BYTES,
                                                      backlog=BACKLOG)
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.create_task(open_server())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="http", daemon=True)
        self._thread.start()
        ready.wait(10)

    def reload(self, path: Path) -> bool:
        """Read the web config file again and serve new connections with it, if it changed; thread-safe.
        Raises WebConfigError, and then what was in force stays."""
        web = load_web_config(path)
        if web.digest == self.web.digest:
            return False
        # a gate costs a bcrypt hash to make: made here, not on the loop; the same users keep theirs, and what passed
        if dict(web.users) != dict(self.web.users):
            self._next_gate = AuthGate(web.users) if web.users else None
        self.web = web
        self._loop.call_soon_threadsafe(self._apply, web.ssl_context, self._next_gate)
        return True

    def _apply(self, tls: ssl.SSLContext | None, gate: AuthGate | None) -> None:
        self._tls = tls
        if self._gate is not None and self._gate is not gate:
            self._gate.close()
        self._gate = gate

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the loop's thread."""

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._gate is not None:
                self._gate.close()

        if self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        self._open += 1
        try:
            if self._open > self.max_connections and not self._make_room():
                writer.transport.abort()  # every other connection is being answered: refused at once
                return
            await self._serve(reader, writer, peer[0])
        except (OSError, EOFError, TimeoutError, asyncio.LimitOverrunError) as exc:
            # a client that hangs up, stalls, fails its handshake or sends too much: routine, never a traceback
            log.debug("connection from %s dropped: %s", peer[0], type(exc).__name__)
        except Exception as exc:  # the server's own failure: one line, and the other connections go on
            log.error("HTTP connection from %s failed: unexpected %s; please report it", peer[0], type(exc).__name__)
        finally:
            self._open -= 1
            self._waiting.pop(writer, None)
            writer.transport.abort()

    def _make_room(self) -> bool:
        """Drop the connection that has waited longest for its request, if one is waiting.

        Its task is cancelled, not its transport aborted: asyncio (3.11) cannot take a transport aborted in the
        middle of a TLS handshake, and fails in its own code; a cancelled handshake it cleans up."""
        for writer, task in self._waiting.items():
            del self._waiting[writer]
            task.cancel()
            return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str) -> None:
        tls = self._tls  # what is in force as the connection starts serves it to its end
        task = asyncio.current_task()
        assert task is not None  # the server runs each connection as a task
        while True:
            self._waiting[writer] = task
            async with asyncio.timeout(REQUEST_TIMEOUT):
                if tls is not None:
                    await writer.start_tls(tls)
                    tls = None
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError as exc:
                    if exc.partial:
                        raise
                    return  # the client closed between requests
            del self._waiting[writer]
            request = _Request(head[:-4])
            response = await self._answer(request, address)
            log.debug('%s "%s" %s', address, request.line.translate(_ESCAPES), response.status.partition(" ")[0])
            headers = [("Content-Type", response.content_type), ("Content-Length", str(len(response.body))),
                       *response.headers]
            if not request.keep_alive:
                headers.append(("Connection", "close"))
            head_out = "".join(f"{name}: {value}\r\n" for name, value in headers)
            writer.write(f"HTTP/1.1 {response.status}\r\n{head_out}\r\n".encode("latin-1"))
            if request.method != "HEAD":
                writer.write(response.body)
            writer.transport.set_write_buffer_limits(0)  # drain() waits for all of it, so a slow reader is timed
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
            if not request.keep_alive:
                return

    async def _answer(self, request: _Request, address: str) -> Response:
        if not request.valid:
            return _BAD_REQUEST
        if request.method not in ("GET", "HEAD"):
            return _METHOD_NOT_ALLOWED
        if self._gate is not None and request.path not in OPEN_PATHS:
            verdict = await self._gate.verdict(request.headers.get("authorization"), address)
            if verdict is not Verdict.PASS:
                return _UNAUTHORIZED if verdict is Verdict.FAIL else _BUSY
        return self._app(request.path, request.query, accepts_gzip(request.headers.get("accept-encoding")))

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own reports: out of file descriptors once a minute at most (it waits a second before
        accepting again, so there is no busy loop), anything else a client caused at debug level."""
        if context.get("message", "").startswith("socket.accept() out of system resource"):
            now = time.monotonic()
            if now - self._last_out_of_fds >= OUT_OF_FDS_LOG_EVERY:
                self._last_out_of_fds = now
                exc = context.get("exception")
                log.warning("cannot accept connections: %s; retrying every second (logged once a minute)",
                            getattr(exc, "strerror", None) or "out of file descriptors")
            return
        log.debug("HTTP server: %s (%s)", context.get("message"), type(context.get("exception")).__name__)
