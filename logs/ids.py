"""Exchange ids: UUIDv7 (RFC 9562), so that rows arrive in key order."""

import os
import time

_RAND_B = (1 << 62) - 1


def exchange_id_new() -> str:
    """A new UUIDv7 as 32 hex digits: the millisecond it was made, then 74 random bits.

    Time-ordered keys land at the end of the primary-key and foreign-key indexes instead of
    on a random page of each: writing a chat exchange's rows took a third less CPU on SQLite
    than with uuid4 (see the README's "Benchmark"), and the gap grows with the table.
    """
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 12 for rand_a, 62 for rand_b
    value = ((time.time_ns() // 1_000_000) << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & _RAND_B)
    return f"{value:032x}"
