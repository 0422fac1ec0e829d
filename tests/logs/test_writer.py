"""The log writer under store faults: database unavailable, journal unwritable, shutdown while down."""

import time
import uuid

import pytest
from django.db import OperationalError

import logs.services
from logs.models import Request, Response
from logs.writer import LogWriter, log_pending_count, writer_get, writer_stop

pytestmark = pytest.mark.django_db(transaction=True)


def _pair(n: int) -> list[dict]:
    """A request record and its response record."""
    rid = uuid.uuid4().hex
    now = time.time() + n / 1000
    return [{"t": "req", "id": rid, "provider": "openai", "endpoint": f"/v1/n{n}", "method": "POST",
             "headers": [], "body": "{}", "created": now, "instance": "test"},
            {"t": "resp", "id": uuid.uuid4().hex, "request_id": rid, "status": 200, "headers": [],
             "body": "{}", "outcome": "completed", "created": now}]


def test_database_unavailable_then_back_writes_all_in_order_once(monkeypatch):
    real = logs.services.exchange_records_write
    state = {"down": True, "batches": []}

    def flaky(records):
        if state["down"]:
            raise OperationalError("database is locked")
        state["batches"].append([r["id"] for r in records])
        return real(records)

    monkeypatch.setattr(logs.services, "exchange_records_write", flaky)
    writer = writer_get()
    records = [rec for n in range(5) for rec in _pair(n)]
    for rec in records:
        writer.submit(rec)
    time.sleep(0.3)
    assert Request.objects.count() == 0
    assert writer.pending == 10 and log_pending_count() == 10  # counted from the journal files too
    state["down"] = False
    assert writer.flush(10)
    written = [i for batch in state["batches"] for i in batch]
    assert written == [r["id"] for r in records]  # in order, each once
    assert Request.objects.count() == 5 and Response.objects.count() == 5
    assert log_pending_count() == 0


def test_journal_write_failure_does_not_lose_the_record(monkeypatch):
    writer = writer_get()

    def disk_full(record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.journal, "append", disk_full)
    for rec in _pair(0):
        writer.submit(rec)  # must not raise into the exchange
    assert writer.flush(10)
    assert Response.objects.count() == 1 and writer.journal_errors == 2
    assert writer.journal.pending == 0


def test_shutdown_while_database_down_keeps_records_for_next_start(monkeypatch, settings):
    real = logs.services.exchange_records_write

    def down(records):
        raise OperationalError("database is locked")

    monkeypatch.setattr(logs.services, "exchange_records_write", down)
    writer = writer_get()
    records = _pair(0) + _pair(1)
    for rec in records:
        writer.submit(rec)
    journal = writer.journal.path
    assert writer_stop(timeout=0.5) is False  # gave up on the database...
    assert len(journal.read_text().splitlines()) == 4  # ...but the journal keeps every record

    monkeypatch.setattr(logs.services, "exchange_records_write", real)
    nxt = LogWriter()  # the next start replays the dead journal
    try:
        deadline = time.monotonic() + 10
        while Response.objects.count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Request.objects.count() == 2 and Response.objects.count() == 2
        assert not journal.exists()
    finally:
        nxt.stop(5)


def test_record_rejected_by_the_database_does_not_block_the_others():
    writer = writer_get()
    orphan = _pair(0)[1] | {"request_id": uuid.uuid4().hex}  # a response whose request never existed
    for rec in [*_pair(1), orphan, *_pair(2)]:
        writer.submit(rec)
    assert writer.flush(10)
    assert Request.objects.count() == 2 and Response.objects.count() == 2
