"""What the parent and its poll worker say to each other, typed; each message is a pickle.

The serving process imports this and nothing heavier: no requests, no orjson, no counting code.
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


@dataclass(frozen=True, slots=True)
class Hello:
    """The first message to a new worker."""

    client: ClientOptions
    log_level: str
    log_format: str


@dataclass(frozen=True, slots=True)
class PollRequest:
    """One poll, as the settings describe it."""

    page_size: int
    max_pages: int
    max_label_values: int
    concurrency: int
    poll_timeout: float
    dimensions: tuple[str, ...] = LABELS  # the breakdowns to count, by label (CMX_DIMENSIONS)
    split_by: str | None = None  # a label every active-session family is split by (CMX_SPLIT_BY)


@dataclass(frozen=True, slots=True)
class VisitorsRequest:
    """The visitors of the day (CMX_VISITORS_TODAY): every session with a login since CMX's local midnight."""

    page_size: int
    max_pages: int
    concurrency: int
    poll_timeout: float


@dataclass(frozen=True, slots=True)
class PollOutcome:
    """What one poll found, the HTTP requests it made, and how long it took in the worker (never its start)."""

    result: Counts | Visitors | PollError
    requests: int | None  # None when the worker died with the poll: its cost is unknown
    duration: float


def framed(outcome: PollOutcome) -> bytes:
    reply = pickle.dumps(outcome)
    return SIZE.pack(len(reply)) + reply
