"""Basic auth that a flood of wrong passwords cannot turn into a CPU attack.

bcrypt is slow by design (tens of milliseconds a check at cost 10), so every guess an anonymous
client sends costs the exporter that much CPU. Checks run one at a time, in one thread of their own
that rests after each failure and runs at a lower priority than the event loop, which serves scrapes
and ``/healthz``: guesses take at most 0.8 of a core. A few more wait their turn, and past them a
guess is answered 429 at once, unchecked. Credentials that passed before are recognised by a keyed
hash, without bcrypt, so Prometheus's scrapes never queue behind the guesses. A client address that
keeps failing is refused unchecked for the rest of the minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from cmx_connect_exporter.web.webconfig import BasicAuth, credentials

BCRYPT_NICENESS = 10  # the kernel gives the event loop's thread the CPU first: scrapes before guesses
REST_AFTER_FAILURE = 0.25
QUEUED_CHECKS = 4  # bcrypt checks that may wait for the one running; past them, 429 at once
FAILURES_PER_MINUTE = 10  # wrong credentials from one address before it is refused unchecked until the minute ends
TRACKED_ADDRESSES = 10_000  # past this many addresses with failures, the oldest minute is forgotten


def _lower_priority() -> None:
    """Linux sets niceness per thread: this one, not the process, yields to the loop."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BCRYPT_NICENESS)


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"  # 401
    BUSY = "busy"  # 429: not checked, try again later


class AuthGate:
    """The one place bcrypt runs for the HTTP server; used from the event loop's thread only."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._auth = BasicAuth(users)
        self._bcrypt = ThreadPoolExecutor(1, thread_name_prefix="bcrypt", initializer=_lower_priority)
        self._waiting = 0
        self._minute = 0
        self._failures: dict[str, int] = {}

    async def verdict(self, header: str | None, address: str) -> Verdict:
        presented = credentials(header)
        if presented is None:
            return Verdict.FAIL
        if self._auth.remembered(presented):
            return Verdict.PASS
        failures = self._failures_this_minute()
        if self._waiting > QUEUED_CHECKS or failures.get(address, 0) >= FAILURES_PER_MINUTE:
            return Verdict.BUSY
        self._waiting += 1
        try:
            ok = await asyncio.get_running_loop().run_in_executor(self._bcrypt, self._check, presented)
        finally:
            self._waiting -= 1
        if ok:
            return Verdict.PASS
        if len(failures) >= TRACKED_ADDRESSES:
            failures.clear()
        failures[address] = failures.get(address, 0) + 1
        return Verdict.FAIL

    def _check(self, presented: bytes) -> bool:
        """In the bcrypt thread: after a failure it rests a quarter of what the check took, so that guesses
        take at most 0.8 of a core, and what the loop needs besides fits in the rest of that core."""
        started = time.perf_counter()
        ok = self._auth.verify(presented)
        if not ok:
            time.sleep((time.perf_counter() - started) * REST_AFTER_FAILURE)
        return ok

    def _failures_this_minute(self) -> dict[str, int]:
        minute = int(time.monotonic() // 60)
        if minute != self._minute:
            self._minute, self._failures = minute, {}
        return self._failures

    def close(self) -> None:
        self._bcrypt.shutdown(wait=False, cancel_futures=True)
