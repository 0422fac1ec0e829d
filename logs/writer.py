"""The background log writer: journal first, then batched database writes off the event loop."""

import logging
import os
import queue
import threading
import time
import uuid
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection

from logs.journal import Journal, journal_counters_prune, journal_orphans, journal_pending_total, journal_records

log = logging.getLogger(__name__)

BATCH_MAX = 500
# After the first record of a batch, wait this long for more: at low request rates one
# transaction per record would cost the event loop more (GIL) than the records themselves.
# Durability does not wait for it: the journal already holds every record.
BATCH_LINGER = 0.02


class LogWriter:
    """Owns this process's journal and a thread that moves its records into the database."""

    def __init__(self) -> None:
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.journal = Journal(settings.JOURNAL_DIR, self.instance, fsync=settings.JOURNAL_FSYNC)
        self._queue: queue.SimpleQueue[tuple[dict[str, Any], bool] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._stopping = False
        self._abandon = False  # shutdown gave up on the database: the journal keeps the rest
        self._count_lock = threading.Lock()
        self._unwritten = 0  # records submitted and not yet in the database
        self.journal_errors = 0
        self.open_exchanges = 0  # requests logged whose response record has not come yet
        self.last_error = ""
        self._thread.start()

    def submit(self, record: dict[str, Any]) -> None:
        """Make a record durable (journal) and queue it for the database; never raises."""
        try:
            self.journal.append(record)
            journaled = True
        except (OSError, TypeError, ValueError) as exc:
            # A full disk must not fail the exchange: the record still goes to the database,
            # it just is not crash-proof meanwhile.
            journaled = False
            self.journal_errors += 1
            self.last_error = f"journal write failed: {exc}"
            log.warning("log journal write failed, record kept in memory only: %s", exc)
        with self._count_lock:
            self._unwritten += 1
        kind = record.get("t")
        if kind == "req":
            self.open_exchanges += 1
        elif kind == "resp":
            self.open_exchanges -= 1
        self._queue.put((record, journaled))

    @property
    def pending(self) -> int:
        """Records of this process not yet in the database."""
        return self._unwritten

    def flush(self, timeout: float = 10.0, *, exchanges: bool = True) -> bool:
        """Wait until open exchanges have ended and their records are in the database."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._unwritten or (exchanges and self.open_exchanges > 0):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Let open exchanges end, drain the queue, stop the thread and release the journal."""
        self.flush(timeout)
        drained = self.flush(min(5.0, max(timeout, 0.5)), exchanges=False)
        if not drained:
            self._abandon = True
            log.warning("log store still unavailable at shutdown; %d record(s) stay in %s for the next start",
                        self._unwritten, self.journal.path)
        self._stopping = True
        self._queue.put(None)
        self._thread.join(timeout=2.0)
        self.journal.close(remove=drained)
        return drained

    def _run(self) -> None:
        """Thread body: recover orphaned journals, then write batches forever."""
        from logs.services import exchange_records_write, orphans_recover

        self._retry(lambda: orphans_recover(settings.JOURNAL_DIR, journal_orphans, journal_records))
        journal_counters_prune(settings.JOURNAL_DIR)
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            if self._queue.qsize() < BATCH_MAX:
                time.sleep(BATCH_LINGER)  # sleep, not get(timeout): no wake-up per record
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._stopping = True
                    break
                batch.append(item)
            records = [rec for rec, _ in batch]
            if not self._retry(lambda: self._batch_write(exchange_records_write, records)):
                break  # abandoned at shutdown: the journal file keeps these for the next start
            try:
                self.journal.commit(sum(1 for _, journaled in batch if journaled))
            except OSError as exc:  # journal released by a shutdown that gave up: replay covers it
                log.warning("log journal commit failed: %s", exc)
            with self._count_lock:
                self._unwritten -= len(batch)
            with self._idle:
                self._idle.notify_all()
            if self._stopping:
                break
        connection.close()

    @staticmethod
    def _batch_write(write, records: list[dict[str, Any]]) -> None:
        """Write a batch; if the database rejects one record, write the others one by one.

        A constraint violation never goes away by retrying: without this, one bad record
        would hold every later record in the journal forever.
        """
        try:
            write(records)
        except IntegrityError:
            connection.close()
            for rec in records:
                try:
                    write([rec])
                except IntegrityError as exc:
                    log.error("log record %s rejected by the database, skipped: %s", rec.get("id"), exc)

    def _retry(self, work) -> bool:
        """Run a database write until it succeeds (True); the journal keeps the records meanwhile."""
        delay = 0.05
        while True:
            if self._abandon:
                return False
            try:
                work()
                self.last_error = ""
                return True
            except DatabaseError as exc:
                self.last_error = str(exc)
                log.warning("log store unavailable, retrying in %.2fs: %s", delay, exc)
                connection.close()
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception:  # a malformed record must not stop the writer for good
                log.exception("log record could not be written; skipped")
                return True


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
