"""Session keys, and the salted table that keeps each session once per poll, and its login from poll to poll."""

from __future__ import annotations

import math
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from cmx_connect_exporter.counting.dedupe import SessionTable, session_key, session_keys
from cmx_pages import as_records

T = 1_795_000_000  # 2026-11-18 11:06:40 UTC


def key_of(**fields: object) -> int | None:
    return session_key(as_records([fields])[0])


def test_session_key_is_an_integer_for_a_mac() -> None:
    assert key_of(macAddress="00:11:22:33:44:55") == 0x001122334455
    assert key_of(mac="not-a-mac") != key_of(mac="not-a-mac-2")
    assert 1 << 59 <= key_of(mac="not-a-mac") < 1 << 60, "above any MAC, and within the table's keys"
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


def add(table: SessionTable, key: int) -> bool:
    return table.add_all([key])[0]


def test_the_table_takes_a_page_at_once() -> None:
    table = SessionTable()
    assert table.add_all([5, None, 0, 5, 7, None, 0]) == [True, True, True, False, True, True, False]
    assert table.add_all([7, 8, (1 << 48) - 1]) == [False, True, True], "key 0 stands apart from every MAC"
    assert len(table) == 5


# Keys as session_key makes them: MACs below 2**48, keys of text from 2**59 to 2**60.
_KEYS = st.one_of(st.integers(0, 5), st.integers(0, (1 << 48) - 1), st.integers(1 << 59, (1 << 60) - 1))


@given(st.lists(_KEYS, max_size=20_000))
@settings(max_examples=30, deadline=None)
def test_the_table_behaves_like_a_set(keys: list[int]) -> None:
    table, reference = SessionTable(), set()
    for key in keys:
        assert add(table, key) == (key not in reference)
        reference.add(key)
    assert len(table) == len(reference)


def test_the_table_stays_exact_as_it_grows() -> None:
    rng = random.Random(5)
    keys = [rng.getrandbits(48) for _ in range(50_000)] * 2
    table = SessionTable()
    assert len(set(keys)) > 49_000
    assert sum(table.add_all(keys[:50_000])) + sum(table.add_all(keys[50_000:])) == len(set(keys))
    assert not any(table.add_all(keys))
    assert len(table) == len(set(keys))


def crafted_keys(n: int) -> list[int]:
    """MACs that all fell in one shard and one first slot of the unsalted table: ``h << 24 | h``, ``h = m << 6``."""
    return [m << 30 | m << 6 for m in range(n)]


def seconds_to_add(keys: list[int], budget: float = math.inf) -> float:
    """Best of five fills of a fresh table, a page at a time; a fill is abandoned past ``budget`` seconds
    (inf if all are)."""
    best = math.inf
    for _ in range(5):
        table = SessionTable()
        start = time.perf_counter()
        for chunk in range(0, len(keys), 1000):
            table.add_all(keys[chunk:chunk + 1000])
            if time.perf_counter() - start > budget:
                break
        else:
            best = min(best, time.perf_counter() - start)
    return best


def test_the_table_takes_crafted_keys_as_fast_as_ordinary_ones() -> None:
    """A server cannot choose MACs that pile up in one place: where a key goes is salted per table."""
    rng = random.Random(7)
    ordinary = seconds_to_add([rng.getrandbits(48) for _ in range(20_000)])
    crafted = seconds_to_add(crafted_keys(20_000), budget=5 * ordinary)
    assert crafted < 5 * ordinary, f"20,000 crafted keys took over 5x the {ordinary:.3f} s of ordinary ones"


def test_the_table_holds_crafted_and_extreme_keys_exactly() -> None:
    keys = [*crafted_keys(5000), 1, (1 << 48) - 1, 1 << 59, (1 << 59) | 1, (1 << 60) - 1, 1 << 47]
    assert keys.count(0) == 1
    table = SessionTable()
    assert all(table.add_all(keys))
    assert not any(table.add_all(keys)), "every duplicate is found"
    assert len(table) == len(keys)
    assert not add(table, 0)
    assert add(table, 2) and len(table) == len(keys) + 1


def poll(table: SessionTable, pairs: dict[int, float | None], completed: bool = True) -> int:
    """One poll of ``pairs`` (key: login) through ``table``, in pages; how many logins it counted."""
    items = list(pairs.items())
    for start in range(0, len(items), 700):
        page = items[start:start + 700]
        assert all(table.see([key for key, _ in page], [login for _, login in page])), "each session once"
    logins = table.logins
    table.end(completed)
    return logins


