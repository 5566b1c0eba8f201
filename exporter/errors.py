"""Why a poll failed: the ``reason`` label of ``cmx_connect_poll_errors_total``.

Kept apart from the HTTP client so the serving process need not import it.
"""

from __future__ import annotations

from typing import Literal

Reason = Literal["auth", "http", "timeout", "connection", "bad_response", "pagination"]
REASONS: tuple[Reason, ...] = ("auth", "http", "timeout", "connection", "bad_response", "pagination")


class PollError(Exception):
    """A failed poll, with the metric ``reason`` and a message safe to log."""

    def __init__(self, reason: Reason, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[PollError], tuple[Reason, str, float | None]]:
        """Crosses the pipe from the poll worker whole."""
        return PollError, (self.reason, str(self), self.retry_after)
