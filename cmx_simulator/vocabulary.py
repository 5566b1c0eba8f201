"""The words the synthetic guests are made of: label values and their shares, the venue, the guests' details.

Label names and record keys come from the exporter's catalogue, so the simulator speaks of the same
dimensions the exporter counts; the values and weights here are the simulator's own data. A new
dimension in the catalogue needs its values here too (``_CHOICES``), or this module fails on import.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from cmx_connect_exporter.counting.dimensions import AUTHTYPE, DEVICE, LANGUAGE, OS, PORTAL, PORTAL_TYPE, SITE

# The catalogue's dimensions a guest's profile draws, in the catalogue's order; the venue's (site,
# portal, portal type) come from SPOTS below, and the visit from the session's times.
DIMENSIONS = (AUTHTYPE, OS, DEVICE, LANGUAGE)
LABELS = tuple(d.label for d in DIMENSIONS)

UNKNOWN = "unknown"
MAX_LABEL_LEN = 64

# A session's label tuple and ActiveCounts follow the catalogue's LABELS, in its order.
RECORD_KEYS = {d.label: d.keys[0] for d in DIMENSIONS}  # the documented spelling
ALIAS_KEYS = {d.label: d.keys[1:] for d in DIMENSIONS}  # spellings other deployments use; the exporter reads them too

AUTH_TYPES = {"registration": 50, "SMS": 30, "social": 20}

_UA_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
_UA_ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36"
)
UA_CAPTIVE = "CaptiveNetworkSupport-443.100.1 wispr"


@dataclass(frozen=True)
class OsProfile:
    """How common an OS is, which devices run it, and a user agent it sends."""

    weight: float
    devices: dict[str, int]
    agent: str


OPERATING_SYSTEMS = {
    "Android": OsProfile(40, {"Mobile": 86, "Tablet": 10, "Unknown": 4}, _UA_ANDROID),
    "iOS": OsProfile(37, {"Mobile": 82, "Tablet": 18}, _UA_IPHONE),
    "Windows": OsProfile(
        10,
        {"Desktop": 94, "Tablet": 2, "Unknown": 4},
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0",
    ),
    "Mac OS X": OsProfile(
        7,
        {"Desktop": 100},
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
    ),
    "Chrome OS": OsProfile(
        2,
        {"Desktop": 100},
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ),
    "Linux": OsProfile(
        1.5, {"Desktop": 90, "Unknown": 10}, "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
    ),
    # Same platform, other spelling: the exporter keeps case, so this is its own value.
    "android": OsProfile(1, {"Mobile": 90, "Tablet": 10}, _UA_ANDROID),
    "Unknown": OsProfile(1.5, {"Unknown": 60, "Smart TV": 25, "Game Console": 15}, UA_CAPTIVE),
}
OS_SLOT = LABELS.index(OS.label)  # where a session's label tuple holds its OS, which picks the user agent

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
    AUTHTYPE.label: "registration with sponsor approval, SMS passcode and social-login fallback (legacy)",
    OS.label: "Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0",
    DEVICE.label: "Mobile-phone-reported-by-captive-network-assistant-with-a-verbose-model-string-v2",
    LANGUAGE.label: "English (United States), English;q=0.9, Spanish;q=0.8, French;q=0.7, German;q=0.6",
}


def _profiles() -> tuple[list[tuple[str, ...]], list[float]]:
    """Every combination of label values, in the catalogue's label order, with its joint weight."""
    profiles, weights = [], []
    for auth, auth_w in AUTH_TYPES.items():
        for os_name, osp in OPERATING_SYSTEMS.items():
            for device, dev_w in osp.devices.items():
                for language, (_, lang_w) in LANGUAGES.items():
                    chosen = {AUTHTYPE.label: auth, OS.label: os_name, DEVICE.label: device, LANGUAGE.label: language}
                    profiles.append(tuple(chosen[label] for label in LABELS))
                    weights.append(auth_w * osp.weight * dev_w * lang_w)
    return profiles, list(itertools.accumulate(weights))


PROFILES, PROFILE_CUM_WEIGHTS = _profiles()

# --- untidy renderings -----------------------------------------------------------------
# Each variant maps (label, canonical value) to (record key or None to leave the key out,
# value as sent, canonical value); the generator knows the canonical value by construction.
Rendering = tuple[str | None, str | None, str]
_MISSING: Rendering = (None, None, UNKNOWN)


def _inner_spaces(label: str, value: str) -> Rendering:
    untidy = value.replace(" ", "  \t") if " " in value else f"{value}\t "
    return RECORD_KEYS[label], untidy, value


