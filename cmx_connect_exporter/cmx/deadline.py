"""One deadline for a whole HTTP answer, kept at the socket: status line, headers and body alike.

http.client applies the read timeout to each read alone, so a server that sends a byte a second,
in the status line, the headers or the body, would hold a request forever. These connections
give every read of an answer only the time left until the read timeout has passed once.
"""

from __future__ import annotations

import io
import socket
import time
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class _DeadlineReader:
    """A socket whose reads share one deadline: each waits no longer than the time left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def makefile(self, mode: str = "rb", *_: Any, **__: Any) -> io.BufferedReader:
        """The reader http.client reads the answer from, with every read through ``recv_into``."""
        self._sock._io_refs += 1  # type: ignore[attr-defined]  # as socket.makefile does; close() takes it back
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer took longer than the read timeout")
        self._sock.settimeout(left)  # never more than the read timeout, which set the deadline
        return self._sock.recv_into(buffer, nbytes, flags)


class _AnswerDeadline:
    """A connection whose whole answer, status line to last byte of body, must come within the read timeout."""

    sock: Any
    timeout: Any

    def getresponse(self) -> Any:
        sock = self.sock
        if isinstance(self.timeout, int | float):  # urllib3 has just set it to the read timeout
            self.sock = _DeadlineReader(sock, time.monotonic() + self.timeout)
        try:
            return super().getresponse()  # type: ignore[misc]
        finally:
            if isinstance(self.sock, _DeadlineReader):  # else http.client closed the connection
                self.sock = sock


class _HTTPConnection(_AnswerDeadline, HTTPConnection):
    pass


class _HTTPSConnection(_AnswerDeadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """requests' adapter, over connections that keep the answer's deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
