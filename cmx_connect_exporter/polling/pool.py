"""Poll workers shared by all targets: a few processes, each poll sent to a free one.

A process per target would cost some 35 MiB each, 3.5 GiB for 100 targets; one process for all would let a
hung CMX hold every other target's poll. A small pool does neither. It starts with one worker and adds one
(up to ``size``) only when a poll has waited ``GROW_AFTER`` for a free one and no worker has taken or ended a
poll meanwhile: a hung target holds one worker until its own poll deadline (the handle kills and replaces it
then), and the polls behind it get a new worker within about half a second. So ``size - 1`` targets can hang
at once without delaying the others, while polls that merely follow each other share one worker, however
many queue behind it at once (100 targets starting together), as long as it keeps turning over. A target's
polls go back to the worker that polled it last while it is free, which keeps its connections open; a target
a reload removed is forgotten by every worker, and a retired worker by the pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from cmx_connect_exporter.outcome import PollError
from cmx_connect_exporter.polling.handle import PollWorker, WorkerClosed
from cmx_connect_exporter.polling.messages import Hello, PollOutcome, PollRequest

log = logging.getLogger(__name__)

# How long a poll waits for a busy pool before another worker is started for it. A worker takes some
# 0.3 s to start (it imports the client), so a poll behind a hung target starts within a second.
GROW_AFTER = 0.25


class WorkerPool:
    """Runs polls on up to ``size`` worker processes; ``poll`` is called from many threads at once."""

    def __init__(self, hello: Hello, size: int) -> None:
        self._hello = hello
        self._size = size
        self._cond = threading.Condition()
        self._idle: list[PollWorker] = []
        self._all: list[PollWorker] = []
        self._last_worker: dict[str, PollWorker] = {}
        self._current: frozenset[str] | None = None  # the targets configured, once a reload has said
        self._turned = time.monotonic()  # when a worker last took or ended a poll
        self._starting = False
        self._closed = False

    def resize(self, size: int) -> None:
        """At most ``size`` workers from now on (a pool never needs more workers than targets); workers
        beyond it are stopped as they come back idle."""
        with self._cond:
            self._size = size
            self._cond.notify_all()

    def keep(self, targets: Iterable[str]) -> None:
        """Only ``targets`` are polled from now on: each worker drops what it keeps of any other, an idle one
        at once, a busy one as its poll ends."""
        with self._cond:
            if self._closed:
                return
            self._current = frozenset(targets)
            self._last_worker = {name: w for name, w in self._last_worker.items() if name in self._current}
            for worker in self._idle:
                self._tidy(worker)

    def _tidy(self, worker: PollWorker) -> None:
        """Have an idle worker forget the targets no longer configured. Holds the lock."""
        if self._current is not None:
            worker.forget(worker.holds - self._current)

    @property
    def pids(self) -> list[int]:
        return [worker.pid for worker in self._all]

    def poll(self, request: PollRequest) -> PollOutcome:
        """One poll on a free worker; never raises but WorkerClosed. Waiting for a free worker counts
        against the poll's own deadline."""
        started = time.monotonic()
        worker = self._acquire(request.target, started + request.poll_timeout)
        if worker is None:
            return PollOutcome(PollError("internal", f"no poll worker was free within {request.poll_timeout:g} s; "
                                                     "raise CMX_POLL_WORKERS"), 0, time.monotonic() - started)
        try:
            return worker.poll(request)
        finally:
            with self._cond:
                self._turned = time.monotonic()
                retire = self._closed or len(self._all) > self._size
                if retire:
                    self._all.remove(worker)
                    self._last_worker = {name: w for name, w in self._last_worker.items() if w is not worker}
                else:
                    if self._current is None or request.target in self._current:
                        self._last_worker[request.target] = worker
                    self._tidy(worker)  # a poll of a target removed meanwhile leaves the worker holding it
                    self._idle.append(worker)
                    self._cond.notify()
            if retire:  # outside the lock: stopping a process takes a while, and other polls go on meanwhile
                worker.close()

    def _acquire(self, target: str, deadline: float) -> PollWorker | None:
        grow_at = time.monotonic() + GROW_AFTER
        with self._cond:
            while not self._idle:
                if self._closed:
                    raise WorkerClosed
                now = time.monotonic()
                if not self._all or (now >= grow_at and now - self._turned >= GROW_AFTER):
                    self._grow()
                left = deadline - now
                if left <= 0:
                    return None
                self._cond.wait(min(left, max(grow_at - now, 0.05)))
            if self._closed:
                raise WorkerClosed
            preferred = self._last_worker.get(target)
            worker = preferred if preferred in self._idle else self._idle[-1]
            self._idle.remove(worker)
            self._turned = time.monotonic()
            return worker

    def _grow(self) -> None:
        """Start one more worker in the background, if the pool may grow and none is starting. Holds the lock."""
        if self._starting or len(self._all) >= self._size or self._closed:
            return
        self._starting = True
        threading.Thread(target=self._start_worker, name="poll-worker-start", daemon=True).start()

    def _start_worker(self) -> None:
        """Starting a process does not wait for it to be ready: the poll is sent at once, and read when ready."""
        try:
            worker: PollWorker | None = PollWorker(self._hello)
        except Exception as exc:  # a poll waiting for it tries again, within its deadline
            log.error("cannot start a poll worker: %s", type(exc).__name__)
            worker = None
        with self._cond:
            self._starting = False
            if worker is not None and not self._closed:
                self._all.append(worker)
                self._idle.append(worker)
            self._cond.notify_all()
        if worker is not None and self._closed:
            worker.close()

    def close(self) -> None:
        """Every worker stopped; a poll in flight ends with WorkerClosed."""
        with self._cond:
            self._closed = True
            workers = list(self._all)
            self._cond.notify_all()
        for worker in workers:
            worker.close()
