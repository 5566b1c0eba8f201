"""The HTTP side: ``/metrics``, ``/probe?target=<name>``, a landing page at ``/`` and ``/healthz``.

A plain WSGI app on wsgiref's threading server, the same stack prometheus_client
uses, so that ``/`` and ``/healthz`` can sit beside ``/metrics``.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import ThreadingWSGIServer

from cmx_connect_exporter.config.targets import Target
from cmx_connect_exporter.exposition.snapshot import Snapshot, Store
from cmx_connect_exporter.outcome import REASON_TEXT

log = logging.getLogger(__name__)

# What a logged request line may not hold raw: control characters could end the log line early, forging
# the next one, or drive the terminal of whoever reads the log. http.server decodes the request line as
# Latin-1, so nothing above U+00FF comes; the backslash is escaped too, so an escape cannot be faked.
_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in range(0x100) if not chr(c).isprintable()} | {ord("\\"): "\\\\"})

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Targets(Protocol):
    """What the HTTP side knows of the schedule: the targets, and probes of them."""

    def targets(self) -> list[Target]: ...

    def probed(self, name: str) -> bool: ...

    def polled_here(self, name: str) -> bool | None: ...


def make_app(store: Store, targets: Targets, healthy: Callable[[], bool], probed_mode: bool = False) -> WSGIApp:
    """In probed mode ``/metrics`` serves only the process-wide series: each target's come from ``/probe`` of
    the one replica that polls it, and a target polled elsewhere would show here as never polled."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", b"only GET\n", extra=[("Allow", "GET, HEAD")])
        if path == "/metrics":
            return _reply(start_response, "200 OK", store.exposition(targets=not probed_mode), CONTENT_TYPE_LATEST)
        if path == "/probe":
            return _probe(start_response, environ.get("QUERY_STRING", ""), store, targets)
        if path == "/healthz":
            ok = healthy()
            return _reply(start_response, "200 OK" if ok else "503 Service Unavailable",
                          b"ok\n" if ok else b"scheduler stopped\n")
        if path == "/":
            return _reply(start_response, "200 OK", landing_page(store, targets).encode(), "text/html; charset=utf-8")
        return _reply(start_response, "404 Not Found", b"not found; try /metrics\n")

    return app


def _probe(start_response: StartResponse, query: str, store: Store, targets: Targets) -> list[bytes]:
    """One configured target's series, by name only: a URL or credentials in the query are refused, as
    blackbox_exporter does, so a scrape config can never point the exporter at a host of its choosing."""
    params = parse_qs(query, keep_blank_values=True)
    names = params.get("target", [])
    if set(params) != {"target"} or len(names) != 1:
        return _reply(start_response, "400 Bad Request",
                      b"give exactly one parameter, target=<name> of a configured target; URLs and credentials "
                      b"are never taken from the query, only from the targets file\n")
    name = names[0]
    state = store.get(name)
    if state is None or not targets.probed(name):
        shown = name[:64].translate(_ESCAPES)
        return _reply(start_response, "404 Not Found",
                      f"no target named {shown!r} is configured; the targets are listed at /\n".encode())
    return _reply(start_response, "200 OK", state.exposition(), CONTENT_TYPE_LATEST)


def _reply(start_response: StartResponse, status: str, body: bytes,
           content_type: str = "text/plain; charset=utf-8", extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(status, headers)
    return [body]


def _without_body_for_head(app: WSGIApp) -> WSGIApp:
    """wsgiref sends whatever the app returns, also for HEAD, where a body would be read as the start of the
    next response; the app still runs, so the headers, Content-Length included, are those of GET."""

    def app_for_head(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = app(environ, start_response)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else body

    return app_for_head


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


class _QuietHandler(WSGIRequestHandler):
    """Access lines go to the debug log instead of stderr; a TLS handshake happens here, in the
    connection's own thread, so a slow or broken client holds up no one else."""

    timeout = 30  # a client that stalls is dropped, and its thread with it

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        """Escaped like http.server's own (which this replaces, and which Python 3.11.0 does not escape),
        and every other non-printable character too."""
        log.debug("%s %s", self.address_string(), (format % args).translate(_ESCAPES))


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server, with TLS on each accepted connection when asked."""

    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up or fails its handshake is routine: no traceback on stderr."""
        log.debug("connection from %s ended with an error", client_address, exc_info=True)


def serve(app: WSGIApp, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> WSGIServer:
    """Bind (IPv4 or IPv6, by the address given) and serve, over TLS with ``ssl_context``, in a daemon thread."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # A deep accept queue: with the default of 5, a burst of scrapers overflows it, and each
    # dropped SYN costs the scraper a one-second retransmit.
    server_class = type("Server", (_Server,), {"address_family": family, "ssl_context": ssl_context,
                                               "request_queue_size": 128})
    server = make_server(host, port, _without_body_for_head(app), server_class, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
