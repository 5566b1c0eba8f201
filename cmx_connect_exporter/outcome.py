"""What a poll hands back: the counts, or a PollError with the reason it failed.

Kept apart from the client and the counting code, so the serving process, which only
publishes outcomes, imports neither (nor requests, nor msgspec).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from cmx_connect_exporter.counting.dimensions import DWELL_BUCKETS

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
# Where a poll's time limit is set, for the errors that ask to raise it, in both processes.
POLL_TIMEOUT_SETTING = "CMX_POLL_TIMEOUT, or poll_timeout in a targets file"
# Which query of CMX failed: the active sessions, or the opt-in visitors of the day (CMX_VISITORS_TODAY).
Query = Literal["active", "visitors_today"]
QUERIES: tuple[Query, ...] = get_args(Query)


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
class Dwell:
    """The dwell histogram: cumulative counts per bucket bound (the catalogue's DWELL_BUCKETS), count and sum."""

    buckets: tuple[int, ...] = (0,) * len(DWELL_BUCKETS)
    count: int = 0  # sessions with a readable login time: the +Inf bucket
    sum: float = 0.0


@dataclass(frozen=True, slots=True)
class Counts:
    """Active sessions in one complete poll; each label's values sum to ``total``.

    With a split (CMX_SPLIT_BY), ``by_split`` holds the counts of each value of the ``split_by``
    label, and only the total, the unreadable times and the logins are kept at the top.
    """

    total: int
    by_label: Mapping[str, Mapping[str, int]]
    dwell: Dwell = field(default_factory=Dwell)
    bytes_sent: int = 0
    bytes_received: int = 0
    unreadable_login_time: int = 0
    logins: int = 0  # logins since the last completed poll; 0 on the first
    split_by: str | None = None
    by_split: Mapping[str, Counts] = field(default_factory=dict)
    tz_offset: int | None = None  # the envelope's timeZoneOffset, as sent: where CMX's local midnight lies


@dataclass(frozen=True, slots=True)
class Visitors:
    """Distinct sessions with a login since CMX's last local midnight, how many were new or returning, and how
    long those who have left stayed."""

    total: int
    by_visit: Mapping[str, int]
    stays: Dwell = field(default_factory=Dwell)
