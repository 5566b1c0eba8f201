"""A CMX Connect simulator: a real HTTP server over a synthetic guest Wi-Fi population.

It serves ``GET /api/connect/v1/clients`` and ``/api/connect/v1/clients/export`` the way
``shared/reference/cmx-connect-api.md`` describes them, so the exporter's demo mode,
integration tests and benchmarks can run against real HTTP without a CMX. The data is
deliberately messy (padding, ``null``, missing and alternate keys, over-long values), while
each session remembers the canonical label values it meant, so :meth:`Simulator.active_counts`
is independent ground truth. Nothing here imports the exporter.

Run it alone with ``python -m cmx_simulator --port 18443``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import functools
import hmac
import io
import itertools
import logging
import os
import random
import re
import signal
import socket
import ssl
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

try:
    import orjson

    def _dumps(obj: object) -> bytes:
        return orjson.dumps(obj)

    _loads = orjson.loads

except ImportError:  # orjson is optional: the stdlib encoder is only slower
    import json

    def _dumps(obj: object) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    _loads = json.loads


log = logging.getLogger(__name__)

CLIENTS_PATH = "/api/connect/v1/clients"
EXPORT_PATH = CLIENTS_PATH + "/export"
MAX_COUNT = 1000
REALM = 'Basic realm="MSE API Service"'
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
UNKNOWN = "unknown"
MAX_LABEL_LEN = 64

SECOND_MS = 1000
HOUR_MS = 3600 * SECOND_MS
DAY_MS = 24 * HOUR_MS
ACTIVE_WINDOW_MS = 8 * HOUR_MS  # active guests logged in during the current day part
HISTORY_MS = 30 * DAY_MS  # inactive guests go back a month

# --- the population's vocabulary -------------------------------------------------------

# Label names as ActiveCounts uses them, in the order a session's label tuple holds them.
LABELS = ("authtype", "os", "device", "language")
RECORD_KEYS = {"authtype": "authType", "os": "operationSystem", "device": "device", "language": "language"}
# Key spellings other deployments use; the exporter accepts them too.
ALIAS_KEYS = {"authtype": ("authtype",), "os": ("os", "operatingSystem")}

AUTH_TYPES = {"registration": 50, "SMS": 30, "social": 20}

_UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
_UA_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
)
_UA_CAPTIVE = "CaptiveNetworkSupport-443.100.1 wispr"


@dataclass(frozen=True)
class _OsProfile:
    """How common an OS is, which devices run it, and a user agent it sends."""

    weight: float
    devices: dict[str, int]
    agent: str


OPERATING_SYSTEMS = {
    "Android": _OsProfile(40, {"Mobile": 86, "Tablet": 10, "Unknown": 4}, _UA_ANDROID),
    "iOS": _OsProfile(37, {"Mobile": 82, "Tablet": 18}, _UA_IPHONE),
    "Windows": _OsProfile(
        10,
        {"Desktop": 94, "Tablet": 2, "Unknown": 4},
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    ),
    "Mac OS X": _OsProfile(
        7,
        {"Desktop": 100},
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
    ),
    "Chrome OS": _OsProfile(
        2,
        {"Desktop": 100},
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ),
    "Linux": _OsProfile(
        1.5, {"Desktop": 90, "Unknown": 10}, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    ),
    # Same platform, other spelling: the exporter keeps case, so this is its own value.
    "android": _OsProfile(1, {"Mobile": 90, "Tablet": 10}, _UA_ANDROID),
    "Unknown": _OsProfile(1.5, {"Unknown": 60, "Smart TV": 25, "Game Console": 15}, _UA_CAPTIVE),
}

# name -> (two-letter code, weight)
LANGUAGES = {
    "English": ("en", 55),
    "Spanish": ("es", 14),
    "Chinese": ("zh", 6),
    "French": ("fr", 6),
    "German": ("de", 5),
    "Arabic": ("ar", 4),
    "Portuguese": ("pt", 4),
    "Japanese": ("ja", 3),
    "Italian": ("it", 2),
    "Korean": ("ko", 1),
}
LANGUAGE_BY_CODE = {code: name for name, (code, _) in LANGUAGES.items()}

# Rare over-long values; their canonical form is the first 64 characters (none ends in a space).
LONG_VALUES = {
    "authtype": "registration with sponsor approval, SMS passcode and social-login fallback (legacy)",
    "os": "Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0",
    "device": "Mobile-phone-reported-by-captive-network-assistant-with-a-verbose-model-string-v2",
    "language": "English (United States), English;q=0.9, Spanish;q=0.8, French;q=0.7, German;q=0.6",
}

FIRST_NAMES = (
    "James", "Maria", "Wei", "Fatima", "José", "Aiko", "Olivia", "Mohammed", "Zoë", "Lukas",
    "Priya", "Chloé", "Ahmed", "Sofia", "Björn", "Ana", "Liam", "Yuki", "Noah", "Emma",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "García", "Chen", "Haddad", "Müller", "Tanaka", "Johnson", "Silva", "Dubois", "Kim",
    "Rossi", "Nguyen", "O'Brien", "Kowalski", "Patel", "Andersson", "Okafor", "López", "Brown", "Ivanova",
)  # fmt: skip
COMPANIES = (
    "Northwind Traders", "Contoso Ltd", "Fabrikam Inc", "Globex Corporation", "Initech",
    "Tailspin Toys", "Wide World Importers", "Adventure Works", "Blue Yonder Airlines", "Litware Inc",
    "", "Self-employed",
)  # fmt: skip
INDUSTRIES = (
    "Retail", "Healthcare", "Education", "Finance", "Hospitality", "Manufacturing",
    "Technology", "Government", "Transportation", "Other",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")
PORTALS = ("Guest Portal", "Lobby Portal", "Conference Portal", "Café Portal")
SITES = ("HQ/Lobby", "HQ/Floor 2", "Conference Center/Hall A", "Conference Center/Hall B", "Retail Store/Main")
VENDOR_OUIS = (0x3C22FB, 0xF01898, 0xA4C361, 0x002608, 0x8C8590, 0xDC2B2A)  # a few globally-unique MACs

CSV_COLUMNS = (
    "macAddress", "authType", "device", "operationSystem", "language", "state", "portal", "type", "agent",
    "firstLoginTime", "lastLoginTime", "lastAcceptTime", "lastLogoutTime", "bytesSent", "bytesReceived",
    "bandwidth", "location/Site", "Name", "Email", "Company Name", "Industry",
)  # fmt: skip
CSV_ALIASES = {RECORD_KEYS[label]: keys for label, keys in ALIAS_KEYS.items()}

GUEST_POOL = 4096  # distinct pre-encoded guest detail sets
MESSY_SHARE = 0.1  # share of sessions with one label rendered untidily (about 2.5 % per label)


def _profiles() -> tuple[list[tuple[str, str, str, str]], list[float]]:
    """All (authtype, os, device, language) combinations with their joint weights."""
    profiles, weights = [], []
    for auth, auth_w in AUTH_TYPES.items():
        for os_name, osp in OPERATING_SYSTEMS.items():
            for device, dev_w in osp.devices.items():
                for language, (_, lang_w) in LANGUAGES.items():
                    profiles.append((auth, os_name, device, language))
                    weights.append(auth_w * osp.weight * dev_w * lang_w)
    return profiles, list(itertools.accumulate(weights))


PROFILES, PROFILE_CUM_WEIGHTS = _profiles()

# --- untidy renderings -----------------------------------------------------------------
# Each variant maps (label, canonical value) to (record key or None to leave the key out,
# value as sent, canonical value); the generator knows the canonical value by construction.
_Rendering = tuple[str | None, str | None, str]
_MISSING: _Rendering = (None, None, UNKNOWN)


def _inner_spaces(label: str, value: str) -> _Rendering:
    untidy = value.replace(" ", "  \t") if " " in value else f"{value}\t "
    return RECORD_KEYS[label], untidy, value


def _alias(label: str, value: str) -> _Rendering:
    aliases = ALIAS_KEYS.get(label, (RECORD_KEYS[label],))
    return aliases[len(value) % len(aliases)], value, value


MESSY_VARIANTS: dict[str, tuple[int, Callable[[str, str], _Rendering]]] = {
    "padded": (20, lambda label, v: (RECORD_KEYS[label], f"  {v} ", v)),
    "inner_spaces": (20, _inner_spaces),
    "null": (12, lambda label, v: (RECORD_KEYS[label], None, UNKNOWN)),
    "empty": (8, lambda label, v: (RECORD_KEYS[label], "", UNKNOWN)),
    "blank": (6, lambda label, v: (RECORD_KEYS[label], " \t ", UNKNOWN)),
    "missing": (10, lambda label, v: _MISSING),
    "alias": (20, _alias),
    "long": (4, lambda label, v: (RECORD_KEYS[label], LONG_VALUES[label], LONG_VALUES[label][:MAX_LABEL_LEN])),
}
_VARIANT_FUNCS = [func for _, func in MESSY_VARIANTS.values()]
_VARIANT_CUM = list(itertools.accumulate(weight for weight, _ in MESSY_VARIANTS.values()))


# --- the population ------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveCounts:
    """The simulator's own count of active sessions, by canonical label value."""

    total: int
    by_label: dict[str, dict[str, int]]


