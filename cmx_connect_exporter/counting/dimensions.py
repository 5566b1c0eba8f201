"""The catalogue of what is counted: every session dimension and measure, defined once.

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
    """A label that splits the active sessions, read from a record's string field.

    A derived dimension (``values`` set) is not read from a field: the tally computes one of
    ``values`` from the record's times.
    """

    label: str
    keys: tuple[str, ...]  # record keys that may hold it, the documented spelling first
    title: str  # what the label is, in words, for the dashboard
    values: tuple[str, ...] = ()  # a derived dimension's only values

    @property
    def metric(self) -> str:
        return f"{ACTIVE_SESSIONS}_by_{self.label}"

    @property
    def help(self) -> str:
        return f"Active guest sessions by {self.label}, {CACHED}."

    @property
    def derived(self) -> bool:
        return bool(self.values)


@dataclass(frozen=True, slots=True)
class Measure:
    """A family of the active sessions other than a count: the dwell histogram, the bytes."""

    metric: str
    help: str


AUTHTYPE = Dimension("authtype", ("authType", "authtype", "auth_type"), "authentication type")
OS = Dimension("os", ("operationSystem", "operatingSystem", "os", "OS"), "operating system")
DEVICE = Dimension("device", ("device", "deviceType"), "device type")
LANGUAGE = Dimension("language", ("language", "lang"), "language")
SITE = Dimension("site", ("location/Site", "site", "locationSite", "Site"), "site")
PORTAL = Dimension("portal", ("portal", "portalName"), "captive portal")
PORTAL_TYPE = Dimension("portal_type", ("type", "portalType", "portal_type"), "portal type")
NEW, RETURNING = "new", "returning"
VISIT = Dimension("visit", ("firstLoginTime", "lastLoginTime"), "new or returning visitor",
                  values=(NEW, RETURNING, "unknown"))

DIMENSIONS: tuple[Dimension, ...] = (AUTHTYPE, OS, DEVICE, LANGUAGE, SITE, PORTAL, PORTAL_TYPE, VISIT)
LABELS: tuple[str, ...] = tuple(dimension.label for dimension in DIMENSIONS)
BY_LABEL = {dimension.label: dimension for dimension in DIMENSIONS}
# What CMX_SPLIT_BY may name: a dimension whose label then goes on every active-session family.
SPLITS: tuple[Dimension, ...] = (SITE,)

# --- record fields read for the measures ---------------------------------------------------
FIRST_LOGIN_KEY = "firstLoginTime"
LAST_LOGIN_KEY = "lastLoginTime"
# The documented spelling first; a Cisco sample app reads ``lastLogoutTIme``, so either may come.
LAST_LOGOUT_KEYS = ("lastLogoutTime", "lastLogoutTIme")
BYTES_KEYS = {"sent": "bytesSent", "received": "bytesReceived"}  # direction label value -> record key

# --- measures of the active sessions ----------------------------------------------------------
# Dwell buckets, seconds: 5, 15 and 30 minutes, 1, 2, 4 and 8 hours, a day.
DWELL_BUCKETS: tuple[float, ...] = (300, 900, 1800, 3600, 7200, 14400, 28800, 86400)
DWELL = Measure(
    "cmx_connect_active_session_duration_seconds",
    "How long each active guest has been connected: poll time minus lastLoginTime (a future login "
    f"counts as 0 s). Sessions with an unreadable lastLoginTime are left out; {CACHED}.",
)
BYTES = Measure(
    "cmx_connect_active_session_bytes",
    "Bytes over the active sessions: direction=sent sums bytesSent, direction=received sums bytesReceived, "
    f"as CMX reports them; {CACHED}.",
)
DIRECTION = "direction"
UNREADABLE_LOGIN_TIME = Measure(
    "cmx_connect_active_sessions_unreadable_login_time",
    "Active sessions whose lastLoginTime could not be read, so left out of the duration histogram and the "
    f"logins counter; {CACHED}.",
)
LOGINS = Measure(  # a counter's name without _total, as prometheus_client takes it
    "cmx_connect_logins",
    "Logins seen: sessions whose (session, lastLoginTime) was not in the previous completed poll. "
    "A poll without that poll's pairs counts none: the first after a start, or one on another poll worker.",
)
VISITORS_TODAY = Measure(
    "cmx_connect_visitors_today",
    "Distinct guest sessions with a login since the last local midnight in CMX's time zone (CMX_VISITORS_TODAY), "
    f"{CACHED}.",
)
VISITORS_TODAY_BY_VISIT = Measure(
    "cmx_connect_visitors_today_by_visit",
    "Distinct guest sessions with a login since the last local midnight in CMX's time zone, new or returning "
    f"(CMX_VISITORS_TODAY), {CACHED}.",
)
VISITORS_TODAY_STAY = Measure(
    "cmx_connect_visitors_today_stay_seconds",
    "How long each of today's visitors who has left stayed: lastLogoutTime (or lastLogoutTIme) minus "
    "lastLoginTime, over sessions with a login since the last local midnight whose logout is not before that "
    f"login (CMX_VISITORS_TODAY). Sessions still connected, or with an unreadable time, are left out; {CACHED}.",
)
