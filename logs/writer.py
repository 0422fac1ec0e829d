"""The log writer: journal first, then batched database writes off the event loop (and off the process)."""

import logging
import os
import queue
import threading
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import connection

from logs.ingest import BATCH_MAX, batch_write, journals_recover, write_retry
from logs.journal import Journal, journal_orphans_exist, journal_pending_total, record_line

log = logging.getLogger(__name__)

# After the first record of a batch, wait this long for more: every transaction has a fixed
# cost (the commit, one statement per table) that the event loop pays too, in GIL time.
# Durability does not wait for it: the journal already holds every record. flush() cuts it short.
BATCH_LINGER = 0.05


class LogWriter:
    """Owns this process's journal and moves its records into the database.

    LOG_WRITER=process (default): a thread pipes the journal lines to a separate ingest process
    (logs/ingest.py), which writes them; the proxy's process then does no SQL at all.
    LOG_WRITER=thread: a thread of this process writes them.
    """

    def __init__(self) -> None:
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.journal = Journal(settings.JOURNAL_DIR, self.instance, fsync=settings.JOURNAL_FSYNC)
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], bytes | None, bool] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._hurry = threading.Event()  # set by flush/stop: write what is queued now
        self._stopping = False
        self._abandon = False  # shutdown gave up on the database: the journal keeps the rest
        self._count_lock = threading.Lock()
        self._unwritten = 0  # records submitted and not yet in the database
        self.journal_errors = 0
        self.open_exchanges = 0  # requests logged whose response record has not come yet
        self.last_error = ""
        self.pipe = None
        if settings.LOG_WRITER == "process":
            from logs.ingest_pipe import IngestPipe

            # At once only if a dead process left records to replay; otherwise with the first record.
            self.pipe = IngestPipe(self._batch_done, self._error_note,
                                   start=journal_orphans_exist(settings.JOURNAL_DIR))
            body = self._run_pipe
        else:
            body = self._run_thread
        self._thread = threading.Thread(target=body, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any], line: bytes | None = None) -> None:
        """Make a record durable (journal) and queue it for the database; never raises.

        line: the record already serialised by record_line, if the caller has it.
        """
        try:
            line = self.journal.append(record, line)
            journaled = True
        except (OSError, TypeError, ValueError) as exc:
            # A full disk must not fail the exchange: the record still goes to the database,
            # it just is not crash-proof meanwhile.
            journaled = False
            self.journal_errors += 1
            self.last_error = f"journal write failed: {exc}"
            log.warning("log journal write failed, record kept in memory only: %s", exc)
        if self.pipe is not None and line is None:
            try:
                line = record_line(record)
            except (TypeError, ValueError):
                log.exception("log record %s cannot be serialised; dropped", record.get("id"))
                return
        with self._count_lock:
            self._unwritten += 1
        kind = record.get("t")
        if kind == "req":
            self.open_exchanges += 1
        elif kind == "resp":
            self.open_exchanges -= 1
        self._queue.put((record, line, journaled))

    @property
    def pending(self) -> int:
        """Records of this process not yet in the database."""
        return self._unwritten

    def flush(self, timeout: float = 10.0, *, exchanges: bool = True) -> bool:
        """Wait until open exchanges have ended and their records are in the database."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unwritten or (exchanges and self.open_exchanges > 0):
                self._hurry.set()
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Let open exchanges end, drain the queue, stop the writer and release the journal."""
        self.flush(timeout)
        drained = self.flush(min(5.0, max(timeout, 0.5)), exchanges=False)
        if not drained:
            self._abandon = True
            log.warning("log store still unavailable at shutdown; %d record(s) stay in %s for the next start",
                        self._unwritten, self.journal.path)
        self._stopping = True
        self._queue.put(None)
        self._hurry.set()
        self._thread.join(timeout=2.0)
        if self.pipe is not None:
            self.pipe.close(abandon=not drained)
        self.journal.close(remove=drained)
        return drained

    def _batch_done(self, journaled: list[bool]) -> None:
        """Records are in the database: release them from the journal and the counters."""
        try:
            self.journal.commit(sum(journaled))
        except OSError as exc:  # journal released by a shutdown that gave up: replay covers it
            log.warning("log journal commit failed: %s", exc)
        self.last_error = ""
        with self._count_lock:
            self._unwritten -= len(journaled)
        with self._idle:
            self._idle.notify_all()

    def _error_note(self, message: str) -> None:
        """The database refused a write (it is retried): shown by the admin until one succeeds."""
        self.last_error = message

    def _batch_take(self, idle: float | None = None) -> list[tuple[dict[str, Any], bytes | None, bool]] | None:
        """Wait for a record, linger for more, return them (None once told to stop, [] after idle seconds)."""
        try:
            first = self._queue.get(timeout=idle)
        except queue.Empty:
            return []
        if first is None:
            return None
        batch = [first]
        if self._queue.qsize() < BATCH_MAX and not self._hurry.is_set():
            self._hurry.wait(BATCH_LINGER)  # not get(timeout): no wake-up per record
        self._hurry.clear()
        while len(batch) < BATCH_MAX:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            batch.append(item)
        return batch

    def _run_pipe(self) -> None:
        """Thread body (process mode): hand batches of journal lines to the ingest process."""
        while not self._stopping and (batch := self._batch_take(settings.LOG_INGEST_IDLE_SECONDS)) is not None:
            if batch:
                self.pipe.send([(line, journaled) for _, line, journaled in batch])
            else:
                self.pipe.retire_if_idle()

    def _run_thread(self) -> None:
        """Thread body (thread mode): recover orphaned journals, then write batches forever."""
        from logs.services import exchange_records_write

        journals_recover(self._error_note, lambda: self._abandon)
        while not self._stopping and (batch := self._batch_take()) is not None:
            records = [rec for rec, _, _ in batch]
            if not write_retry(lambda: batch_write(exchange_records_write, records), self._error_note,
                               lambda: self._abandon):
                break  # abandoned at shutdown: the journal file keeps these for the next start
            self._batch_done([journaled for _, _, journaled in batch])
        connection.close()


_writer: LogWriter | None = None
_writer_lock = threading.Lock()


def writer_get() -> LogWriter:
    """The process's log writer, started on first use."""
    global _writer
    if _writer is None:
        with _writer_lock:
            if _writer is None:
                _writer = LogWriter()
    return _writer


def log_pending_count() -> int:
    """Log records waiting for the database, summed over every gateway process's journal.

    The number `/health` reports as `pending_log_records` (and the admin shows): records of
    live workers not yet written, plus those of dead processes not yet replayed.
    """
    own = _writer.pending if _writer is not None else 0
    return max(own, journal_pending_total(settings.JOURNAL_DIR))


def writer_stop(timeout: float = 10.0) -> bool:
    """Flush and stop the process's writer, if it was started."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    return writer.stop(timeout) if writer else True