def _mix(x: int) -> int:
    """SplitMix64's finaliser: cheap, well-spread pseudo-random bits from an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


@functools.cache
def _label_fragment(renderings: tuple[str, ...] | tuple[_Rendering, ...]) -> str:
    """JSON members for the label keys plus a matching ``agent``; few distinct, so cached.

    Takes a session's canonical labels (tidy) or its untidy renderings.
    """
    if isinstance(renderings[0], str):
        renderings = tuple((RECORD_KEYS[label], v, v) for label, v in zip(LABELS, renderings, strict=True))
    members: dict[str, object] = {key: value for key, value, _ in renderings if key is not None}
    os_profile = OPERATING_SYSTEMS.get(renderings[1][2])
    members["agent"] = os_profile.agent if os_profile else _UA_CAPTIVE
    return _dumps(members).decode()[1:-1]


@functools.cache
def _guest_fragments() -> tuple[str, ...]:
    """Pre-encoded tails of fake guest details (portal, site, registration form), picked per MAC."""
    rng = random.Random(0)
    tails = []
    for _ in range(GUEST_POOL):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
        local = ascii_name.lower().replace("'", "")
        email = f"{local}{rng.randrange(100)}@{rng.choice(EMAIL_DOMAINS)}"
        details = {
            "portal": rng.choice(PORTALS),
            "type": "Guest",
            "bandwidth": rng.choice((1024, 2048, 5120, 10240)),
            "location/Site": rng.choice(SITES),
            "Name": f"{first} {last}",
            "Email": email,
            "Company Name": rng.choice(COMPANIES),
            "Industry": rng.choice(INDUSTRIES),
        }
        tails.append(_dumps(details).decode()[1:-1])
    return tuple(tails)


class _Session:
    """One guest; compact so a million fit, with everything else derived from its MAC."""

    __slots__ = ("active", "encoded", "labels", "login", "logout", "mac", "raw")

    def __init__(
        self, mac: int, login: int, active: bool, labels: tuple[str, ...], raw: tuple[_Rendering, ...] | None
    ) -> None:
        self.mac = mac
        self.login = login  # lastLoginTime, epoch ms
        self.active = active
        self.labels = labels  # canonical values, in LABELS order
        self.raw = raw  # how the labels are rendered, when untidily; None means as canonical
        self.logout: int | None = None  # set when churn logs the session out
        self.encoded: bytes | None = None  # cached JSON, dropped when the session changes


def format_mac(mac: int) -> str:
    """Render a 48-bit MAC the way CMX does: lower-case, colon-separated."""
    return mac.to_bytes(6, "big").hex(":")


def parse_mac(text: str) -> int | None:
    """Accept any separator and case, as the ``mac`` filter should; None when not a MAC."""
    digits = re.sub(r"[\s:.\-]", "", text)
    if len(digits) != 12:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None


@dataclass(frozen=True)
class _Query:
    """A parsed clients/export query."""

    active_only: bool = False
    index: int = 0
    count: int = MAX_COUNT
    mac: str | None = None
    match: Callable[[_Session], bool] | None = None


class BadQuery(ValueError):
    """A query parameter the server cannot use; answered with 400."""


def _label_test(slot: int, wanted: str) -> Callable[[_Session], bool]:
    """Match one canonical label value, ignoring case, as a search box would."""
    folded = wanted.casefold()
    return lambda s: s.labels[slot].casefold() == folded


def _int_param(params: dict[str, str], name: str, minimum: int | None = None) -> int | None:
    """The integer parameter ``name``, None when absent; BadQuery when not a (large enough) integer."""
    if name not in params:
        return None
    try:
        value = int(params[name])
    except ValueError:
        raise BadQuery(f"invalid {name}") from None
    if minimum is not None and value < minimum:
        raise BadQuery(f"invalid {name}")
    return value


class Simulator:
    """A CMX Connect API server over a deterministic synthetic population."""

    def __init__(
        self,
        sessions: int = 5000,
        *,
        active_fraction: float = 0.7,
        seed: int = 1,
        username: str = "demo",
        password: str = "demo",
        host: str = "127.0.0.1",
        port: int = 0,
        latency: float = 0.0,
        error_rate: float = 0.0,
        churn: int = 0,
        certfile: str | None = None,
        keyfile: str | None = None,
    ) -> None:
        if sessions < 0 or not 0.0 <= active_fraction <= 1.0:
            raise ValueError("sessions must be >= 0 and active_fraction within [0, 1]")
        self.latency = latency
        self.error_rate = error_rate
        self.churn = churn
        self.requests_served = 0
        self.fault_from_index = 0  # the fault hits clients requests from this index on: "page k of n"
        self._host, self._port = host, port
        self._certfile, self._keyfile = certfile, keyfile
        self._auth = b"Basic " + base64.b64encode(f"{username}:{password}".encode())
        self._fault: str | None = None
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._rng = random.Random(seed)  # population and churn
        self._error_rng = random.Random(seed ^ 0x5EED)  # error_rate draws, independent of churn
        self._by_mac: dict[int, _Session] = {}
        self._epoch_ms = int(time.time()) * SECOND_MS
        self._build(sessions, round(sessions * active_fraction))

    # --- population -------------------------------------------------------------------

    def _build(self, total: int, active: int) -> None:
        """Draw login times, sort once, then keep two newest-last lists.

        ``_all`` holds every session and ``_active`` the active ones, both oldest first, so a
        newest-first page is a slice from the end; logged-out sessions leave ``_active`` from
        the front, tracked by ``_head`` and compacted now and then.
        """
        rng, now = self._rng, self._epoch_ms
        # login << 1 | active: one integer sort orders by time and carries the state along.
        keys = [(now - int(rng.random() * ACTIVE_WINDOW_MS)) << 1 | 1 for _ in range(active)]
        keys += [(now - int(rng.random() * HISTORY_MS)) << 1 for _ in range(total - active)]
        keys.sort()
        self._all = self._make_sessions(keys)
        self._active = [s for s in self._all if s.active]
        self._head = 0
        self._active_labels = Counter(s.labels for s in self._active)

    def _make_sessions(self, keys: list[int]) -> list[_Session]:
        """Create sessions for encoded (login << 1 | active) keys; used by the build and by churn."""
        rng = self._rng
        by_mac = self._by_mac
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct label combination
        profiles = rng.choices(PROFILES, cum_weights=PROFILE_CUM_WEIGHTS, k=len(keys))
        sessions = []
        for key, labels in zip(keys, profiles, strict=True):
            mac = self._new_mac()
            raw = None
            if rng.random() < MESSY_SHARE:
                slot = rng.randrange(len(LABELS))
                variant = rng.choices(_VARIANT_FUNCS, cum_weights=_VARIANT_CUM)[0]
                renderings = [(RECORD_KEYS[label], value, value) for label, value in zip(LABELS, labels, strict=True)]
                renderings[slot] = variant(LABELS[slot], labels[slot])
                raw = tuple(renderings)
                canonical = tuple(rendering[2] for rendering in raw)
                labels = shared.setdefault(canonical, canonical)
            session = _Session(mac, key >> 1, bool(key & 1), labels, raw)
            by_mac[mac] = session
            sessions.append(session)
        return sessions

    def _new_mac(self) -> int:
        """A unique MAC: mostly randomised (locally administered), some with a vendor OUI."""
        rng = self._rng
        while True:
            bits = rng.getrandbits(48)
            if bits & 0xF < 2:
                mac = VENDOR_OUIS[bits % len(VENDOR_OUIS)] << 24 | (bits & 0xFFFFFF)
            else:
                mac = bits & ~(0x01 << 40) | 0x02 << 40  # unicast, locally administered
            if mac not in self._by_mac:
                return mac

    def _churn(self, count: int) -> None:
        """``count`` guests log in at the top; as many of the oldest active ones log out."""
        if count <= 0:
            return
        now = max(int(time.time() * SECOND_MS), self._all[-1].login + 1 if self._all else 0)
        arrivals = self._make_sessions([(now + i) << 1 | 1 for i in range(count)])
        self._all.extend(arrivals)
        self._active.extend(arrivals)
        self._active_labels.update(s.labels for s in arrivals)
        leaving = self._active[self._head : self._head + count]
        self._head += len(leaving)
        for session in leaving:
            session.active = False
            session.logout = now
            session.encoded = None
        self._active_labels.subtract(s.labels for s in leaving)
        if self._head > len(self._active) // 2:
            del self._active[: self._head]
            self._head = 0

    def active_counts(self) -> ActiveCounts:
        """Ground truth for status=active, from the canonical values the generator chose."""
        with self._lock:
            combos = +self._active_labels  # drops zero counts
        by_label: dict[str, Counter[str]] = {label: Counter() for label in LABELS}
        for labels, n in combos.items():
            for label, value in zip(LABELS, labels, strict=True):
                by_label[label][value] += n
        return ActiveCounts(total=sum(combos.values()), by_label={k: dict(v) for k, v in by_label.items()})

    # --- records ----------------------------------------------------------------------

    def _encode(self, s: _Session) -> bytes:
        """The record's JSON, from pre-encoded fragments and numbers derived from the MAC.

        A few µs a record, so even a cold million-session poll is not held up by the server.
        """
        h1 = _mix(s.mac)
        h2 = _mix(h1)
        visits = 1 + h1 % 12
        first_login = s.login - (visits - 1) * (DAY_MS // 2 + (h1 >> 8) % (4 * DAY_MS))
        if s.active:  # the previous visit's logout, if there was one
            logout = s.login - HOUR_MS - h2 % (2 * DAY_MS) if visits > 1 else 0
        elif s.logout is not None:
            logout = s.logout
        else:
            logout = min(s.login + 10 * 60 * SECOND_MS + h2 % (6 * HOUR_MS), max(self._epoch_ms, s.login))
        state = "ACTIVE" if s.active else "INACTIVE"
        return (
            f'{{"macAddress":"{format_mac(s.mac)}",{_label_fragment(s.raw or s.labels)},"state":"{state}",'
            f'"firstLoginTime":{first_login},"lastLoginTime":{s.login},'
            f'"lastAcceptTime":{s.login + 2 * SECOND_MS + (h1 >> 40) % (90 * SECOND_MS)},"lastLogoutTime":{logout},'
            f'"bytesSent":{10_000 + (h2 >> 8) % 200_000_000},"bytesReceived":{100_000 + (h2 >> 36) % 2_000_000_000},'
            f"{_guest_fragments()[h2 % GUEST_POOL]}}}"
        ).encode()

    def _encoded(self, s: _Session) -> bytes:
        """The record's JSON, encoded once and reused until the session changes (caller holds the lock)."""
        if s.encoded is None:
            s.encoded = self._encode(s)
        return s.encoded

    def _record(self, s: _Session) -> dict[str, object]:
        """The record as a dict, for CSV and the ``all`` search; decoded from the one JSON rendering."""
        return _loads(s.encoded or self._encode(s))

    def _search_text(self, s: _Session) -> str:
        return "\n".join(str(v) for v in self._record(s).values() if v is not None).casefold()

    # --- queries ----------------------------------------------------------------------

    def _parse(self, query: str) -> _Query:
        """Turn the query string into a _Query; raises BadQuery for unusable values."""
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if "mac" in params:  # with a MAC, every other parameter is ignored
            return _Query(mac=params["mac"])
        status = params.get("status", "all").lower()
        if status not in ("all", "active"):
            raise BadQuery("invalid status")
        index = _int_param(params, "index", minimum=0)
        count = _int_param(params, "count", minimum=0)
        start = _int_param(params, "start")
        end = _int_param(params, "end")
        tests: list[Callable[[_Session], bool]] = []
        for slot, label in enumerate(LABELS):
            if label in params:
                wanted = params[label].strip()
                if label == "language":
                    wanted = LANGUAGE_BY_CODE.get(wanted.lower(), wanted)
                tests.append(_label_test(slot, wanted))
        if start is not None:
            tests.append(lambda s, t=start * SECOND_MS: s.login >= t)
        if end is not None:
            tests.append(lambda s, t=(end + 1) * SECOND_MS: s.login < t)
        if "all" in params:
            needle = params["all"].casefold()
            tests.append(lambda s: needle in self._search_text(s))
        match = (lambda s: all(test(s) for test in tests)) if tests else None
        return _Query(
            active_only=status == "active",
            index=index or 0,
            count=MAX_COUNT if count is None else min(count, MAX_COUNT),
            match=match,
        )

    def _select(self, q: _Query, limit: int | None) -> tuple[list[_Session], bool]:
        """Sessions for q from q.index, newest first, at most ``limit``; and whether more remain.

        Unfiltered pages are an O(limit) slice; filtered ones scan only until the page is full.
        Caller holds the lock.
        """
        if q.mac is not None:
            mac = parse_mac(q.mac)
            found = self._by_mac.get(mac) if mac is not None else None
            return ([found] if found else []), False
        base, head = (self._active, self._head) if q.active_only else (self._all, 0)
        if q.match is None:
            top = len(base) - q.index
            bottom = head if limit is None else max(head, top - limit)
            chosen = base[bottom : max(head, top)][::-1]
            return chosen, top - len(chosen) > head
        matches = filter(q.match, (base[i] for i in range(len(base) - 1, head - 1, -1)))
        stop = None if limit is None else q.index + limit + 1
        chosen = list(itertools.islice(matches, q.index, stop))
        more = limit is not None and len(chosen) > limit
        return chosen[:limit], more

    def _page(self, q: _Query, limit: int | None = None) -> tuple[list[bytes], int]:
        """Encoded records and nextIndex for q; ``limit`` overrides the page size (faults use it)."""
        with self._lock:
            sessions, more = self._select(q, q.count if limit is None else limit)
            records = [self._encoded(s) for s in sessions]
        return records, (q.index + len(records) if more else 0)

    # --- faults -----------------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """The misbehaviour applied to clients requests, or None; see FAULTS, ``status:NNN`` and ``redirect:URL``."""
        return self._fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value is not None and value not in FAULTS and _status_fault(value) is None and not _redirect_to(value):
            raise ValueError(f"unknown fault {value!r}; known: {sorted(FAULTS)}, status:NNN and redirect:URL")
        self._fault = value

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopping; False means the server is shutting down."""
        return seconds <= 0 or not self._stopping.wait(seconds)

    # --- serving ----------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        """Answer one GET: count, delay, authenticate, churn, fail on purpose, then serve."""
        with self._lock:
            self.requests_served += 1
        parts = urlsplit(h.path)
        path = parts.path.rstrip("/")
        if path not in (CLIENTS_PATH, EXPORT_PATH):
            h.send_body(404, TEXT, b"Not Found")
            return
        if not self._wait(self.latency):
            h.close_connection = True
            return
        if not hmac.compare_digest(h.headers.get("Authorization", "").encode(), self._auth):
            h.send_body(401, TEXT, b"Unauthorized", {"WWW-Authenticate": REALM})
            return
        try:
            q = self._parse(parts.query)
        except BadQuery as exc:
            h.send_body(400, TEXT, str(exc).encode())
            return
        with self._lock:
            self._churn(self.churn)
            failed = self.error_rate > 0 and self._error_rng.random() < self.error_rate
        fault = self._fault if q.index >= self.fault_from_index else None
        if failed:
            h.send_body(500, TEXT, b"CMX Error")
        elif path == EXPORT_PATH:
            self._export(h, q)
        elif fault is None:
            _serve_page(h, q)
        else:
            status = _status_fault(fault)
            target = _redirect_to(fault)
            if status is not None:
                headers = {"Retry-After": "1"} if status in (429, 503) else {}
                h.send_body(status, TEXT, f"CMX Error {status}".encode(), headers)
            elif target:  # the same request, elsewhere: a client that followed it would send its credentials there
                h.send_body(302, TEXT, b"Found", {"Location": target.rstrip("/") + h.path})
            else:
                FAULTS[fault](h, q)

    def _export(self, h: _Handler, q: _Query) -> None:
        """The whole query as CSV, streamed in chunks so a million rows never sit in memory."""
        with self._lock:
            sessions, _ = self._select(replace(q, index=0), None)

        def chunks() -> Iterator[bytes]:
            for start in range(0, max(len(sessions), 1), MAX_COUNT):
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\r\n")
                if start == 0:
                    writer.writerow(CSV_COLUMNS)
                with self._lock:
                    records = [self._record(s) for s in sessions[start : start + MAX_COUNT]]
                writer.writerows([_csv_field(r, col) for col in CSV_COLUMNS] for r in records)
                yield buf.getvalue().encode()

        h.send_chunked(200, "text/csv; charset=utf-8", chunks(), {"Content-Disposition": "attachment"})

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        host, port = self._server.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self._certfile else 'http'}://{host}:{port}"

    def start(self) -> Simulator:
        """Listen and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        context = None
        if self._certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._certfile, self._keyfile)
        self._stopping.clear()
        self._server = _Server((self._host, self._port), self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="cmx-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open connections, so slow faults end too."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _csv_field(record: dict[str, object], column: str) -> object:
    """A record's value for a CSV column, also under the key spellings other deployments use."""
    for key in (column, *CSV_ALIASES.get(column, ())):
        if key in record:
            return "" if record[key] is None else record[key]
    return ""


def _envelope(records: list[bytes], next_index: int, count: int) -> bytes:
    """The clients envelope, built around pre-encoded records with one join."""
    return b"".join(
        (
            b'{"nextIndex":%d,"timeZoneOffset":-14400000,"queryRecordCount":%d,' % (next_index, count),
            b'"timeZone":"Eastern Standard Time","records":[',
            b",".join(records),
            b'],"returnRecordCount":%d}' % len(records),
        )
    )


# --- fault handlers: each answers a clients request in its own wrong way ------------------


def _page_body(h: _Handler, q: _Query, limit: int | None = None, next_index: int | None = None) -> bytes:
    """The clients envelope for q; faults may stretch the page (limit) or lie about nextIndex."""
    records, more_at = h.sim._page(q, limit)
    return _envelope(records, more_at if next_index is None else next_index, q.count)


def _serve_page(h: _Handler, q: _Query) -> None:
    h.send_body(200, JSON, _page_body(h, q))


def _fixed(status: int, content_type: str, body: bytes) -> Callable[[_Handler, _Query], None]:
    return lambda h, q: h.send_body(status, content_type, body)


def _truncated(h: _Handler, q: _Query) -> None:
    body = _page_body(h, q)
    h.send_body(200, JSON, body[: len(body) // 2])


def _wrong_shape(h: _Handler, q: _Query) -> None:
    records, _ = h.sim._page(q)
    h.send_body(200, JSON, b"[" + b",".join(records) + b"]")


def _ignore_index(h: _Handler, q: _Query) -> None:
    _serve_page(h, replace(q, index=0))


def _too_many(h: _Handler, q: _Query) -> None:
    h.send_body(200, JSON, _page_body(h, q, limit=2 * q.count + 1))


def _next_backwards(h: _Handler, q: _Query) -> None:
    h.send_body(200, JSON, _page_body(h, q, next_index=max(1, q.index // 2)))


def _hang(h: _Handler, q: _Query) -> None:
    if h.sim._wait(30):
        _serve_page(h, q)
    else:
        h.close_connection = True


def _trickle(h: _Handler, q: _Query) -> None:
    body = _page_body(h, q)
    length = max(len(body), 1 << 20)  # promised; padding is legal JSON white space
    body += b" " * (length - len(body))

    def drip() -> Iterator[bytes]:
        for i in range(120):  # a byte every 0.5 s for up to 60 s
            if i and not h.sim._wait(0.5):
                return
            yield body[i : i + 1]

    h.send_stream(200, JSON, length, drip())
    h.close_connection = True  # the promised length was never delivered


def _huge(h: _Handler, q: _Query) -> None:
    tail = b'",' + _page_body(h, q)[1:]
    head = b'{"padding":"'
    pad, block = 50 * 1024 * 1024 - len(head) - len(tail), b"x" * 65536

    def blocks() -> Iterator[bytes]:
        yield head
        for offset in range(0, pad, len(block)):
            if h.sim._stopping.is_set():
                return
            yield block[: min(len(block), pad - offset)]
        yield tail

    h.send_stream(200, JSON, len(head) + pad + len(tail), blocks())


# --- hostile faults: each keeps within the read timeout, byte by byte, or steers the counting -----

DRIP_SECONDS = 0.5  # one byte this often: well inside any read timeout, never a whole answer


def _drip(h: _Handler, head: bytes, endless: bytes) -> None:
    """``head`` at once, then ``endless`` a byte at a time, over and over, until the client gives up."""
    h.close_connection = True
    try:
        h.wfile.write(head)
        h.wfile.flush()
        for byte in itertools.cycle(endless):
            if not h.sim._wait(DRIP_SECONDS):
                return
            h.wfile.write(bytes((byte,)))
            h.wfile.flush()
    except OSError:  # the client hung up: what it should do
        return


def _trickle_headers(h: _Handler, q: _Query) -> None:
    _drip(h, b"HTTP/1.1 200 OK\r\n", b"X-Padding: still coming\r\n")


def _continue_forever(h: _Handler, q: _Query) -> None:
    _drip(h, b"", b"HTTP/1.1 100 Continue\r\n\r\n")


def _trickle_chunk_size(h: _Handler, q: _Query) -> None:
    _drip(h, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", b"0")


def _gzip_endless_name(h: _Handler, q: _Query) -> None:
    """A gzip header with a file name (FNAME) that never ends: the decoder waits for its NUL."""
    _drip(h, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
             b"Content-Length: 1000000\r\n\r\n\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\x03", b"name")


def _slow_pages(h: _Handler, q: _Query) -> None:
    """Valid one-record pages, each in time, whose nextIndex always says more."""
    if h.sim._wait(DRIP_SECONDS):
        h.send_body(200, JSON, _page_body(h, q, limit=1, next_index=q.index + 1))
    else:
        h.close_connection = True


def _closes_kept_alive(h: _Handler, q: _Query) -> None:
    """Close a kept-alive connection as its next request arrives, without a byte of answer."""
    if h.answered:
        h.close_connection = True
        return
    h.answered = True
    _serve_page(h, q)


def crafted_mac(position: int) -> str:
    """MACs that the exporter's first de-duplication table put in one shard and one first slot."""
    h = (position + 1) << 6  # the low six bits chose the shard
    return format_mac(h << 24 | h)  # key ^ key >> 24 left only the shard bits: every key on slot 0


def _crafted_macs(h: _Handler, q: _Query) -> None:
    """The page as it is, every MAC replaced by a crafted one: the same counts, a steered table."""
    records, more_at = h.sim._page(q)
    start = len(b'{"macAddress":"')
    crafted = [r[:start] + crafted_mac(q.index + i).encode() + r[start + 17:] for i, r in enumerate(records)]
    h.send_body(200, JSON, _envelope(crafted, more_at, q.count))


HUGE_LABEL_PAGES = 60
HUGE_LABEL_BYTES = 3 << 20


def _huge_labels(h: _Handler, q: _Query) -> None:
    """One-record pages whose four label values are distinct and 3 MiB long each."""
    if q.index >= HUGE_LABEL_PAGES:
        h.send_body(200, JSON, _envelope([], 0, q.count))
        return
    fields = {key: f"{q.index}-{key}-".ljust(HUGE_LABEL_BYTES, "x") for key in RECORD_KEYS.values()}
    record = _dumps({"macAddress": crafted_mac(q.index), **fields})
    h.send_body(200, JSON, _envelope([record], q.index + 1, q.count))


def _deep_nesting(h: _Handler, q: _Query) -> None:
    h.send_body(200, JSON, b'{"nextIndex":0,"records":' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def _long_number(h: _Handler, q: _Query) -> None:
    records, more_at = h.sim._page(q)
    if records:
        records[-1] = records[-1][:-1] + b',"bytesSent":' + b"9" * 5001 + b"}"
    h.send_body(200, JSON, _envelope(records, more_at, q.count))


def _retry_after_5000_digits(h: _Handler, q: _Query) -> None:
    h.send_body(429, TEXT, b"CMX Error 429", {"Retry-After": "9" * 5000})


FAULTS: dict[str, Callable[[_Handler, _Query], None]] = {
    "plain_text": _fixed(200, TEXT, b"CMX Error"),
    "html": _fixed(
        200,
        "text/html; charset=utf-8",
        b"<!DOCTYPE html><html><head><title>Error</title></head>"
        b"<body><h1>HTTP Status 500 - Internal Server Error</h1><p>CMX Error</p></body></html>",
    ),
    "truncated": _truncated,
    "wrong_shape": _wrong_shape,
    "ignore_index": _ignore_index,
    "too_many": _too_many,
    "next_backwards": _next_backwards,
    "hang": _hang,
    "trickle": _trickle,
    "huge": _huge,
    "trickle_headers": _trickle_headers,
    "continue_forever": _continue_forever,
    "trickle_chunk_size": _trickle_chunk_size,
    "gzip_endless_name": _gzip_endless_name,
    "slow_pages": _slow_pages,
    "closes_kept_alive": _closes_kept_alive,
    "crafted_macs": _crafted_macs,
    "huge_labels": _huge_labels,
    "deep_nesting": _deep_nesting,
    "long_number": _long_number,
    "retry_after_5000_digits": _retry_after_5000_digits,
}


def _redirect_to(fault: str) -> str | None:
    """The base URL of a ``redirect:URL`` fault, else None."""
    name, _, target = fault.partition(":")
    return target if name == "redirect" and target.startswith(("http://", "https://")) else None


def _status_fault(fault: str) -> int | None:
    """The status of a ``status:NNN`` fault, else None."""
    name, _, code = fault.partition(":")
    if name == "status" and code.isdigit() and 100 <= int(code) <= 599:
        return int(code)
    return None


# --- HTTP plumbing -----------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 handler that hands every GET to the simulator."""

    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 120  # an idle keep-alive connection is dropped after this
    answered = False  # whether the closes_kept_alive fault answered a request on this connection
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for an ACK between

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # here, not in the accept loop, so a slow client blocks no one
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        super().finish()

    def do_GET(self) -> None:
        self.sim._handle(self)

    def log_message(self, format: str, *args: object) -> None:
        """No access log: benchmarks make millions of requests."""

    def _head(self, status: int, content_type: str, headers: dict[str, str] | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)

    def send_body(self, status: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self._head(status, content_type, headers)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_stream(self, status: int, content_type: str, length: int, chunks: Iterable[bytes]) -> None:
        """Headers with a known Content-Length, then the body piece by piece."""
        self._head(status, content_type, None)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
            self.wfile.flush()

    def send_chunked(
        self, status: int, content_type: str, chunks: Iterable[bytes], headers: dict[str, str] | None = None
    ) -> None:
        """A body of unknown length, with chunked transfer encoding (keeps the connection usable)."""
        self._head(status, content_type, headers)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its connections, so stop() can cut them."""

    daemon_threads = True
    block_on_close = False  # stop() must not wait for a hanging handler

    def __init__(self, address: tuple[str, int], sim: Simulator, context: ssl.SSLContext | None) -> None:
        self.sim = sim
        self.context = context
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = super().get_request()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self.connections_lock:
            if add:
                self.connections.add(sock)
            else:
                self.connections.discard(sock)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_now = list(self.connections)
        for sock in open_now:
            with contextlib.suppress(OSError):  # already closed by its handler
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up mid-answer are normal here (timeouts, faults); log quietly."""
        log.debug("simulator connection from %s ended with an error", client_address, exc_info=True)


# --- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m cmx_simulator", description="Run a CMX Connect API simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18443, help="port to listen on (default 18443)")
    parser.add_argument("--sessions", type=int, default=5000, help="population size (default 5000)")
    parser.add_argument("--active-fraction", type=float, default=0.7, help="share of sessions active (0.7)")
    parser.add_argument("--seed", type=int, default=1, help="population seed (default 1)")
    parser.add_argument("--username", default="demo", help="Basic auth user (default demo)")
    parser.add_argument(
        "--password", default=os.environ.get("SIM_PASSWORD", "demo"), help="Basic auth password (env SIM_PASSWORD)"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before each answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    parser.add_argument("--churn", type=int, default=0, help="sessions logging in and out per request")
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    parser.add_argument("--tls-key", help="PEM private key for --tls-cert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    sim = Simulator(
        args.sessions,
        active_fraction=args.active_fraction,
        seed=args.seed,
        username=args.username,
        password=args.password,
        host=args.host,
        port=args.port,
        latency=args.latency,
        error_rate=args.error_rate,
        churn=args.churn,
        certfile=args.tls_cert,
        keyfile=args.tls_key,
    ).start()
    log.info("CMX Connect simulator serving %d sessions at %s%s", args.sessions, sim.url, CLIENTS_PATH)
    done.wait()
    sim.stop()
