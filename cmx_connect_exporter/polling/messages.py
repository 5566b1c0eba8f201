"""What the parent and its poll worker say to each other, typed; each message is a pickle.

The serving process imports this and nothing heavier: no requests, no msgspec, no counting code.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field

from cmx_connect_exporter.counting.dimensions import LABELS
from cmx_connect_exporter.outcome import Counts, PollError, Visitors

# Each answer is framed by its size, so the parent can read it against a deadline.
SIZE = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How the worker's client talks to CMX. The password crosses the pipe in here, never argv or the environment."""

    url: str
    username: str | None
    password: str | None = field(repr=False)
    timeout: float
    verify: bool | str
    max_retry_wait: float
    ca_digest: bytes = b""  # the CA bundle's: a renewed bundle makes new options, so the worker makes a new client
    configured_in: str | None = None  # Target.configured_in, which the client's errors name


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message to a new worker."""

    log_level: str
    log_format: str


@dataclass(frozen=True, slots=True)
class PollRequest:
    """One poll of one target, as its options describe it. Any worker can take it: it carries the client's
    options, and ``expected_sessions`` (the target's last total) sizes the poll's table and prefetching."""

    target: str
    client: ClientOptions
    page_size: int
    max_pages: int
    max_label_values: int
    concurrency: int
    poll_timeout: float
    dimensions: tuple[str, ...] = LABELS  # the breakdowns to count, by label (dimensions)
    split_by: str | None = None  # a label every active-session family is split by (split_by)
    expected_sessions: int = 0
    # Logins are counted against the sessions of the target's poll numbered ``after`` (its last completed one); a
    # worker that does not hold that poll's sessions counts none this time, as after a start.
    poll: int = 0
    after: int | None = None


@dataclass(frozen=True, slots=True)
class VisitorsRequest:
    """The visitors of the day (visitors_today): every session with a login since CMX's local midnight,
    in the time zone of the target's last active poll, so any worker can take it."""

    target: str
    client: ClientOptions
    page_size: int
    max_pages: int
    concurrency: int
    poll_timeout: float
    tz_offset: int | None


@dataclass(frozen=True, slots=True)
class Forget:
    """Targets a reload removed: the worker closes what it keeps of each (client, connections, page threads,
    session table), so that no connection to a CMX outlives its target. It has no answer."""

    targets: frozenset[str]


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll found, the HTTP requests it made, and how long it took in the worker (never its start)."""

    result: Counts | Visitors | PollError
    requests: int | None  # None when the worker died with the poll: its cost is unknown
    duration: float


def framed(outcome: PollOutcome) -> bytes:
    reply = pickle.dumps(outcome)
    return SIZE.pack(len(reply)) + reply
