"""The log writer under store faults: database unavailable, journal unwritable, shutdown while down.

The writer journals each line and pipes it to its ingest process; here that process's loop runs
in a thread of the test process (tests/conftest.py IngestThread), behind the same pipes.
"""

import threading
import time

import pytest
from django.test import Client
from django.db import OperationalError

import logs.pipeline.pipe
import logs.pipeline.recovery
import logs.pipeline.rows
from logs.ids import exchange_id_new
from logs.models import Request, Response
from logs.pipeline.writer import WRITES_REFUSED, LogWriter, log_pending_count, writer_get, writer_stop
from logs.records import RequestRecord, ResponseRecord, record_line
from tests.conftest import IngestThread
from tests.e2e.faults import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _pair(n: int) -> list[RequestRecord | ResponseRecord]:
    """A request record and its response record."""
    rid = exchange_id_new()
    now = time.time() + n / 1000
    return [RequestRecord(id=rid, provider="openai", endpoint=f"/v1/n{n}", method="POST", body="{}", created=now,
                          instance="test"),
            ResponseRecord(id=exchange_id_new(), request_id=rid, provider="openai", status=200, body="{}",
                           created=now)]


def _submit(writer: LogWriter, records: list[RequestRecord | ResponseRecord]) -> None:
    for rec in records:
        writer.submit(record_line(rec), rec.kind)


REAL_WRITE = logs.pipeline.rows.records_write


def _records_write_set(monkeypatch, write) -> None:
    """Replace the database write of the ingest loop and of the journal replay (which imports it)."""
    monkeypatch.setattr(logs.pipeline.rows, "records_write", write)
    monkeypatch.setattr(logs.pipeline.recovery, "records_write", write)


def test_database_unavailable_then_back_writes_all_in_order_once(monkeypatch):
    state = {"down": True, "batches": []}

    def flaky(records):
        if state["down"]:
            raise OperationalError("database is locked")
        state["batches"].append([r.id for r in records])
        return REAL_WRITE(records)

    _records_write_set(monkeypatch, flaky)
    writer = writer_get()
    records = [rec for n in range(5) for rec in _pair(n)]
    _submit(writer, records)
    # The ingest process reports the refusal while it retries; the admin shows it.
    assert wait_until(lambda: "database is locked" in writer.last_error, 10)
    assert Request.objects.count() == 0
    assert writer.pending == 10 and log_pending_count() == 10  # counted from the journal files too
    health = Client().get("/health")  # still 200 (the gateway answers), saying why records wait
    state["down"] = False  # first: a failed assertion must not leave the ingest retrying for ever
    assert health.status_code == 200 and health.json()["log_write_error"] == WRITES_REFUSED
    assert writer.flush(10)
    assert "log_write_error" not in Client().get("/health").json()
    written = [i for batch in state["batches"] for i in batch]
    assert written == [r.id for r in records]  # in order, each once
    assert Request.objects.count() == 5 and Response.objects.count() == 5
    assert log_pending_count() == 0


def test_a_database_error_is_reported_only_while_records_wait(monkeypatch):
    """A worker with nothing left to write (a dead worker's journal replayed since) reports no stale error."""
    writer = writer_get()
    monkeypatch.setattr(writer, "last_error", 'connection failed: connection to server at "db-7.internal" (10.20.30.40), '
                                              'port 5432 failed: FATAL:  password authentication failed for user "gw_owner"')
    assert log_pending_count() == 0 and "log_write_error" not in Client().get("/health").json()
    monkeypatch.setattr(writer, "_unwritten", 3)  # records waiting: the refusal is the news
    # ...told without the driver's words (/health needs no credential): they name the host, the user, the database.
    answer = Client().get("/health")
    assert answer.json()["log_write_error"] == WRITES_REFUSED
    assert not [leak for leak in ("db-7.internal", "10.20.30.40", "gw_owner") if leak in answer.content.decode()]


def test_a_journal_that_cannot_be_written_is_told_without_its_path(monkeypatch):
    writer = writer_get()

    def denied(line):
        raise PermissionError(13, "Permission denied", "/srv/gateway-7/data/journal/worker-1.jsonl")

    monkeypatch.setattr(writer.journal, "append", denied)
    monkeypatch.setattr(writer, "journal_error", "")  # as it was again after the test: later tests share the writer
    _submit(writer, _pair(0))
    assert writer.flush(10)
    answer = Client().get("/health")
    assert answer.json()["log_write_error"] == "journal write failed: [Errno 13] Permission denied"
    assert "/srv/gateway-7" not in answer.content.decode()


def test_journal_write_failure_does_not_lose_the_record(monkeypatch, caplog):
    writer = writer_get()

    def disk_full(line):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.journal, "append", disk_full)
    monkeypatch.setattr(writer, "journal_error", "")  # as it was again after the test: later tests share the writer
    with caplog.at_level("WARNING", logger="logs.pipeline.writer"):
        _submit(writer, [rec for n in range(20) for rec in _pair(n)])  # must not raise into the exchange
    assert writer.flush(10)
    assert Response.objects.count() == 20 and writer.journal_errors == 40
    assert writer.journal.pending == 0
    # Written to the database, still not journaled: /health keeps saying so while the disk is full.
    assert Client().get("/health").json()["log_write_error"] == "journal write failed: [Errno 28] No space left on device"
    # One warning, not one per record (a full disk printed thousands a minute).
    assert [r.getMessage() for r in caplog.records if "journal write failed" in r.getMessage()] == [
        "log journal write failed, record kept in memory only: [Errno 28] No space left on device"]


class _Killed(BaseException):
    """Ends the in-thread ingest loop where SIGKILL would end the real process."""


class _KillableIngest(IngestThread):
    """IngestThread whose kill() also stops a write the database keeps refusing (a thread cannot be killed)."""

    killed = threading.Event()

    def kill(self) -> None:
        self.killed.set()
        super().kill()

    def _run(self, fd_in, out) -> None:
        try:
            super()._run(fd_in, out)
        except _Killed:
            self.returncode = -9


def test_shutdown_while_database_down_keeps_records_for_next_start(monkeypatch):
    _KillableIngest.killed.clear()

    def down(records):
        if _KillableIngest.killed.is_set():
            raise _Killed
        raise OperationalError("database is locked")

    monkeypatch.setattr(logs.pipeline.pipe, "ingest_spawn", _KillableIngest)
    _records_write_set(monkeypatch, down)
    writer = writer_get()
    _submit(writer, _pair(0) + _pair(1))
    journal = writer.journal.path
    assert writer_stop(timeout=0.5) is False  # gave up on the database...
    assert _KillableIngest.killed.is_set()  # ...stopped its ingest process...
    assert len(journal.read_text().splitlines()) == 4  # ...but the journal keeps every record

    _records_write_set(monkeypatch, REAL_WRITE)
    nxt = LogWriter()  # the next start replays the dead journal
    try:
        # Waiting on the journals, not the tables: polling the shared-cache in-memory test
        # database while the ingest thread writes gets "database table is locked".
        assert wait_until(lambda: log_pending_count() == 0, 10), "the dead journal was not replayed"
        assert not journal.exists()
        assert Request.objects.count() == 2 and Response.objects.count() == 2
    finally:
        nxt.stop(5)


def test_record_rejected_by_the_database_does_not_block_the_others():
    writer = writer_get()
    orphan = _pair(0)[1]
    orphan.request_id = exchange_id_new()  # a response whose request never existed
    _submit(writer, [*_pair(1), orphan, *_pair(2)])
    assert writer.flush(10)
    assert Request.objects.count() == 2 and Response.objects.count() == 2
