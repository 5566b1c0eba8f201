"""Sessions rendered as CMX records: JSON joined from pre-encoded fragments, then cached per session.

A record takes a few µs to build, so even a cold million-session poll is not held up by the server.

Times (firstLoginTime, lastLoginTime, lastAcceptTime, lastLogoutTime) are written, by default, as
CMX's local time, ``"YYYY-MM-DD HH:MM:SS"``, in the zone the envelope's timeZoneOffset gives. No
real value is public: Cisco's sample app reads these fields as strings, and the envelope carries
timeZone and timeZoneOffset beside them, which a server sending epoch numbers would hardly need.
The exporter must read the other plausible forms too, so TIME_FORMATS offers them as well.
"""

from __future__ import annotations

import datetime
import functools
import random
import unicodedata
from collections.abc import Callable

from cmx_connect_exporter.counting.dimensions import LAST_LOGOUT_KEYS
from cmx_simulator.population import TIME_ZONE_OFFSET_MS, Population, Session, format_mac
from cmx_simulator.vocabulary import (
    BANDWIDTHS,
    COMPANIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    GUEST_POOL,
    INDUSTRIES,
    LABELS,
    LAST_NAMES,
    OPERATING_SYSTEMS,
    OS_SLOT,
    PORTAL_KEY,
    PORTAL_TYPE_KEY,
    RECORD_KEYS,
    SITE_KEY,
    SPOTS,
    UA_CAPTIVE,
    Rendering,
)

try:
    import orjson

    def dumps(obj: object) -> bytes:
        return orjson.dumps(obj)

    loads = orjson.loads

except ImportError:  # orjson is optional: the stdlib encoder is only slower
    import json

    def dumps(obj: object) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    loads = json.loads


# --- times ---------------------------------------------------------------------------------

_OFFSET_S = TIME_ZONE_OFFSET_MS // 1000
_ISO_OFFSET = f"{'-' if _OFFSET_S < 0 else '+'}{abs(_OFFSET_S) // 3600:02d}:{abs(_OFFSET_S) // 60 % 60:02d}"
_UNIX_ZERO = datetime.datetime(1970, 1, 1)
_MINUTES_SECONDS = tuple(f"{m:02d}:{s:02d}" for m in range(60) for s in range(60))


@functools.cache
def _hour(hour: int, sep: str) -> str:
    """The "YYYY-MM-DD HH:" of an hour counted from 1970; a population spans a few thousand, so cached."""
    return (_UNIX_ZERO + datetime.timedelta(hours=hour)).strftime(f"%Y-%m-%d{sep}%H:")


def _local(epoch_s: int, sep: str = " ") -> str:
    """CMX's local time of an instant, YYYY-MM-DD HH:MM:SS, from cached parts: it runs four times a record."""
    t = epoch_s + _OFFSET_S
    return _hour(t // 3600, sep) + _MINUTES_SECONDS[t % 3600]


# Time format name -> epoch seconds as a JSON value.
TIME_FORMATS: dict[str, Callable[[int], str]] = {
    "local": lambda t: f'"{_local(t)}"',  # "2026-06-12 14:03:09"
    "iso": lambda t: f'"{_local(t, "T")}{_ISO_OFFSET}"',  # "2026-06-12T14:03:09-04:00"
    "epoch_s": lambda t: f'"{t}"',  # "1781287389"
    "epoch_ms": lambda t: f'"{t * 1000}"',  # "1781287389000"
    "epoch_ms_number": lambda t: str(t * 1000),  # 1781287389000, a number, as this simulator once sent
}
DEFAULT_TIME_FORMAT = "local"

# --- pre-encoded fragments -------------------------------------------------------------------


def _members(fields: dict[str, object]) -> str:
    """A dict's JSON members without the braces, ready to join into a record."""
    return dumps(fields).decode()[1:-1]


@functools.cache
def _label_fragment(renderings: tuple[str, ...] | tuple[Rendering, ...]) -> str:
    """JSON members for the label keys plus a matching ``agent``; few distinct, so cached.

    Takes a session's canonical labels (tidy) or its untidy renderings.
    """
    if isinstance(renderings[0], str):
        renderings = tuple((RECORD_KEYS[label], v, v) for label, v in zip(LABELS, renderings, strict=True))
    members: dict[str, object] = {key: value for key, value, _ in renderings if key is not None}
    os_profile = OPERATING_SYSTEMS.get(renderings[OS_SLOT][2])
    members["agent"] = os_profile.agent if os_profile else UA_CAPTIVE
    return _members(members)


# Site, portal and portal type, by index into SPOTS; each ends in a comma, the guest details follow.
_SPOT_FRAGMENTS = tuple(
    _members(
        {SITE_KEY: spot.site, PORTAL_KEY: spot.portal, PORTAL_TYPE_KEY: spot.portal_type}
        if spot.site_sent
        else {PORTAL_KEY: spot.portal, PORTAL_TYPE_KEY: spot.portal_type}
    )
    + ","
    for spot in SPOTS
)


@functools.cache
def _guest_fragments() -> tuple[str, ...]:
    """Pre-encoded fake guest details (bandwidth and the registration form), picked per MAC."""
    rng = random.Random(0)
    tails = []
    for _ in range(GUEST_POOL):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
        local = ascii_name.lower().replace("'", "")
        details = {
            "bandwidth": rng.choice(BANDWIDTHS),
            "Name": f"{first} {last}",
            "Email": f"{local}{rng.randrange(100)}@{rng.choice(EMAIL_DOMAINS)}",
            "Company Name": rng.choice(COMPANIES),
            "Industry": rng.choice(INDUSTRIES),
        }
        tails.append(_members(details))
    return tuple(tails)


class Records:
    """Each session's record, built once and kept until the session changes. Callers serialise access."""

    def __init__(self, population: Population, time_format: str = DEFAULT_TIME_FORMAT,
                 logout_key: str = LAST_LOGOUT_KEYS[0]) -> None:
        if time_format not in TIME_FORMATS:
            raise ValueError(f"unknown time format {time_format!r}; known: {sorted(TIME_FORMATS)}")
        if logout_key not in LAST_LOGOUT_KEYS:
            raise ValueError(f"unknown logout key {logout_key!r}; known: {LAST_LOGOUT_KEYS}")
        self._logout_key = logout_key
        self._population = population
        self._time = TIME_FORMATS[time_format]

    def json(self, s: Session) -> bytes:
        """The record's JSON, encoded once and reused."""
        if s.encoded is None:
            s.encoded = self._encode(s)
        return s.encoded

    def fields(self, s: Session) -> dict[str, object]:
        """The record as a dict, for CSV and the ``all`` search: decoded from the one JSON rendering."""
        return loads(s.encoded or self._encode(s))

    def _encode(self, s: Session) -> bytes:
        first_login, accepted, logout, sent, received, guest = self._population.history(s)
        when = self._time
        return (
            f'{{"macAddress":"{format_mac(s.mac)}",{_label_fragment(s.raw or s.labels)},'
            f'"state":"{"ACTIVE" if s.active else "INACTIVE"}","firstLoginTime":{when(first_login)},'
            f'"lastLoginTime":{when(s.login)},"lastAcceptTime":{when(accepted)},'
            f'"{self._logout_key}":{"null" if logout is None else when(logout)},'
            f'"bytesSent":{sent},"bytesReceived":{received},'
            f"{_SPOT_FRAGMENTS[s.spot]}{_guest_fragments()[guest]}}}"
        ).encode()