def test_logins_are_the_pairs_the_last_completed_poll_did_not_hold() -> None:
    table = SessionTable()
    assert not table.compared
    poll(table, {1: 100.0, 2: 100.0, 3: None})
    assert table.compared, "logins are compared from the second poll on"
    assert poll(table, {1: 100.0, 2: 160.0, 3: None, 4: 100.0, 5: None}) == 2, "a new login, and a new session"
    assert poll(table, {1: 100.0, 2: 160.0, 4: 100.0}) == 0
    assert poll(table, {1: 100.0, 2: 160.0, 3: 200.0, 4: 100.0}) == 1, "a session that left, back with a login"
    assert poll(table, {2: 160.0, 3: 200.0}) == 0
    assert poll(table, {1: 100.0, 2: 160.0, 3: 200.0}) == 1, "an old pair not in the last completed poll"


def test_an_unreadable_login_is_never_counted_and_is_no_pair() -> None:
    """A session whose login cannot be read this time counts nothing, and holds no pair for the next poll."""
    table = SessionTable()
    poll(table, {1: 100.0, 2: None})
    assert poll(table, {1: None, 2: None}) == 0
    assert poll(table, {1: 100.0, 2: None}) == 1, "(1, 100) was not in the last completed poll"
    assert poll(table, {1: 100.0, 2: 100.0}) == 1


def test_logins_read_by_a_failed_poll_count_in_the_next_completed_one() -> None:
    """A failed poll counts nothing; what it read stays new until a poll completes, and its sessions stay
    de-duplicated as any. The last completed poll's sessions it did not reach stay too."""
    table = SessionTable()
    poll(table, {1: 100.0, 2: 100.0, 3: 100.0})
    poll(table, {1: 160.0, 4: 100.0}, completed=False)
    poll(table, {1: 160.0, 4: 100.0, 5: 100.0}, completed=False)
    assert poll(table, {1: 160.0, 2: 100.0, 3: 100.0, 4: 100.0, 5: None}) == 2
    assert poll(table, {1: 160.0, 2: 100.0, 3: 100.0, 4: 100.0}) == 0
    poll(table, {6: 100.0}, completed=False)
    assert len(table) == 4, "what only a failed poll read is not kept as a session"
    assert poll(table, {1: 160.0}) == 0, "a session only a failed poll saw has not been in a completed one"
    assert len(table) == 1, "nor is it kept as one"
    assert poll(table, {1: 160.0, 6: 100.0}) == 1


@given(st.lists(st.tuples(st.dictionaries(st.integers(0, 60), st.sampled_from([None, 1000.0, 1060.0, 1120.0]),
                                          max_size=50), st.booleans()), max_size=12))
@settings(max_examples=200, deadline=None)
def test_logins_match_a_set_of_pairs_over_polls_that_fail(polls: list[tuple[dict[int, float | None], bool]]) -> None:
    """Against the plain model: the pairs a completed poll reads, less those of the last completed poll; a
    login that cannot be read is no pair. Logins come and go, back and forth; failed polls fall between;
    keys are MACs and keys of text."""
    table = SessionTable()
    last: set[tuple[int, float]] | None = None
    for logins, completed in polls:
        pairs = {(n if n % 2 else (1 << 59) + n * 977): login for n, login in logins.items()}
        counted = poll(table, pairs, completed)
        if completed:
            read = {(key, login) for key, login in pairs.items() if login is not None}
            if last is not None:
                assert counted == len(read - last)
            last = read
            assert len(table) == len(pairs), "the sessions of the last completed poll, and no others"


def test_changed_logins_survive_the_table_growing_in_the_same_poll() -> None:
    """A poll that reads new logins of known sessions, then so many new sessions that every shard grows, keeps
    those logins for the next poll; a session twice in a poll, with two logins, counts once, by the first."""
    rng = random.Random(11)
    table = SessionTable()
    known = {rng.getrandbits(48): 100.0 for _ in range(2_000)}
    poll(table, known)
    changed = dict.fromkeys(known, 160.0)
    newcomers = {rng.getrandbits(48): 100.0 for _ in range(20_000)}
    assert poll(table, {**changed, **newcomers}) == len(changed) + len(newcomers)
    assert poll(table, {**changed, **newcomers}) == 0
    first = next(iter(known))
    assert table.see([first, first], [220.0, 280.0]) == [True, False]
    assert table.logins == 1
    table.end(completed=True)
    assert poll(table, {first: 220.0}) == 0


def test_logins_are_exact_over_many_pairs_and_pages() -> None:
    """Thousands of sessions over every shard, a few pages a poll: the new logins are exactly those a set finds."""
    rng = random.Random(7)
    table = SessionTable()
    previous: set[tuple[int, float]] = set()
    sessions = [rng.getrandbits(48) for _ in range(20_000)]
    for number in range(3):
        pairs = {key: float(T - rng.randrange(3) * 60) for key in rng.sample(sessions, 15_000)}
        counted = poll(table, pairs)
        if number:
            assert counted == len(set(pairs.items()) - previous) > 0
        previous = set(pairs.items())
