"""The parent's handle on its poll worker: it waits no longer than a poll's deadline, and replaces
a worker that hangs, is stopped or dies, at once.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import subprocess
import sys
import time

from cmx_connect_exporter.outcome import POLL_TIMEOUT_SETTING, PollError
from cmx_connect_exporter.polling.messages import SIZE, Forget, Hello, PollOutcome, PollRequest, VisitorsRequest
from cmx_connect_exporter.settings import ENV_PREFIX

WORKER_MODULE = "cmx_connect_exporter.polling.worker"
# How long past the poll's deadline the parent waits for the worker, which ends its own walk at the
# deadline, before it kills it: room for the answer to cross the pipe.
WORKER_GRACE = 1.0

# glibc gives each thread that allocates its own malloc arena, and each keeps the page buffers it
# freed, so concurrent fetchers would hold several megabytes more; one arena is shared instead.
# The mmap threshold is fixed at its default, 128 KiB, where glibc would raise it after the first
# large free: page bodies and their read buffers are then mapped, and unmapped when freed, rather
# than left to fragment the heap (measured at 100k sessions, four pages in flight: the worker's peak
# RSS 42.6 -> 38.8 MiB). Other C libraries ignore both.
MALLOC_TUNING = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}


def _worker_environment() -> dict[str, str]:
    """The exporter's environment without its settings, CMX_PASSWORD above all (in any case, as the settings
    read them): the worker gets what it needs over its pipe, and whatever can read a process's environment
    (/proc/PID/environ) need not find the password twice."""
    kept = {name: value for name, value in os.environ.items() if not name.upper().startswith(ENV_PREFIX)}
    return {**kept, **MALLOC_TUNING}


class WorkerClosed(Exception):
    """The exporter is shutting down; the poll in flight is abandoned."""


class _Overdue(Exception):
    """The worker did not answer by the poll's deadline."""


class PollWorker:
    """The parent's handle on the worker process: a worker that dies or overruns is replaced at once."""

    def __init__(self, hello: Hello) -> None:
        self._hello = hello
        self._closed = False
        self._start()

    def _start(self) -> None:
        self.holds: set[str] = set()  # the targets its process has polled, and so may keep a client of
        # -P: the worker imports the installed package, never a checkout in the current directory
        self._process = subprocess.Popen([sys.executable, "-P", "-m", WORKER_MODULE],
                                         env=_worker_environment(), bufsize=0,
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._send(self._hello)

    def _send(self, message: object) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(pickle.dumps(message))

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self, request: PollRequest | VisitorsRequest) -> PollOutcome:
        """One poll in the worker; never raises but WorkerClosed, whatever happens to the worker.

        A poll whose worker was killed or died reports no request count: what it cost CMX is unknown.
        """
        started = time.monotonic()
        self.holds.add(request.target)
        try:
            self._send(request)
            outcome: PollOutcome = pickle.loads(self._receive(started + request.poll_timeout + WORKER_GRACE))
            return outcome
        except _Overdue:
            failure = PollError("timeout", f"the poll did not end within {request.poll_timeout:g} s "
                                           f"({POLL_TIMEOUT_SETTING}); its worker was replaced")
        except Exception:  # the worker died, or its answer is garbled
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1)  # a worker whose pipe closed is exiting: its exit code says how
            failure = PollError("internal", f"the poll worker died (exit code {self._process.poll()}); "
                                            "it was replaced")
        if self._closed:  # the exporter is stopping: no new worker
            raise WorkerClosed
        try:
            self._stop_process()
            self._start()
        except Exception as exc:  # the next poll finds no worker, and tries again
            failure = PollError("internal", f"the poll worker failed and could not be replaced ({type(exc).__name__})")
        return PollOutcome(failure, None, time.monotonic() - started)

    def forget(self, targets: set[str]) -> None:
        """Have the worker, idle, drop what it keeps of ``targets``. A worker whose pipe is broken has died,
        keeping nothing, and its next poll replaces it."""
        if gone := targets & self.holds:
            self.holds -= gone
            with contextlib.suppress(OSError):
                self._send(Forget(frozenset(gone)))

    def _receive(self, deadline: float) -> bytes:
        (size,) = SIZE.unpack(self._read(SIZE.size, deadline))
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
