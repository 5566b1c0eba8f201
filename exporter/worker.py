"""Polls run in a child process, so their CPU work never holds the GIL a scrape needs.

Decoding a page and counting its records is pure-Python CPU work. In the serving
process it delays every scrape by the GIL (measured: a scrape's p50 rose from
0.4 ms to 10 ms beside a busy poll). In its own process a poll costs scrapes nothing.
The worker is a fresh interpreter (``python -m exporter.worker``), not a fork, so it
starts with no threads and imports only the client and the counting code. Parent and
worker exchange pickles over its stdin and stdout; the password goes that way too,
never through the command line. The parent waits for an answer no longer than the poll's
deadline, so a worker that hangs or is stopped is killed and replaced, never waited on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from exporter.logs import setup_logging
from exporter.outcome import Counts, PollError

log = logging.getLogger(__name__)

Outcome = tuple[Counts | PollError, int]  # what one poll found, and the HTTP requests it made
# On a busy machine a scrape, which Prometheus times out, goes before a poll, which can wait.
WORKER_NICENESS = 5
# How long past the poll's deadline the parent waits for the worker, which ends its own walk at the
# deadline, before it kills it: room for the answer to cross the pipe.
WORKER_GRACE = 1.0
_SIZE = struct.Struct("!I")  # each answer is framed by its size, so the parent can read it against a deadline


# glibc gives each thread that allocates its own malloc arena, and each keeps the page buffers it
# freed, so concurrent fetchers would hold several megabytes more; one arena is shared instead
# (measured: 81.0 -> 79.5 MiB at 100k sessions with four pages in flight). The mmap threshold is
# left to adjust itself: fixed at its default of 128 KiB, the buffer orjson decodes a page into
# (several MiB) is mapped and faulted in anew for every page, which made decoding 2.2 times slower.
# Other C libraries ignore it.
MALLOC_TUNING = {"MALLOC_ARENA_MAX": "1"}


class WorkerClosed(Exception):
    """The exporter is shutting down; the poll in flight is abandoned."""


class _Overdue(Exception):
    """The worker did not answer by the poll's deadline."""


@dataclass(frozen=True, slots=True)
class PollParams:
    page_size: int
    max_pages: int
    max_label_values: int
    concurrency: int
    poll_timeout: float
    expected_sessions: int = 0


def run_poll(client: Any, params: PollParams) -> Outcome:
    """One poll with ``client`` (a CmxClient); failures are returned, never raised."""
    from exporter.poll import count_active_sessions  # the worker's code: the serving process never needs it

    before = client.requests_made
    try:
        outcome: Counts | PollError = count_active_sessions(
            client.fetch_body, page_size=params.page_size, max_pages=params.max_pages,
            max_label_values=params.max_label_values, concurrency=params.concurrency,
            expected_sessions=params.expected_sessions, poll_timeout=params.poll_timeout)
    except PollError as error:
        outcome = error
    except Exception as exc:  # a bug, or an input we did not foresee: say so, leak nothing
        outcome = PollError("internal", f"unexpected {type(exc).__name__} in the exporter during the poll; "
                                        "please report it")
    return outcome, client.requests_made - before


def serve(requests_in: BinaryIO, replies_out: BinaryIO) -> None:
    """The worker's loop: client options first, then one poll per request, until the parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    os.nice(WORKER_NICENESS)
    try:
        client_options, log_level, log_format = pickle.load(requests_in)
    except EOFError:
        return
    setup_logging(log_level, log_format)
    from exporter.client import CmxClient  # only the worker needs requests and urllib3

    client = CmxClient(**client_options)
    while True:
        try:
            params = pickle.load(requests_in)
        except EOFError:  # the parent is gone
            return
        reply = pickle.dumps(run_poll(client, params))
        replies_out.write(_SIZE.pack(len(reply)) + reply)
        replies_out.flush()


class PollWorker:
    """The parent's handle on the worker process: a worker that dies or overruns is replaced at once."""

    def __init__(self, client_options: dict[str, Any], log_level: str, log_format: str) -> None:
        self._hello = (client_options, log_level, log_format)
        self._closed = False
        self._start()

    def _start(self) -> None:
        # -P: the worker imports the installed package, never a checkout in the current directory
        self._process = subprocess.Popen([sys.executable, "-P", "-m", "exporter.worker"],
                                         env={**os.environ, **MALLOC_TUNING}, bufsize=0,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._send(self._hello)

    def _send(self, message: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps(message))

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self, params: PollParams) -> Outcome:
        """One poll in the worker; never raises but WorkerClosed, whatever happens to the worker."""
        try:
            self._send(params)
            outcome: Outcome = pickle.loads(self._receive(time.monotonic() + params.poll_timeout + WORKER_GRACE))
            return outcome
        except _Overdue:
            failure = PollError("timeout", f"the poll did not end within {params.poll_timeout:g} s "
                                           "(CMX_POLL_TIMEOUT); its worker was replaced")
        except Exception:  # the worker died, or its answer is garbled
            if self._closed:
                raise WorkerClosed from None
            failure = PollError("internal", f"the poll worker died (exit code {self._process.poll()}); "
                                            "it was replaced")
        self._stop_process()
        self._start()
        return failure, 0

    def _receive(self, deadline: float) -> bytes:
        (size,) = _SIZE.unpack(self._read(_SIZE.size, deadline))
        return self._read(size, deadline)

    def _read(self, size: int, deadline: float) -> bytes:
        """``size`` bytes of the worker's answer, or _Overdue once ``deadline`` has passed."""
        assert self._process.stdout is not None
        fd = self._process.stdout.fileno()
        data = bytearray()
        while len(data) < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _Overdue
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise EOFError("the poll worker closed its pipe")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self._closed = True
        self._stop_process(gently=True)

    def _stop_process(self, gently: bool = False) -> None:
        """Stop the worker: asked to end when the exporter stops, killed when it failed (it may be stopped)."""
        if gently:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(2)
        self._process.kill()
        self._process.wait(5)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a dead worker's pipe may refuse what is left in it
                    pipe.close()


if __name__ == "__main__":
    # Replies go to a private copy of stdout; fd 1 itself now points at stderr, so that a stray
    # write, from Python or from C, cannot corrupt them.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, replies)
