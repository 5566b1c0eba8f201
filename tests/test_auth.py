"""The auth gate: bcrypt one check at a time, a short queue, per-address slowing, remembered successes."""

from __future__ import annotations

import asyncio
import base64

import bcrypt

from cmx_connect_exporter.web.auth import FAILURES_PER_MINUTE, QUEUED_CHECKS, AuthGate, Verdict

USERS = {"prometheus": bcrypt.hashpw(b"right", bcrypt.gensalt(4))}


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode()


def test_an_address_that_keeps_failing_is_refused_unchecked_and_others_are_not() -> None:
    async def attempts() -> list[Verdict]:
        gate = AuthGate(USERS)
        try:
            assert await gate.verdict(basic("right"), "10.0.0.9") is Verdict.PASS
            verdicts = [await gate.verdict(basic("wrong"), "10.0.0.1") for _ in range(FAILURES_PER_MINUTE + 2)]
            verdicts.append(await gate.verdict(basic("wrong"), "10.0.0.2"))
            verdicts.append(await gate.verdict(basic("right"), "10.0.0.1"))  # remembered: never slowed
            return verdicts
        finally:
            gate.close()

    verdicts = asyncio.run(attempts())
    assert verdicts == [Verdict.FAIL] * FAILURES_PER_MINUTE + [Verdict.BUSY] * 2 + [Verdict.FAIL, Verdict.PASS]


def test_past_the_queue_a_guess_is_answered_at_once_without_a_check() -> None:
    """One check runs and QUEUED_CHECKS wait; the guesses past them are BUSY, each from its own address."""
    async def flood() -> list[Verdict]:
        gate = AuthGate({"prometheus": bcrypt.hashpw(b"right", bcrypt.gensalt(8))})
        try:
            guesses = [gate.verdict(basic("wrong"), f"10.0.1.{i}") for i in range(QUEUED_CHECKS + 4)]
            return list(await asyncio.gather(*guesses))
        finally:
            gate.close()

    verdicts = asyncio.run(flood())
    assert verdicts.count(Verdict.FAIL) == QUEUED_CHECKS + 1
    assert verdicts.count(Verdict.BUSY) == 3
