"""What a poll hands back: the counts, or a PollError with the reason it failed.

Kept apart from the client and the counting code, so the serving process, which only
publishes outcomes, imports neither (nor requests, nor orjson).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

# "internal" is the exporter's own failure (a bug, a poll worker that died), never CMX's.
Reason = Literal["auth", "http", "timeout", "connection", "bad_response", "pagination", "internal"]
REASONS: tuple[Reason, ...] = get_args(Reason)
# Each reason in words, for people (the landing page): a 401 is refused credentials, not an unreachable CMX.
REASON_TEXT: Mapping[Reason, str] = {
    "auth": "CMX refused the credentials",
    "http": "CMX answered with an HTTP error",
    "timeout": "CMX did not answer in time",
    "connection": "CMX not reachable",
    "bad_response": "CMX sent an answer that is not valid",
    "pagination": "CMX paged inconsistently",
    "internal": "the exporter failed (please report it)",
}


class PollError(Exception):
    """A failed poll, with the metric ``reason`` and a message safe to log."""

    def __init__(self, reason: Reason, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[PollError], tuple[Reason, str, float | None]]:
        """Crosses the pipe from the poll worker whole."""
        return PollError, (self.reason, str(self), self.retry_after)


@dataclass(frozen=True, slots=True)
class Counts:
    """Active sessions in one complete poll; each label's values sum to ``total``."""

    total: int
    by_label: Mapping[str, Mapping[str, int]]
