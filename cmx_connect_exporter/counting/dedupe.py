"""De-duplication within a poll: a compact key per session, and a table of the keys seen."""

from __future__ import annotations

import secrets
from array import array
from binascii import unhexlify
from collections.abc import Iterable
from struct import unpack
from typing import Any

from cmx_connect_exporter.cmx.wire import field

MAC_KEYS = ("macAddress", "mac", "clientMac")  # the documented spelling first
_MAC_FIELDS = tuple(map(field, MAC_KEYS))
_MAC = _MAC_FIELDS[0]

_MAC_SEPARATORS = str.maketrans("", "", ":-. ")
_PADDED_COLONS = (6, 9, 12, 15, 18)  # in "0000aa:bb:cc:dd:ee:ff"
_HASH_BIT = 1 << 63
_HASH_MASK = _HASH_BIT - 1
# SeenKeys holds 64-bit keys, mixed, in 2**_SHARD_BITS shards chosen by the mixed key's top bits;
# the slot in a shard comes from the _SLOT_BITS below them.
_KEY_MASK = (1 << 64) - 1
_SHARD_BITS = 6
_SLOT_BITS = 64 - _SHARD_BITS


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


class SeenKeys:
    """A set of 64-bit session keys in flat arrays (open addressing, linear probing).

    About 16 bytes a session where a ``set`` of ints costs about 70. The keys are
    spread over 64 shards that grow one at a time, so growing never holds two copies
    of the whole table: at a million sessions it holds about 18 MiB, and never two copies.

    Keys come from the server, so where one goes must not be known in advance: with a
    fixed spread, crafted MACs could all probe from one slot, in quadratic time. Each key
    is multiplied by a random odd number, drawn per table, mod 2**64; its shard and slot are
    the top bits of the product, which depend on every bit of the key. Multiplying by an odd
    number is a bijection, so the product is stored in place of the key.
    """

    _MIN_SLOTS = 1 << 6  # per shard

    def __init__(self, expected: int = 0) -> None:
        shards = 1 << _SHARD_BITS
        slots = self._MIN_SLOTS
        while slots * shards < 2 * expected:
            slots *= 2
        self._shards = [array("Q", [0]) * slots for _ in range(shards)]
        self._used = [0] * shards
        self._shifts = [_shift(slots) for slots in self._shards]
        self._zero = False  # 0 marks an empty slot, so the key 0 is kept aside
        self._multiplier = secrets.randbits(64) | 1

    def __len__(self) -> int:
        return sum(self._used) + self._zero

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was not there yet."""
        return self.add_all((key,))[0]

    def add_all(self, keys: Iterable[int | None]) -> list[bool]:
        """Add each key; for each, True if it was not there yet. None, no key, is always new.

        One loop for a page's keys, with everything it reads in local names.
        """
        multiplier, shards, used, shifts = self._multiplier, self._shards, self._used, self._shifts
        new: list[bool] = []
        append = new.append
        for key in keys:
            if not key:  # None, no key, is always new; 0 is kept aside, as 0 marks an empty slot
                append(True if key is None else self._add_zero())
                continue
            mixed = key * multiplier & _KEY_MASK
            shard = mixed >> _SLOT_BITS
            slots = shards[shard]
            mask = len(slots) - 1
            i = mixed >> shifts[shard] & mask
            held = slots[i]
            while held and held != mixed:  # linear probing; the slot is the top bits below the shard's
                i = (i + 1) & mask  # (a product's low bits depend only on the key's low bits)
                held = slots[i]
            if held:
                append(False)
                continue
            slots[i] = mixed
            append(True)
            count = used[shard] = used[shard] + 1
            if 4 * count > 3 * (mask + 1):
                shards[shard] = bigger = _grown(slots)
                shifts[shard] = _shift(bigger)
        return new

    def _add_zero(self) -> bool:
        new, self._zero = not self._zero, True
        return new


def _shift(slots: array[int]) -> int:
    """How far a mixed key is shifted for its slot's bits in ``slots``: those just below the shard's."""
    return _SLOT_BITS - (len(slots) - 1).bit_length()


def _grown(slots: array[int]) -> array[int]:
    """The shard's keys in a table twice its size."""
    bigger = array("Q", [0]) * (2 * len(slots))
    mask = len(bigger) - 1
    shift = _shift(bigger)
    for mixed in slots:
        if mixed:
            i = mixed >> shift & mask
            while bigger[i]:
                i = (i + 1) & mask
            bigger[i] = mixed
    return bigger
