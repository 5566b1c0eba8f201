"""De-duplication within a poll, and logins across polls: a compact key per session, and a table of them."""

from __future__ import annotations

import secrets
import sys
from array import array
from binascii import unhexlify
from collections.abc import Iterable
from itertools import compress, repeat
from operator import add, mod
from struct import unpack
from typing import Any

from cmx_connect_exporter.cmx.wire import field

MAC_KEYS = ("macAddress", "mac", "clientMac")  # the documented spelling first
_MAC_FIELDS = tuple(map(field, MAC_KEYS))
_MAC = _MAC_FIELDS[0]

_MAC_SEPARATORS = str.maketrans("", "", ":-. ")
_PADDED_COLONS = (6, 9, 12, 15, 18)  # in "0000aa:bb:cc:dd:ee:ff"
_HASH_BIT = 1 << 59  # a key of text is a hash of 59 bits with this bit set: keys stay below 2**60
_HASH_MASK = _HASH_BIT - 1
# SessionTable's words: the key mixed, mod 2**61, shifted above a state of three bits.
_MASK_64 = (1 << 64) - 1
_STATE_BITS = 3
_KEY_BITS = 64 - _STATE_BITS
_STATE = (1 << _STATE_BITS) - 1
_KEY = _MASK_64 ^ _STATE
_LOW_BYTE = 0 if sys.byteorder == "little" else 7  # the byte of a word that holds its state
_EMPTY = 0
_KEPT = 1  # in the last completed poll, with its stamp; not yet seen in this one
_GONE = 2  # not in the last completed poll: left, or seen only by a poll that failed
_SEEN = 4  # the bit of the states seen in this poll:
_KEPT_SEEN = _SEEN | _KEPT  # with the login the last completed poll held
_NEW_SEEN = _SEEN | _GONE  # not in the last completed poll; the stamp is this poll's
_CHANGED_SEEN = _SEEN | 3  # in the last completed poll, with another login: the stamp is still that poll's
_ZERO_KEY = 1 << 48  # the key 0 (MAC 00:00:00:00:00:00) is taken as this one, no MAC's: 0 marks an empty slot
# A word's top bits choose its shard; the 32 bits below them, as a fraction, its first slot in the shard.
_SHARDS = 64
_SHARD_SHIFT = 64 - 6
_SLOT_FRACTION_BITS = 32
_SLOT_SHIFT = _SHARD_SHIFT - _SLOT_FRACTION_BITS
_SLOT_MASK = (1 << _SLOT_FRACTION_BITS) - 1
_MIN_SLOTS = 16  # per shard
_MAX_LOAD = 0.75  # a shard this full is rebuilt, without its GONE: _GROWTH times as large, if none are GONE
_GROWTH = 1.5
_SMALL, _SMALL_GROWTH = 4096, 4  # a shard smaller than this grows faster: less work, while its memory is small
_LOAD = 0.6  # how full a table sized for a number of sessions is
_STAMPS = (1 << 32) - 1  # a login's stamp: its hash mod this, plus 1; whole seconds are exact for 136 years


def session_key(record: Any) -> int | None:
    """A compact key for de-duplication, from a Record: the MAC as an integer, else a hash of its text."""
    mac = _MAC(record)
    if mac.__class__ is str and len(mac) == 17:  # the usual aa:bb:cc:dd:ee:ff, without the slow path
        digits = mac.replace(":", "")
        if len(digits) == 12 and digits.isalnum():
            try:
                return int(digits, 16)
            except ValueError:
                pass
    for read in _MAC_FIELDS:
        mac = read(record)
        if isinstance(mac, str) and (text := mac.strip().lower()):
            digits = text.translate(_MAC_SEPARATORS)
            if 0 < len(digits) <= 12 and digits.isalnum():
                try:
                    return int(digits, 16)
                except ValueError:
                    pass
            return hash(text) & _HASH_MASK | _HASH_BIT  # above 48 bits: never equal to a parsed MAC
    return None


