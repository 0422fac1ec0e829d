"""The worker's log writer: each record's line goes to the journal, then on to the ingest process.

The proxy calls `submit` on the event loop: one write() to the journal file and a queue put.
A thread of the worker batches the queued lines and pipes them to the worker's ingest process
(logs/pipeline/pipe.py), which turns them into rows; the worker itself never runs SQL for the log.
"""

import logging
import os
import queue
import threading
import time
import uuid

from django.conf import settings

from logs.pipeline.journal import Journal, journal_kept_aside_total, journal_orphans_exist, journal_pending_total
from logs.pipeline.pipe import IngestPipe
from logs.pipeline.progress import parts_remove

log = logging.getLogger(__name__)

# After the first line of a batch, wait this long for more: every transaction has a fixed cost
# (the commit, one statement per table). Durability does not wait for it: the journal already
# holds every line. flush() cuts it short.
BATCH_LINGER = 0.05
BATCH_MAX = 500
JOURNAL_WARN_EVERY = 60.0  # seconds between console warnings while the journal cannot be written

_Item = tuple[bytes, bool]  # (line, journaled)


class LogWriter:
    """Owns this process's journal and moves its lines into the database through the ingest process."""

    def __init__(self) -> None:
        self.instance = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.journal = Journal(settings.JOURNAL_DIR, self.instance, fsync=settings.JOURNAL_FSYNC)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._hurry = threading.Event()  # set by flush/stop: write what is queued now
        self._stopping = False
        self._count_lock = threading.Lock()
        self._unwritten = 0  # lines submitted and not yet in the database
        self.journal_errors = 0
        self.journal_error = ""  # why the last record could not be journaled ("" once one could)
        self._journal_warned_at, self._journal_warned_count = -JOURNAL_WARN_EVERY, 0
        self.open_exchanges = 0  # requests logged whose response record has not come yet
        self.last_error = ""
        # At once only if a dead process left records to replay; otherwise with the first line.
        self.pipe = IngestPipe(self._batch_done, self._error_note,
                               start=journal_orphans_exist(settings.JOURNAL_DIR))
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def submit(self, line: bytes, kind: str) -> None:
        """Make a record's line durable (journal) and queue it for the database; never raises."""
        try:
            self.journal.append(line)
            journaled = True
            self.journal_error = ""
        except OSError as exc:
            # A full disk must not fail the exchange: the line still goes to the database, it
            # just is not crash-proof meanwhile.
            journaled = False
            self.journal_errors += 1
            # Kept apart from last_error, which the next write to the database clears: while the disk
            # stays full, records stay out of the journal, however well the database takes them.
            self.journal_error = f"journal write failed: {_errno_text(exc)}"
            # Once, then once a minute with the count: one line per record flooded the console.
            now = time.monotonic()
            if now >= self._journal_warned_at + JOURNAL_WARN_EVERY:
                since = self.journal_errors - self._journal_warned_count
                log.warning("log journal write failed, record kept in memory only: %s%s", exc,
                            f" ({since} records since the last warning)" if self._journal_warned_count else "")
                self._journal_warned_at, self._journal_warned_count = now, self.journal_errors
        with self._count_lock:
            self._unwritten += 1
        if kind == "req":
            self.open_exchanges += 1
        elif kind == "resp":
            self.open_exchanges -= 1
        self._queue.put((line, journaled))

    @property
    def pending(self) -> int:
        """Lines of this process not yet in the database."""
        return self._unwritten

    def flush(self, timeout: float = 10.0, *, exchanges: bool = True) -> bool:
        """Wait until open exchanges have ended and their lines are in the database."""
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
        """Let open exchanges end, drain the queue, stop the ingest process and release the journal."""
        self.flush(timeout)
        drained = self.flush(min(5.0, max(timeout, 0.5)), exchanges=False)
        if not drained:
            log.warning("log store still unavailable at shutdown; %d record(s) stay in %s for the next start",
                        self._unwritten, self.journal.path)
        self._stopping = True
        self._queue.put(None)
        self._hurry.set()
        self._thread.join(timeout=2.0)
        self.pipe.close(abandon=not drained)
        self.journal.close(remove=drained)
        if drained:  # every exchange ended and is written: no answer is in progress
            parts_remove(settings.JOURNAL_DIR, self.instance)
        return drained

    def _batch_done(self, journaled: list[bool]) -> None:
        """Lines are in the database: release them from the journal and the counters."""
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
        """The database refused a write (it is retried): kept in last_error until a write succeeds."""
        self.last_error = message

    def _batch_take(self, idle: float) -> list[_Item] | None:
        """Wait for a line, linger for more, return them (None once told to stop, [] after idle seconds)."""
        try:
            first = self._queue.get(timeout=idle)
        except queue.Empty:
            return []
        if first is None:
            return None
        batch = [first]
        self.pipe.start_if_stopped()  # a process retired when idle starts during the linger, not after it
        if self._queue.qsize() < BATCH_MAX and not self._hurry.is_set():
            self._hurry.wait(BATCH_LINGER)  # not get(timeout): no wake-up per line
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

    def _run(self) -> None:
        """Thread body: hand batches of lines to the ingest process; let it retire when idle."""
        while not self._stopping and (batch := self._batch_take(settings.LOG_INGEST_IDLE_SECONDS)) is not None:
            if batch:
                self.pipe.send(batch)
            else:
                self.pipe.retire_if_idle()


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


def log_kept_aside_count() -> int:
    """Journal lines the database could not take, kept in DATA_DIR/journal/unreadable/ for the operator
    (`/health`'s `log_lines_kept_aside`)."""
    return journal_kept_aside_total(settings.JOURNAL_DIR)


# What GET /health, asked without a credential, says while the database (or the payload store) refuses the
# ingest's writes: their errors can name hosts, users, buckets and paths. The console has them whole.
WRITES_REFUSED = "log records cannot be written now (the console says why)"


def log_write_error() -> str:
    """Why this process's log records are not being written or journaled now ("" when they are), in words safe
    to show anyone: the database refusing writes (locked, full, down) or the journal's disk full."""
    if _writer is None:
        return ""
    # The database's refusal counts while records wait: once every journal is written (this
    # process's records, or a dead one's it replayed: no batch of its own says so), it is over.
    refused = WRITES_REFUSED if _writer.last_error and log_pending_count() else ""
    return "; ".join(filter(None, [_writer.journal_error, refused]))


def _errno_text(exc: OSError) -> str:
    """An OSError's reason without the path it names: "[Errno 28] No space left on device"."""
    return f"[Errno {exc.errno}] {exc.strerror}" if exc.errno is not None and exc.strerror else type(exc).__name__


def writer_stop(timeout: float = 10.0) -> bool:
    """Flush and stop the process's writer, if it was started."""
    global _writer
    with _writer_lock:
        writer, _writer = _writer, None
    return writer.stop(timeout) if writer else True