def _alias(label: str, value: str) -> Rendering:
    aliases = ALIAS_KEYS[label] or (RECORD_KEYS[label],)
    return aliases[len(value) % len(aliases)], value, value


MESSY_VARIANTS: dict[str, tuple[int, Callable[[str, str], Rendering]]] = {
    "padded": (20, lambda label, v: (RECORD_KEYS[label], f"  {v} ", v)),
    "inner_spaces": (20, _inner_spaces),
    "null": (12, lambda label, v: (RECORD_KEYS[label], None, UNKNOWN)),
    "empty": (8, lambda label, v: (RECORD_KEYS[label], "", UNKNOWN)),
    "blank": (6, lambda label, v: (RECORD_KEYS[label], " \t ", UNKNOWN)),
    "missing": (10, lambda label, v: _MISSING),
    "alias": (20, _alias),
    "long": (4, lambda label, v: (RECORD_KEYS[label], LONG_VALUES[label], LONG_VALUES[label][:MAX_LABEL_LEN])),
}
VARIANT_FUNCS = [func for _, func in MESSY_VARIANTS.values()]
VARIANT_CUM_WEIGHTS = list(itertools.accumulate(weight for weight, _ in MESSY_VARIANTS.values()))
MESSY_SHARE = 0.1  # share of sessions with one label rendered untidily (about 2.5 % per label)

# --- the venue: a stadium's sites and captive portals ------------------------------------

SITE_KEY, PORTAL_KEY, PORTAL_TYPE_KEY = SITE.keys[0], PORTAL.keys[0], PORTAL_TYPE.keys[0]

# Guests per site: unequal, as crowds are. The weights are per 100 guests.
SITES = {
    "North Stand": 22, "South Stand": 20, "Concourse": 18, "West Stand": 14,
    "East Stand": 13, "Fan Zone": 8, "VIP Lounge": 3,
}  # fmt: skip
SITE_MISSING_WEIGHT = 1.2  # records without location/Site ...
SITE_NULL_WEIGHT = 0.8  # ... and with it null: both count as "unknown"

# Portal name -> portal type. CMX Connect offers two on-boarding experiences, a custom portal and
# Facebook Wi-Fi (CMX 10.5 configuration guide); the exact strings CMX puts in ``type`` are a guess.
PORTALS = {
    "Stadium Guest Wi-Fi": "Custom Portal",
    "VIP Lounge Wi-Fi": "Custom Portal",
    "Stadium Facebook Wi-Fi": "Facebook Wi-Fi",
}
# Which portal a site's guests see, by weight: CMX picks the portal by location.
_PUBLIC_PORTALS = {"Stadium Guest Wi-Fi": 80, "Stadium Facebook Wi-Fi": 20}
PORTALS_BY_SITE = {"VIP Lounge": {"VIP Lounge Wi-Fi": 90, "Stadium Guest Wi-Fi": 10}}


@dataclass(frozen=True)
class Spot:
    """Where a guest logged in: the site as sent (``site_sent`` False leaves the key out) and the portal."""

    site: str | None
    site_sent: bool
    portal: str

    @property
    def canonical_site(self) -> str:
        return self.site or UNKNOWN

    @property
    def portal_type(self) -> str:
        return PORTALS[self.portal]


def _spots() -> tuple[tuple[Spot, ...], list[float]]:
    """Every (site, portal) a record can carry, with its weight; a session keeps an index into it."""
    sites: list[tuple[str | None, bool, float]] = [(site, True, w) for site, w in SITES.items()]
    sites += [(None, False, SITE_MISSING_WEIGHT), (None, True, SITE_NULL_WEIGHT)]
    spots, weights = [], []
    for site, sent, site_w in sites:
        portals = PORTALS_BY_SITE.get(site or "", _PUBLIC_PORTALS)
        for portal, portal_w in portals.items():
            spots.append(Spot(site, sent, portal))
            weights.append(site_w * portal_w)
    return tuple(spots), list(itertools.accumulate(weights))


SPOTS, SPOT_CUM_WEIGHTS = _spots()

# --- the guests' own details: registration-form fields, personal data -------------------------

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
BANDWIDTHS = (1024, 2048, 5120, 10240)
GUEST_POOL = 4096  # distinct sets of guest details, pre-encoded; a session's MAC picks one
VENDOR_OUIS = (0x3C22FB, 0xF01898, 0xA4C361, 0x002608, 0x8C8590, 0xDC2B2A)  # a few globally-unique MACs
