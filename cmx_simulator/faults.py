"""Every way the simulator can answer a clients request wrongly, on purpose.

A fault sees only two public faces: the simulator's (:class:`Cmx`: its pages, a wait that ends
when the server stops) and the request's (:class:`Exchange`: the handler's send methods and its
connection). Besides the names in FAULTS, ``status:NNN`` answers with that status and
``redirect:URL`` sends the same request elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import BinaryIO, Protocol

from cmx_simulator.api import JSON, TEXT, Query, envelope
from cmx_simulator.population import format_mac
from cmx_simulator.records import dumps
from cmx_simulator.vocabulary import RECORD_KEYS


class Cmx(Protocol):
    """What a fault may use of the simulator."""

    def page(self, q: Query, limit: int | None = None) -> tuple[list[bytes], int]:
        """Encoded records and nextIndex for q; ``limit`` overrides the page size."""
        ...

    def wait(self, seconds: float) -> bool:
        """Sleep unless stopping; False means the server is shutting down."""
        ...

    @property
    def stopping(self) -> bool:
        """Whether the server is shutting down, so a long answer should end."""
        ...


class Exchange(Protocol):
    """The request a fault answers: the handler's public face."""

    path: str  # the request's path and query string
    wfile: BinaryIO
    close_connection: bool
    answered: bool  # whether this connection has had an answer, for closes_kept_alive

    @property
    def sim(self) -> Cmx: ...

    def send_body(
        self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None: ...

    def send_stream(self, status: int, content_type: str, length: int, chunks: Iterable[bytes]) -> None: ...


Fault = Callable[[Exchange, Query], None]


def page_body(h: Exchange, q: Query, limit: int | None = None, next_index: int | None = None) -> bytes:
    """The clients envelope for q; faults may stretch the page (limit) or lie about nextIndex."""
    records, more_at = h.sim.page(q, limit)
    return envelope(records, more_at if next_index is None else next_index, q.count)


def serve_page(h: Exchange, q: Query) -> None:
    """The right answer."""
    h.send_body(200, JSON, page_body(h, q))


def _fixed(status: int, content_type: str, body: bytes) -> Fault:
    return lambda h, q: h.send_body(status, content_type, body)


def _truncated(h: Exchange, q: Query) -> None:
    body = page_body(h, q)
    h.send_body(200, JSON, body[: len(body) // 2])


def _wrong_shape(h: Exchange, q: Query) -> None:
    records, _ = h.sim.page(q)
    h.send_body(200, JSON, b"[" + b",".join(records) + b"]")


def _ignore_index(h: Exchange, q: Query) -> None:
    serve_page(h, replace(q, index=0))


def _too_many(h: Exchange, q: Query) -> None:
    h.send_body(200, JSON, page_body(h, q, limit=2 * q.count + 1))


def _next_backwards(h: Exchange, q: Query) -> None:
    h.send_body(200, JSON, page_body(h, q, next_index=max(1, q.index // 2)))


def _hang(h: Exchange, q: Query) -> None:
    if h.sim.wait(30):
        serve_page(h, q)
    else:
        h.close_connection = True


def _trickle(h: Exchange, q: Query) -> None:
    body = page_body(h, q)
    length = max(len(body), 1 << 20)  # promised; padding is legal JSON white space
    body += b" " * (length - len(body))

    def drip() -> Iterator[bytes]:
        for i in range(120):  # a byte every 0.5 s for up to 60 s
            if i and not h.sim.wait(0.5):
                return
            yield body[i : i + 1]

    h.send_stream(200, JSON, length, drip())
    h.close_connection = True  # the promised length was never delivered


def _huge(h: Exchange, q: Query) -> None:
    tail = b'",' + page_body(h, q)[1:]
    head = b'{"padding":"'
    pad, block = 50 * 1024 * 1024 - len(head) - len(tail), b"x" * 65536

    def blocks() -> Iterator[bytes]:
        yield head
        for offset in range(0, pad, len(block)):
            if h.sim.stopping:
                return
            yield block[: min(len(block), pad - offset)]
        yield tail

    h.send_stream(200, JSON, len(head) + pad + len(tail), blocks())


# --- hostile faults: each keeps within the read timeout, byte by byte, or steers the counting -----

DRIP_SECONDS = 0.5  # one byte this often: well inside any read timeout, never a whole answer


def _drip(h: Exchange, head: bytes, endless: bytes) -> None:
    """``head`` at once, then ``endless`` a byte at a time, over and over, until the client gives up."""
    h.close_connection = True
    try:
        h.wfile.write(head)
        h.wfile.flush()
        for byte in itertools.cycle(endless):
            if not h.sim.wait(DRIP_SECONDS):
                return
            h.wfile.write(bytes((byte,)))
            h.wfile.flush()
    except OSError:  # the client hung up: what it should do
        return


def _trickle_headers(h: Exchange, q: Query) -> None:
    _drip(h, b"HTTP/1.1 200 OK\r\n", b"X-Padding: still coming\r\n")


def _continue_forever(h: Exchange, q: Query) -> None:
    _drip(h, b"", b"HTTP/1.1 100 Continue\r\n\r\n")


def _trickle_chunk_size(h: Exchange, q: Query) -> None:
    _drip(h, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", b"0")


def _gzip_endless_name(h: Exchange, q: Query) -> None:
    """A gzip header with a file name (FNAME) that never ends: the decoder waits for its NUL."""
    _drip(h, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
             b"Content-Length: 1000000\r\n\r\n\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03", b"name")


def _slow_pages(h: Exchange, q: Query) -> None:
    """Valid one-record pages, each in time, whose nextIndex always says more."""
    if h.sim.wait(DRIP_SECONDS):
        h.send_body(200, JSON, page_body(h, q, limit=1, next_index=q.index + 1))
    else:
        h.close_connection = True


def _closes_kept_alive(h: Exchange, q: Query) -> None:
    """Close a kept-alive connection as its next request arrives, without a byte of answer."""
    if h.answered:
        h.close_connection = True
        return
    h.answered = True
    serve_page(h, q)


def crafted_mac(position: int) -> str:
    """MACs that the exporter's first de-duplication table put in one shard and one first slot."""
    key = (position + 1) << 6  # the low six bits chose the shard
    return format_mac(key << 24 | key)  # key ^ key >> 24 left only the shard bits: every key on slot 0


def _crafted_macs(h: Exchange, q: Query) -> None:
    """The page as it is, every MAC replaced by a crafted one: the same counts, a steered table."""
    records, more_at = h.sim.page(q)
    start = len(b'{"macAddress":"')
    crafted = [r[:start] + crafted_mac(q.index + i).encode() + r[start + 17:] for i, r in enumerate(records)]
    h.send_body(200, JSON, envelope(crafted, more_at, q.count))


HUGE_LABEL_PAGES = 60
HUGE_LABEL_BYTES = 3 << 20


def _huge_labels(h: Exchange, q: Query) -> None:
    """One-record pages whose label values, one per catalogue dimension, are distinct and 3 MiB long each."""
    if q.index >= HUGE_LABEL_PAGES:
        h.send_body(200, JSON, envelope([], 0, q.count))
        return
    fields = {key: f"{q.index}-{key}-".ljust(HUGE_LABEL_BYTES, "x") for key in RECORD_KEYS.values()}
    record = dumps({"macAddress": crafted_mac(q.index), **fields})
    h.send_body(200, JSON, envelope([record], q.index + 1, q.count))


def _deep_nesting(h: Exchange, q: Query) -> None:
    h.send_body(200, JSON, b'{"nextIndex":0,"records":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def _long_number(h: Exchange, q: Query) -> None:
    records, more_at = h.sim.page(q)
    if records:
        records[-1] = records[-1][:-1] + b',"bytesSent":' + b"9" * 5001 + b"}"
    h.send_body(200, JSON, envelope(records, more_at, q.count))


def _retry_after_5000_digits(h: Exchange, q: Query) -> None:
    h.send_body(429, TEXT, b"CMX Error 429", {"Retry-After": "9" * 5000})


FAULTS: dict[str, Fault] = {
    "plain_text": _fixed(200, TEXT, b"CMX Error"),
    "html": _fixed(
        200,
        "text/html; charset=utf-8",
        b"<!DOCTYPE html><html><head><title>Error</title></head>"
        b"<body><h1>HTTP Status 500 - Internal Server Error</h1><p>CMX Error</p></body></html>",
    ),
    "truncated": _truncated,
    "wrong_shape": _wrong_shape,
    "ignore_index": _ignore_index,
    "too_many": _too_many,
    "next_backwards": _next_backwards,
    "hang": _hang,
    "trickle": _trickle,
    "huge": _huge,
    "trickle_headers": _trickle_headers,
    "continue_forever": _continue_forever,
    "trickle_chunk_size": _trickle_chunk_size,
    "gzip_endless_name": _gzip_endless_name,
    "slow_pages": _slow_pages,
    "closes_kept_alive": _closes_kept_alive,
    "crafted_macs": _crafted_macs,
    "huge_labels": _huge_labels,
    "deep_nesting": _deep_nesting,
    "long_number": _long_number,
    "retry_after_5000_digits": _retry_after_5000_digits,
}


def _redirect_to(fault: str) -> str | None:
    """The base URL of a ``redirect:URL`` fault, else None."""
    name, _, target = fault.partition(":")
    return target if name == "redirect" and target.startswith(("http://", "https://")) else None


def _status_fault(fault: str) -> int | None:
    """The status of a ``status:NNN`` fault, else None."""
    name, _, code = fault.partition(":")
    if name == "status" and code.isdigit() and 100 <= int(code) <= 599:
        return int(code)
    return None


def check(fault: str) -> None:
    """ValueError unless ``fault`` names one the simulator knows."""
    if fault not in FAULTS and _status_fault(fault) is None and not _redirect_to(fault):
        raise ValueError(f"unknown fault {fault!r}; known: {sorted(FAULTS)}, status:NNN and redirect:URL")


def answer(h: Exchange, q: Query, fault: str) -> None:
    """Answer a clients request the way ``fault`` says."""
    status = _status_fault(fault)
    target = _redirect_to(fault)
    if status is not None:
        headers = {"Retry-After": "1"} if status in (429, 503) else {}
        h.send_body(status, TEXT, f"CMX Error {status}".encode(), headers)
    elif target:  # the same request, elsewhere: a client that followed it would send its credentials there
        h.send_body(302, TEXT, b"Found", {"Location": target.rstrip("/") + h.path})
    else:
        FAULTS[fault](h, q)