def session_keys(records: list[Any]) -> list[int | None]:
    """Each record's ``session_key``; in C, a page at a time, when every MAC is the usual aa:bb:cc:dd:ee:ff.

    Such a MAC, padded with four zeros and its colons dropped, is the 16 hex digits of an 8-byte
    integer: the page's MACs are joined and read at once. Any other page is read record by record.
    """
    macs = list(map(_MAC, records))
    count = len(macs)
    if count and set(map(type, macs)) == {str} and set(map(len, macs)) == {17}:
        padded = "0000" + "0000".join(macs)  # each MAC then spans 21 characters, colons at the same places
        if all(padded[colon::21] == ":" * count for colon in _PADDED_COLONS) and padded.isascii():
            digits = padded.encode("ascii").translate(None, b":")
            if len(digits) == 16 * count:  # no other colon in any MAC
                try:
                    return list(unpack(f">{count}Q", unhexlify(digits)))
                except ValueError:  # not all hex digits
                    pass
    return list(map(session_key, records))


class SessionTable:
    """The sessions of the poll under way and of the target's last completed poll: each once, with its login.

    It de-duplicates a poll's records, and counts logins: sessions whose (key, lastLoginTime) the last
    completed poll did not hold; a login that cannot be read is no pair. Kept by the worker from one poll
    to the next, so that the two polls share one table: 12 bytes a slot, some 16 to 24 a session, where a
    ``set`` of ints alone costs about 70.

    A slot holds a 64-bit word, the session's key mixed, above its state in three bits, and a 32-bit stamp
    of its login (0: none readable). A session of the last completed poll read with another login keeps
    that poll's stamp until the poll under way completes; the new one waits in a log, so that a poll that
    fails changes no login. Slots are spread over 64 shards (open addressing, linear probing) that grow
    one at a time, so the table is never copied whole. Keys come from the server, so where one goes must
    not be known in advance: with a fixed spread, crafted MACs could all probe from one slot, in quadratic
    time. Each key is multiplied by a random odd number, drawn per table; its shard and slot are the top
    bits of the product, which depend on every bit of the key. The product mod 2**61 is a bijection, so it
    is stored in place of the key.

    When a poll ends, each state moves on at once, for all slots, through a table of bytes (in C). Sessions
    no longer in the last completed poll stay as GONE until their shard next grows, and count again if
    they come back.
    """

    def __init__(self, expected: int = 0) -> None:
        slots = _slots_for(expected / _SHARDS)
        self._words = [_zeros("Q", slots) for _ in range(_SHARDS)]
        self._stamps = [_zeros("I", slots) for _ in range(_SHARDS)]
        self._used = [0] * _SHARDS  # slots taken, GONE ones too
        self._limits = [int(_MAX_LOAD * slots)] * _SHARDS  # past so many taken, a shard is rebuilt
        self._multiplier = (secrets.randbits(_KEY_BITS) | 1) << _STATE_BITS
        # The sessions of the last completed poll that this poll read with another login, and that login's stamp
        self._changed_words, self._changed_stamps = array("Q"), array("I")
        self.compared = False  # whether a poll has completed, so that logins can be compared with its
        self.logins = 0  # the poll under way's sessions with a login the last completed poll did not hold

    def __len__(self) -> int:
        """Sessions of the poll under way and of the last completed poll."""
        return sum(_low_bytes(words).translate(_LIVE).count(1) for words in self._words)

    def add_all(self, keys: list[int | None]) -> list[bool]:
        """``see`` without logins."""
        return self.see(keys, [None] * len(keys))

    def see(self, keys: list[int | None], logins: list[float | None]) -> list[bool]:
        """Take a page's session keys (below 2**60) and login times; for each, True if it is new to this poll.

        None, no key, is always new, and its login is not compared. One loop for a page, with everything it
        reads in local names; the logins' stamps are made before it, in C.
        """
        multiplier, all_words, all_stamps, used, limits = (self._multiplier, self._words, self._stamps, self._used,
                                                           self._limits)
        key_bits, kept = _KEY, _KEPT
        log_word, log_stamp = self._changed_words.append, self._changed_stamps.append
        new: list[bool] = []
        append = new.append
        fresh = 0
        for key, stamp in zip(keys, _stamps_of(logins), strict=True):
            if not key:
                if key is None:
                    append(True)
                    continue
                key = _ZERO_KEY
            mixed = key * multiplier & _MASK_64
            shard = mixed >> _SHARD_SHIFT
            words = all_words[shard]
            size = len(words)
            i = (mixed >> _SLOT_SHIFT & _SLOT_MASK) * size >> _SLOT_FRACTION_BITS
            held = words[i]
            while held and held & key_bits != mixed:
                i += 1
                if i == size:
                    i = 0
                held = words[i]
            if held & _SEEN:  # counted already in this poll
                append(False)
                continue
            append(True)
            if held & _STATE == kept:
                if stamp == all_stamps[shard][i]:
                    words[i] = mixed | _KEPT_SEEN
                else:  # a new login, or none readable now: this poll's stamp waits for the poll to complete
                    fresh += stamp != 0
                    words[i] = mixed | _CHANGED_SEEN
                    log_word(mixed)
                    log_stamp(stamp)
            else:  # new to the table, or GONE: not in the last completed poll
                fresh += stamp != 0
                words[i] = mixed | _NEW_SEEN
                all_stamps[shard][i] = stamp
                if not held:
                    used[shard] += 1
                    if used[shard] > limits[shard]:
                        self._rebuild(shard)
        self.logins += fresh
        return new

    def end(self, completed: bool) -> None:
        """The poll under way has ended. Completed, its sessions and their logins are what the next poll compares
        with, and the others have left. Failed, the last completed poll's stay as they were, and what it alone
        read is GONE: the next poll counts it again."""
        moves = _COMPLETED if completed else _FAILED
        for words in self._words:
            memoryview(words).cast("B")[_LOW_BYTE::8] = _low_bytes(words).translate(moves)
        if completed:
            for mixed, stamp in zip(self._changed_words, self._changed_stamps, strict=True):
                shard = mixed >> _SHARD_SHIFT
                words = self._words[shard]
                size = len(words)
                i = (mixed >> _SLOT_SHIFT & _SLOT_MASK) * size >> _SLOT_FRACTION_BITS
                while (held := words[i]) and held & _KEY != mixed:
                    i = i + 1 if i + 1 < size else 0
                if held:  # always: a session seen in this poll is not dropped before it ends
                    self._stamps[shard][i] = stamp
        self._changed_words, self._changed_stamps = array("Q"), array("I")
        self.compared = self.compared or completed
        self.logins = 0

    def _rebuild(self, shard: int) -> None:
        """The shard's sessions, without the GONE, in arrays _GROWTH times the size they would fill to the brim.

        Read straight from the old arrays, so that no object is made per session: it would stay as holes in
        the heap.
        """
        old_words, old_stamps = self._words[shard], self._stamps[shard]
        live = _low_bytes(old_words).translate(_LIVE)  # 1 for a session not GONE, else 0
        kept = live.count(1)
        growth = _GROWTH if len(old_words) >= _SMALL else _SMALL_GROWTH
        size = max(_MIN_SLOTS, int(growth * kept / _MAX_LOAD) + 1)
        words, stamps = _zeros("Q", size), _zeros("I", size)
        for word, stamp in compress(zip(old_words, old_stamps, strict=True), live):
            i = (word >> _SLOT_SHIFT & _SLOT_MASK) * size >> _SLOT_FRACTION_BITS
            while words[i]:
                i += 1
                if i == size:
                    i = 0
            words[i] = word
            stamps[i] = stamp
        self._words[shard], self._stamps[shard], self._used[shard] = words, stamps, kept
        self._limits[shard] = int(_MAX_LOAD * size)


