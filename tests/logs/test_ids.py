"""Row ids: valid UUIDv7, unique, in the order they were made; file ids derived from their owner."""

import time
import uuid

from logs.ids import derive, exchange_id_new, uuid7


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


def test_derived_ids_are_fixed_by_owner_and_label_and_sort_with_their_owner():
    owner = exchange_id_new()
    first = derive(owner, "part0")
    assert derive(uuid.UUID(owner), "part0") == first  # the same file on every replay of the journal
    assert len({first, derive(owner, "part1"), derive(owner, "body"), derive(exchange_id_new(), "part0")}) == 4
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert first.int >> 80 == uuid.UUID(owner).int >> 80  # the owner's millisecond


def test_uuid7_at_a_given_time():
    at = 1_700_000_000.123
    made = uuid7(at)
    assert made.version == 7 and made.int >> 80 == int(at * 1000) and made != uuid7(at)
