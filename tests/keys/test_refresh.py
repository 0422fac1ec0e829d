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
