"""De-duplication within a poll: a compact key per session, and a table of the keys seen."""

from __future__ import annotations

import secrets
from array import array
from collections.abc import Mapping
from typing import Any

MAC_KEYS = ("macAddress", "mac", "clientMac")  # the documented spelling first

_MAC_SEPARATORS = str.maketrans("", "", ":-. ")
_HASH_BIT = 1 << 63
_HASH_MASK = _HASH_BIT - 1
# SeenKeys holds 64-bit keys, mixed, in 2**_SHARD_BITS shards chosen by the mixed key's top bits;
# the slot in a shard comes from the _SLOT_BITS below them.
_KEY_MASK = (1 << 64) - 1
_SHARD_BITS = 6
_SLOT_BITS = 64 - _SHARD_BITS


def session_key(record: Mapping[str, Any]) -> int | None:
    """A compact key for de-duplication: the MAC as an integer, else a hash of its text."""
    mac = record.get("macAddress")
    if mac.__class__ is str and len(mac) == 17:  # the usual aa:bb:cc:dd:ee:ff, without the slow path
        digits = mac.replace(":", "")
        if len(digits) == 12 and digits.isalnum():
            try:
                return int(digits, 16)
            except ValueError:
                pass
    for name in MAC_KEYS:
        mac = record.get(name)
        if isinstance(mac, str) and (text := mac.strip().lower()):
            digits = text.translate(_MAC_SEPARATORS)
            if 0 < len(digits) <= 12 and digits.isalnum():
                try:
                    return int(digits, 16)
                except ValueError:
                    pass
            return hash(text) & _HASH_MASK | _HASH_BIT  # above 48 bits: never equal to a parsed MAC
    return None


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
        self._zero = False  # 0 marks an empty slot, so the key 0 is kept aside
        self._multiplier = secrets.randbits(64) | 1

    def __len__(self) -> int:
        return sum(self._used) + self._zero

    def add(self, key: int) -> bool:
        """Add ``key``; True if it was not there yet."""
        mixed = key * self._multiplier & _KEY_MASK
        if not mixed:
            new, self._zero = not self._zero, True
            return new
        shard = mixed >> _SLOT_BITS
        slots = self._shards[shard]
        mask = len(slots) - 1
        i = mixed >> (_SLOT_BITS - mask.bit_length()) & mask
        held = slots[i]
        while held:  # linear probing; the slot is the top bits below the shard's (a product's low bits
            if held == mixed:  # depend only on the key's low bits)
                return False
            i = (i + 1) & mask
            held = slots[i]
        slots[i] = mixed
        used = self._used[shard] = self._used[shard] + 1
        if 4 * used > 3 * (mask + 1):
            self._shards[shard] = _grown(slots)
        return True


def _grown(slots: array[int]) -> array[int]:
    """The shard's keys in a table twice its size."""
    bigger = array("Q", [0]) * (2 * len(slots))
    mask = len(bigger) - 1
    shift = _SLOT_BITS - mask.bit_length()
    for mixed in slots:
        if mixed:
            i = mixed >> shift & mask
            while bigger[i]:
                i = (i + 1) & mask
            bigger[i] = mixed
    return bigger