def _slots_for(sessions: float) -> int:
    return max(_MIN_SLOTS, int(sessions / _LOAD) + 1)


def _stamps_of(logins: list[float | None]) -> Iterable[int]:
    """Each login's stamp, 0 for None; in C when every login is readable."""
    stamps = map(add, map(mod, map(hash, logins), repeat(_STAMPS)), repeat(1))
    return [0 if login is None else stamp for login, stamp in zip(logins, stamps, strict=True)] if None in logins \
        else stamps


def _zeros(typecode: str, size: int) -> array[int]:
    return array(typecode, bytes(size * array(typecode).itemsize))


def _low_bytes(words: array[int]) -> bytes:
    """The byte of each word that holds its state."""
    return bytes(memoryview(words).cast("B")[_LOW_BYTE::8])


def _moves(move: dict[int, int]) -> bytes:
    """A table for ``bytes.translate`` that moves a word's low byte to its next state, its key bits kept."""
    return bytes(low & ~_STATE | move.get(low & _STATE, low & _STATE) for low in range(256))


_COMPLETED = _moves({_KEPT: _GONE, _KEPT_SEEN: _KEPT, _NEW_SEEN: _KEPT, _CHANGED_SEEN: _KEPT})
_FAILED = _moves({_KEPT_SEEN: _KEPT, _NEW_SEEN: _GONE, _CHANGED_SEEN: _KEPT})
_LIVE = bytes(int(low & _STATE not in (_EMPTY, _GONE)) for low in range(256))
