"""The keys app's reads off the event loop (keys/refresh.py)."""

import asyncio

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

from keys.refresh import READERS, in_thread


def _raw_connection() -> bool:
    """A query on this thread's connection (opened if it has none)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return True


@pytest.mark.django_db(transaction=True)
def test_reads_reuse_their_threads_connections():
    """Twenty reads in a row open at most one connection per reader thread (closing it after each read made
    every read open a new one: 2 ms of CPU on SQLite, a new PostgreSQL connection per limited request).

    It can only fail on PostgreSQL (the CI's second pass): Django never closes SQLite's in-memory test
    database, so there the old code reused its connection too."""
    opened = []

    def count(sender, connection, **kwargs) -> None:
        opened.append(connection)

    async def reads() -> list[bool]:
        return [await in_thread(_raw_connection) for _ in range(20)]

    connection_created.connect(count)
    try:
        assert all(asyncio.run(reads()))
    finally:
        connection_created.disconnect(count)
    assert len(opened) <= READERS  # none when earlier tests' reads opened them already


@pytest.mark.django_db(transaction=True)
def test_a_failed_read_closes_its_connection_and_the_next_one_works():
    def failing() -> None:
        _raw_connection()
        raise RuntimeError("the database went away")

    async def run() -> bool:
        with pytest.raises(RuntimeError):
            await in_thread(failing)
        return await in_thread(_raw_connection)

    assert asyncio.run(run())


@pytest.mark.django_db(transaction=True)
def test_a_read_in_progress_in_a_reader_thread_does_not_stop_a_write():
    """A key read in flight on a reader thread while an operator revokes a key: the revocation goes through,
    as it does on the gateway's databases (SQLite in WAL mode, PostgreSQL). Django's in-memory SQLite test
    database failed it at once with "database table is locked" (one cache shared by the process's
    connections) until tests/settings.py set read_uncommitted there: CI saw tests fail that way."""
    import threading

    from django.db import connections

    from keys.models import GatewayKey
    from keys.services import KeyLimits, key_create, key_revoke

    for i in range(3):
        key_create(name=f"k{i}", limits=KeyLimits())
    reading, release = threading.Event(), threading.Event()

    def read() -> None:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT id FROM gateway_keys")
                cur.fetchone()  # the statement still open: its table is being read
                reading.set()
                release.wait(5)
        finally:
            connections.close_all()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert reading.wait(5)
        key_revoke(name="k1")
    finally:
        release.set()
        reader.join()
    assert GatewayKey.objects.get(name="k1").active is False
