"""The catalogue of what is counted: every session dimension, defined once.

The tally, the collector, the dashboard builder, the simulator's ground truth, the benchmarks
and the tests read it; none keeps its own list. A new string dimension is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIVE_SESSIONS = "cmx_connect_active_sessions"
CACHED = "from the last completed poll of CMX, cached between scrapes"
ACTIVE_SESSIONS_HELP = f"Active guest sessions, {CACHED}."


@dataclass(frozen=True, slots=True)
class Dimension:
    """A label that splits the active sessions, read from a record's string field."""

    label: str
    keys: tuple[str, ...]  # record keys that may hold it, the documented spelling first
    title: str  # what the label is, in words, for the dashboard

    @property
    def metric(self) -> str:
        return f"{ACTIVE_SESSIONS}_by_{self.label}"

    @property
    def help(self) -> str:
        return f"Active guest sessions by {self.label}, {CACHED}."


AUTHTYPE = Dimension("authtype", ("authType", "authtype", "auth_type"), "authentication type")
OS = Dimension("os", ("operationSystem", "operatingSystem", "os", "OS"), "operating system")
DEVICE = Dimension("device", ("device", "deviceType"), "device type")
LANGUAGE = Dimension("language", ("language", "lang"), "language")

DIMENSIONS: tuple[Dimension, ...] = (AUTHTYPE, OS, DEVICE, LANGUAGE)
LABELS: tuple[str, ...] = tuple(dimension.label for dimension in DIMENSIONS)
