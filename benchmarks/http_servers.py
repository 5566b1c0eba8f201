"""What each HTTP server candidate costs, serving the same 8 KiB text at /metrics: resident memory
idle and with 1,000 idle connections held, threads, and the latency of scrapes made meanwhile.

    .venv/bin/pip install cheroot uvicorn      # the candidates, not dependencies of the exporter
    .venv/bin/python benchmarks/http_servers.py

A candidate that cannot answer a scrape in 2 s while the idle connections are held shows its
failures (it stops trying after five in a row); one missing from the environment is left out.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BODY = b"# a metric\ncmx_connect_up 1.0\n" + b"x" * 8150 + b"\n"
IDLE = 1000
SCRAPES = 200
ROOT = Path(__file__).resolve().parent.parent


def serve(kind: str, port: int) -> None:
    if kind == "wsgiref-threads":  # the exporter's server before: prometheus_client's threading WSGI server
        from wsgiref.simple_server import make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            start_response("200 OK", [("Content-Length", str(len(BODY)))])
            return [BODY]

        server_class = type("Server", (ThreadingWSGIServer,), {"request_queue_size": 128})  # as the exporter had it
        make_server("127.0.0.1", port, app, server_class).serve_forever()
    elif kind == "cheroot":
        from cheroot import wsgi

        def app(environ, start_response):  # type: ignore[no-untyped-def]
            start_response("200 OK", [("Content-Length", str(len(BODY)))])
            return [BODY]

        wsgi.Server(("127.0.0.1", port), app, numthreads=10, timeout=5, request_queue_size=128).safe_start()
    elif kind == "uvicorn":
        import uvicorn

        async def asgi(scope, receive, send):  # type: ignore[no-untyped-def]
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(len(BODY)).encode())]})
            await send({"type": "http.response.body", "body": BODY})

        uvicorn.run(asgi, host="127.0.0.1", port=port, log_level="error", timeout_keep_alive=5)
    else:
        sys.path.insert(0, str(ROOT))
        from cmx_connect_exporter.web.server import HttpServer, Response
        from cmx_connect_exporter.web.webconfig import WebConfig

        server = HttpServer(lambda path, query, gzipped: Response("200 OK", BODY), WebConfig())
        server.bind("127.0.0.1", port)
        server.start()
        while True:
            time.sleep(60)


def status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


def scrape(port: int) -> float | None:
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        return time.perf_counter() - started if received[8:13] == b" 200 " else None
    except OSError:
        return None


def measure(kind: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, __file__, "serve", kind, str(port)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if scrape(port) is not None:
                break
            time.sleep(0.1)
        idle = status(proc.pid)
        held = []
        for _ in range(IDLE):
            with contextlib.suppress(OSError):  # a connection not accepted within 2 s is not held
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        time.sleep(1)
        loaded = status(proc.pid)
        times: list[float | None] = []
        while len(times) < SCRAPES and times[-5:] != [None] * 5:  # five in a row unanswered: it holds no room
            times.append(scrape(port))
        answered = sorted(t * 1000 for t in times if t is not None)
        time.sleep(8)  # past every candidate's 5 s timeout
        still_open = 0
        for sock in held:
            sock.setblocking(False)
            try:
                sock.recv(1)  # b"" or a reset: the server closed it
            except BlockingIOError:  # nothing to read, and not closed
                still_open += 1
            except OSError:
                pass
        for sock in held:
            sock.close()
        quantiles = statistics.quantiles(answered, n=100) if len(answered) > 2 else [float("nan")] * 99
        return (f"| {kind} | {idle['VmRSS'] / 1024:.1f} | {loaded['VmRSS'] / 1024:.1f} | {loaded['Threads']} | "
                f"{quantiles[49]:.1f} | {quantiles[98]:.1f} | {len(times) - len(answered)} of {len(times)} | "
                f"{len(held)} | {still_open} |")
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    print(f"| server | RSS idle MiB | RSS with {IDLE} idle connections MiB | threads then | scrape p50 ms | "
          f"scrape p99 ms | scrapes unanswered in 2 s | idle connections held | still open 8 s later |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, module in (("wsgiref-threads", None), ("cheroot", "cheroot"), ("uvicorn", "uvicorn"),
                         ("exporter-asyncio", None)):
        if module is None or importlib.util.find_spec(module) is not None:
            print(measure(kind), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
