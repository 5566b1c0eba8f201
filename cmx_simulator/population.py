"""The synthetic guests: sessions, their churn, and the ground truth the exporter is checked against.

Each session keeps what the generator chose for it (its canonical label values, where and when it
logged in), so the ground truth here never comes from reading records back. The rest of its history
(first login, bytes, guest details) is drawn from its MAC on demand, which keeps a million sessions
compact. Not thread-safe: the simulator serialises every call.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from cmx_connect_exporter.counting.dimensions import NEW, PORTAL, PORTAL_TYPE, RETURNING, SITE, VISIT
from cmx_simulator.vocabulary import (
    GUEST_POOL,
    LABELS,
    MESSY_SHARE,
    PROFILE_CUM_WEIGHTS,
    PROFILES,
    RECORD_KEYS,
    SPOT_CUM_WEIGHTS,
    SPOTS,
    VARIANT_CUM_WEIGHTS,
    VARIANT_FUNCS,
    VENDOR_OUIS,
    Rendering,
)

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR
ACTIVE_WINDOW = 8 * HOUR  # active guests logged in during the current day part
HISTORY = 30 * DAY  # inactive guests go back a month
FIRST_VISIT_SHARE = 0.6  # guests on their first visit ever; the others have been before

# CMX's clock, as the API page's sample envelope gives it: local time is UTC plus the offset.
TIME_ZONE = "Eastern Standard Time"
TIME_ZONE_OFFSET_MS = -4 * HOUR * 1000


def local_day(epoch_s: int) -> int:
    """The day an instant falls on in CMX's local time, counted from 1970-01-01."""
    return (epoch_s + TIME_ZONE_OFFSET_MS // 1000) // DAY


@dataclass(frozen=True)
class ActiveCounts:
    """The simulator's own count of active sessions, by canonical label value."""

    total: int
    by_label: dict[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class SessionTruth:
    """One active session as the generator chose it, in the units the exporter will read."""

    mac: str  # as the record spells it
    site: str  # location/Site, "unknown" when the record leaves it out or sends null
    portal: str
    portal_type: str  # the record's ``type``
    first_login: int  # firstLoginTime, epoch seconds
    last_login: int  # lastLoginTime, epoch seconds
    logout: int | None  # lastLogoutTime, epoch seconds; None when the record sends null
    bytes_sent: int
    bytes_received: int

    @property
    def returning(self) -> bool:
        """Whether the first login fell on an earlier day than the last, in CMX's local time."""
        return local_day(self.first_login) < local_day(self.last_login)

    def dwell(self, now: float) -> float:
        """Seconds since the last login, at ``now`` (epoch seconds)."""
        return now - self.last_login

    @property
    def stay(self) -> int | None:
        """How long the guest stayed, once gone: None while connected, as a logout before the last login is
        the previous visit's."""
        return None if self.logout is None or self.logout < self.last_login else self.logout - self.last_login


@dataclass(frozen=True)
class VenueCounts:
    """What the venue-analytics metrics should show for a set of active sessions, exactly."""

    total: int
    by_site: dict[str, int]
    by_portal: dict[str, int]
    by_portal_type: dict[str, int]
    returning: int  # first login on an earlier local day
    new: int  # the rest: first login on the day of the last
    bytes_sent: int
    bytes_received: int
    stays: tuple[int, ...] = ()  # of the sessions that have left: logout minus last login, seconds

    @classmethod
    def of(cls, sessions: Iterable[SessionTruth]) -> VenueCounts:
        sessions = list(sessions)
        returning = sum(s.returning for s in sessions)
        return cls(
            total=len(sessions),
            by_site=dict(Counter(s.site for s in sessions)),
            by_portal=dict(Counter(s.portal for s in sessions)),
            by_portal_type=dict(Counter(s.portal_type for s in sessions)),
            returning=returning,
            new=len(sessions) - returning,
            bytes_sent=sum(s.bytes_sent for s in sessions),
            bytes_received=sum(s.bytes_received for s in sessions),
            stays=tuple(stay for s in sessions if (stay := s.stay) is not None),
        )


class History(NamedTuple):
    """The parts of a session drawn from its MAC: the same on every call, so never stored."""

    first_login: int  # epoch seconds, as the rest
    accepted: int
    logout: int | None  # None: never logged out (an active guest on a first visit)
    bytes_sent: int
    bytes_received: int
    guest: int  # which of the pre-encoded guest details the record carries


def _mix(x: int) -> int:
    """SplitMix64's finaliser: cheap, well-spread pseudo-random bits from an integer."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def format_mac(mac: int) -> str:
    """Render a 48-bit MAC the way CMX does: lower-case, colon-separated."""
    return mac.to_bytes(6, "big").hex(":")


class Session:
    """One guest; compact so a million fit."""

    __slots__ = ("active", "encoded", "labels", "login", "logout", "mac", "raw", "spot")

    def __init__(
        self, mac: int, login: int, active: bool, labels: tuple[str, ...], raw: tuple[Rendering, ...] | None, spot: int
    ) -> None:
        self.mac = mac
        self.login = login  # lastLoginTime, epoch seconds
        self.active = active
        self.labels = labels  # canonical values, in LABELS order
        self.raw = raw  # how the labels are rendered, when untidily; None means as canonical
        self.spot = spot  # index into SPOTS: the site and portal
        self.logout: int | None = None  # set when churn logs the session out
        self.encoded: bytes | None = None  # the record's JSON, cached by the encoder; dropped when the session changes


class Population:
    """Every session, oldest first, with the active ones in a list of their own and counted as they change."""

    def __init__(self, sessions: int, active_fraction: float, seed: int) -> None:
        if sessions < 0 or not 0.0 <= active_fraction <= 1.0:
            raise ValueError("sessions must be >= 0 and active_fraction within [0, 1]")
        self.epoch = int(time.time())  # when the population was drawn
        self._rng = random.Random(seed)  # population and churn
        self._by_mac: dict[int, Session] = {}
        self._build(sessions, round(sessions * active_fraction))

    def _build(self, total: int, active: int) -> None:
        """Draw login times, sort once, then keep two newest-last lists.

        ``_all`` holds every session and ``_active`` the active ones, both oldest first, so a
        newest-first page is a slice from the end; logged-out sessions leave ``_active`` from
        the front, tracked by ``_head`` and compacted now and then.
        """
        rng, now = self._rng, self.epoch
        # login << 1 | active: one integer sort orders by time and carries the state along.
        keys = [(now - int(rng.random() * ACTIVE_WINDOW)) << 1 | 1 for _ in range(active)]
        keys += [(now - int(rng.random() * HISTORY)) << 1 for _ in range(total - active)]
        keys.sort()
        self._all = self._make_sessions(keys)
        self._active = [s for s in self._all if s.active]
        self._head = 0
        self._active_labels = Counter(s.labels for s in self._active)

    def _make_sessions(self, keys: list[int]) -> list[Session]:
        """Create sessions for encoded (login << 1 | active) keys; used by the build and by churn."""
        rng = self._rng
        by_mac = self._by_mac
        shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct label combination
        profiles = rng.choices(PROFILES, cum_weights=PROFILE_CUM_WEIGHTS, k=len(keys))
        spots = rng.choices(range(len(SPOTS)), cum_weights=SPOT_CUM_WEIGHTS, k=len(keys))
        sessions = []
        for key, labels, spot in zip(keys, profiles, spots, strict=True):
            mac = self._new_mac()
            raw = None
            if rng.random() < MESSY_SHARE:
                slot = rng.randrange(len(LABELS))
                variant = rng.choices(VARIANT_FUNCS, cum_weights=VARIANT_CUM_WEIGHTS)[0]
                renderings = [(RECORD_KEYS[label], value, value) for label, value in zip(LABELS, labels, strict=True)]
                renderings[slot] = variant(LABELS[slot], labels[slot])
                raw = tuple(renderings)
                canonical = tuple(rendering[2] for rendering in raw)
                labels = shared.setdefault(canonical, canonical)
            session = Session(mac, key >> 1, bool(key & 1), labels, raw, spot)
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

    def churn(self, count: int) -> None:
        """``count`` guests log in at the top; as many of the oldest active ones log out."""
        if count <= 0:
            return
        now = max(int(time.time()), self._all[-1].login if self._all else 0)
        arrivals = self._make_sessions([now << 1 | 1] * count)
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

    # --- reading the sessions: newest first, as the API lists them ---------------------

    def _listing(self, active_only: bool) -> tuple[list[Session], int]:
        """The list to read, oldest first, and the index of its first live entry."""
        return (self._active, self._head) if active_only else (self._all, 0)

    def newest(self, active_only: bool, skip: int, limit: int | None) -> tuple[list[Session], bool]:
        """Sessions newest first after the first ``skip``, at most ``limit``; and whether more remain. O(limit)."""
        base, head = self._listing(active_only)
        top = len(base) - skip
        bottom = head if limit is None else max(head, top - limit)
        chosen = base[bottom : max(head, top)][::-1]
        return chosen, top - len(chosen) > head

    def newest_first(self, active_only: bool) -> Iterator[Session]:
        """Every session, newest first, for filters that must look at each."""
        base, head = self._listing(active_only)
        return (base[i] for i in range(len(base) - 1, head - 1, -1))

    def find(self, mac: int) -> Session | None:
        return self._by_mac.get(mac)

    def history(self, s: Session) -> History:
        """The session's past, drawn from its MAC: visits, first login, logout, bytes, guest details."""
        h1 = _mix(s.mac)
        h2 = _mix(h1)
        first_visit = (h1 & 0xFFFF) < FIRST_VISIT_SHARE * 0x10000
        visits = 1 if first_visit else 2 + (h1 >> 16) % 11
        spacing = DAY // 2 + (h1 >> 24) % (4 * DAY)  # from one visit's login to the next
        stay = 10 * MINUTE + (h2 >> 4) % (6 * HOUR)  # less than the spacing, so visits never overlap
        if s.logout is not None:
            logout: int | None = s.logout
        elif s.active:  # the previous visit's logout, if there was one
            logout = None if first_visit else s.login - spacing + stay
        else:
            logout = min(s.login + stay, max(self.epoch, s.login))
        return History(  # positional: the encoder calls this for every record
            s.login - (visits - 1) * spacing,  # first_login
            s.login + 2 + (h1 >> 40) % 90,  # accepted
            logout,
            10_000 + (h2 >> 8) % 200_000_000,  # bytes_sent
            100_000 + (h2 >> 36) % 2_000_000_000,  # bytes_received
            h2 % GUEST_POOL,  # guest
        )

    # --- ground truth -----------------------------------------------------------------

    def active_counts(self) -> ActiveCounts:
        """Ground truth for status=active, every dimension of the catalogue, from what the generator chose."""
        combos = +self._active_labels  # drops zero counts
        by_label: dict[str, Counter[str]] = {label: Counter() for label in LABELS}
        for labels, n in combos.items():
            for label, value in zip(LABELS, labels, strict=True):
                by_label[label][value] += n
        venue = VenueCounts.of(self.active_sessions())
        visits = {NEW: venue.new, RETURNING: venue.returning}
        by_label |= {SITE.label: Counter(venue.by_site), PORTAL.label: Counter(venue.by_portal),
                     PORTAL_TYPE.label: Counter(venue.by_portal_type), VISIT.label: +Counter(visits)}
        return ActiveCounts(total=sum(combos.values()), by_label={k: dict(v) for k, v in by_label.items()})

    def active_sessions(self) -> list[SessionTruth]:
        """Every active session as the generator chose it, newest first. O(active sessions)."""
        return self._truths(self.newest_first(active_only=True))

    def sessions_since(self, start: int) -> list[SessionTruth]:
        """Every session, active or not, whose last login is at ``start`` or later, as ``start=`` selects them."""
        return self._truths(itertools.takewhile(lambda s: s.login >= start, self.newest_first(active_only=False)))

    def _truths(self, sessions: Iterable[Session]) -> list[SessionTruth]:
        truths = []
        for s in sessions:
            past, spot = self.history(s), SPOTS[s.spot]
            truths.append(
                SessionTruth(
                    mac=format_mac(s.mac),
                    site=spot.canonical_site,
                    portal=spot.portal,
                    portal_type=spot.portal_type,
                    first_login=past.first_login,
                    last_login=s.login,
                    logout=past.logout,
                    bytes_sent=past.bytes_sent,
                    bytes_received=past.bytes_received,
                )
            )
        return truths
