"""Ids of log rows: UUIDv7 (RFC 9562), so that rows arrive in key order. No Django here."""

import hashlib
import os
import random
import time
import uuid

_RAND_B = (1 << 62) - 1


def _uuid7_int(ms: int, rand: int) -> int:
    """A UUIDv7 as an int: the millisecond, the version, 12 bits of rand_a, the variant, 62 bits of rand_b."""
    return (ms << 80) | (0x7 << 76) | (((rand >> 68) & 0xFFF) << 64) | (0b10 << 62) | (rand & _RAND_B)


def uuid7(at: float | None = None) -> uuid.UUID:
    """A new UUIDv7: the millisecond it was made (or `at`, epoch seconds), then 74 random bits.

    Time-ordered keys land at the end of the primary-key and foreign-key indexes instead of on
    a random page of each (see docs/benchmark.md), and the gap grows with the table.
    """
    ms = time.time_ns() // 1_000_000 if at is None else int(at * 1000)
    return uuid.UUID(int=_uuid7_int(ms, int.from_bytes(os.urandom(10), "big")))


def exchange_id_new() -> str:
    """A new exchange id as 32 hex digits (the form X-Gateway-Request-Id shows): uuid7().hex without the UUID object."""
    # random's generator, not os.urandom: an id must be unique, not unguessable (it grants nothing),
    # and the system call showed in a request's profile.
    return "%032x" % _uuid7_int(time.time_ns() // 1_000_000, random.getrandbits(80))


def derive(owner: "str | uuid.UUID", label: str) -> uuid.UUID:
    """A UUIDv7 fixed by its owner's id and a label: a file cut out of an exchange gets the same id
    on every replay of the journal (so it is stored once), and sorts with its owner."""
    owner_int = uuid.UUID(str(owner)).int
    digest = hashlib.sha256(owner_int.to_bytes(16, "big") + label.encode("utf-8", "surrogatepass")).digest()
    return uuid.UUID(int=_uuid7_int(owner_int >> 80, int.from_bytes(digest[:10], "big")))
