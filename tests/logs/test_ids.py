"""Exchange ids: valid UUIDv7, unique, and in the order they were made."""

import time
import uuid

from logs.ids import exchange_id_new


def test_exchange_ids_are_uuid7_hex_carrying_the_time_they_were_made():
    before = time.time_ns() // 1_000_000
    rid = exchange_id_new()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(rid)
    assert len(rid) == 32 and parsed.hex == rid
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= parsed.int >> 80 <= after


def test_exchange_ids_are_unique_and_sort_by_creation_time():
    first = [exchange_id_new() for _ in range(5000)]
    time.sleep(0.002)
    later = [exchange_id_new() for _ in range(5000)]
    assert len(set(first + later)) == 10000
    assert max(first) < min(later)  # a later millisecond always sorts after
    assert len({rid[12:] for rid in first}) == 5000  # the 74 bits after the time are random
