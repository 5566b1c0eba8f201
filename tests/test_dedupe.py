"""Session keys, and the salted table that keeps each session once per poll."""

from __future__ import annotations

import math
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_connect_exporter.counting.dedupe import SeenKeys, session_key, session_keys
from cmx_pages import as_records


def key_of(**fields: object) -> int | None:
    return session_key(as_records([fields])[0])


def test_session_key_is_an_integer_for_a_mac() -> None:
    assert key_of(macAddress="00:11:22:33:44:55") == 0x001122334455
    assert key_of(mac="not-a-mac") != key_of(mac="not-a-mac-2")
    assert key_of(mac="not-a-mac") >= 1 << 63
    assert key_of(macAddress=None) is None
    assert key_of(clientMac="00-11-22-33-44-55", mac=None) == 0x001122334455, "the first spelling present"


# MAC-like text: mostly the usual form, with the slips a page may hold (other separators, a colon too
# many or too few, signs and prefixes int() takes, digits beyond ASCII), and values that are not text.
_HEX = st.text("0123456789abcdefABCDEF", min_size=2, max_size=2)
_USUAL_MAC = st.lists(_HEX, min_size=6, max_size=6).map(":".join)
_ODD_MAC = st.one_of(st.text("0123456789abcdefxX:-_ +\u0663\u00e9", min_size=15, max_size=19),
                     _USUAL_MAC.map(lambda mac: mac.replace(":", "", 1) + ":"), st.none(), st.integers(), st.just(""))


@given(st.lists(st.one_of(_USUAL_MAC, _USUAL_MAC, _ODD_MAC), max_size=30), st.booleans())
@settings(max_examples=300, deadline=None)
def test_a_pages_session_keys_are_each_records(macs: list[object], usual_only: bool) -> None:
    if usual_only:
        macs = [mac for mac in macs if isinstance(mac, str) and len(mac) == 17 and mac.count(":") == 5]
    records = as_records([{"macAddress": mac} for mac in macs])
    assert session_keys(records) == [session_key(record) for record in records]


def test_seen_keys_takes_a_page_at_once() -> None:
    seen = SeenKeys()
    assert seen.add_all([5, None, 0, 5, 7, None, 0]) == [True, True, True, False, True, True, False]
    assert seen.add_all([7, 8]) == [False, True] and len(seen) == 4


@given(st.lists(st.one_of(st.integers(0, 5), st.integers(0, (1 << 64) - 1)), max_size=20_000))
@settings(max_examples=30, deadline=None)
def test_seen_keys_behaves_like_a_set(keys: list[int]) -> None:
    seen, reference = SeenKeys(), set()
    for key in keys:
        assert seen.add(key) == (key not in reference)
        reference.add(key)
    assert len(seen) == len(reference)


def test_seen_keys_stays_exact_as_it_grows() -> None:
    rng = random.Random(5)
    keys = [rng.getrandbits(48) for _ in range(50_000)] * 2
    seen = SeenKeys()
    assert len(set(keys)) > 49_000
    assert sum(seen.add(k) for k in keys) == len(set(keys))
    assert not any(seen.add(k) for k in keys)
    assert len(seen) == len(set(keys))


def crafted_keys(n: int) -> list[int]:
    """MACs that all fell in one shard and one first slot of the unsalted table: ``h << 24 | h``, ``h = m << 6``."""
    return [m << 30 | m << 6 for m in range(n)]


def seconds_to_add(keys: list[int], budget: float = math.inf) -> float:
    """Best of five fills of a fresh SeenKeys; a fill is abandoned past ``budget`` seconds (inf if all are)."""
    best = math.inf
    for _ in range(5):
        seen = SeenKeys()
        start = time.perf_counter()
        for chunk in range(0, len(keys), 1000):
            for key in keys[chunk:chunk + 1000]:
                seen.add(key)
            if time.perf_counter() - start > budget:
                break
        else:
            best = min(best, time.perf_counter() - start)
    return best


def test_seen_keys_takes_crafted_keys_as_fast_as_ordinary_ones() -> None:
    """A server cannot choose MACs that pile up in one place: where a key goes is salted per table."""
    rng = random.Random(7)
    ordinary = seconds_to_add([rng.getrandbits(48) for _ in range(20_000)])
    crafted = seconds_to_add(crafted_keys(20_000), budget=5 * ordinary)
    assert crafted < 5 * ordinary, f"20,000 crafted keys took over 5x the {ordinary:.3f} s of ordinary ones"


def test_seen_keys_holds_crafted_and_extreme_keys_exactly() -> None:
    keys = [*crafted_keys(5000), 1, (1 << 64) - 1, 1 << 63, (1 << 63) | 1, 1 << 58, 3 << 62]
    assert keys.count(0) == 1
    seen = SeenKeys()
    assert all(seen.add(key) for key in keys)
    assert not any(seen.add(key) for key in keys), "every duplicate is found"
    assert len(seen) == len(keys)
    assert not seen.add(0)
    assert seen.add(2) and len(seen) == len(keys) + 1
