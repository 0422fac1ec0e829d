"""The log-ingest process: turns journal lines into database rows, away from the proxy's GIL.

Each gateway worker starts one when it has something
to write and pipes it the JSON lines it has just appended to its journal. This process parses
them, builds the rows and writes them in batches, then answers `A <n>` once n more lines are in
the database (`E <message>` while the database refuses them). In the worker the proxy then
spends no time on SQL: at low concurrency that work, though on another thread, held the GIL
the event loop needed.

It exits when its input closes, after writing everything it was sent (the worker closes it at
shutdown, or after LOG_INGEST_IDLE_SECONDS with nothing to write). It ignores SIGINT and
SIGTERM: its worker decides when it stops, so that a Ctrl-C or a service manager's SIGTERM to
the whole process group cannot cut off the final flush.

Run by the worker as: python -m logs.pipeline.ingest   (never by hand)
"""

import contextlib
import gc
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from logs.records import Record, lines_parse

log = logging.getLogger("logs.ingest")

BATCH_MAX = 500
READ_SIZE = 1 << 20
# Django settings the worker may have changed at run time (a test database): passed on so that
# this process writes where its worker reads.
DB_NAME_ENV = "GATEWAY_INGEST_DB_NAME"
INGEST_APPS = ("logs",)
CPU_IDLE_SUPPORTED = hasattr(os, "SCHED_IDLE")  # Linux
# While the log store stays unavailable with the same error (a wrong bucket, wrong credentials), the
# console hears it again this often, not at each retry (every 2 s).
STORE_REMIND_SECONDS = 300.0


def cpu_priority_set(pid: int, *, idle: bool) -> bool:
    """Put a process at idle CPU priority (Linux SCHED_IDLE) or back at normal; False if refused.

    Idle: it runs only on CPU time nobody else wants. At low concurrency the inserts otherwise
    take a core just when the worker, the client or the upstream wakes up, and requests wait for
    the scheduler (the p99 at concurrency 1, see docs/benchmark.md). nice does not help: the
    kernel lets the running task finish its time slice first. Going back to normal needs
    CAP_SYS_NICE (or RLIMIT_NICE of 20): the worker falls back to a restart without it
    (logs/pipeline/pipe.py).
    """
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
        return True
    except (AttributeError, OSError):
        return False


def batch_write(write: Callable[[list[Record]], None], records: list[Record]) -> list[Record]:
    """Write a batch; if the database or a value rejects one record, write the others one by one.
    Returns the records the database refused (the caller keeps their lines aside).

    A constraint violation or a value that cannot be stored never goes away by retrying: without
    this, one bad record would hold every later record in the journal forever, or (a value that
    fails to serialise) cost the whole batch. A record that fails alone is written with its plain
    fields only, so the exchange is never missing from the log.
    """
    from django.db import DatabaseError, DataError, IntegrityError, connection

    from logs.storage import PayloadStoreUnavailable

    rejected: list[Record] = []
    try:
        write(records)
        return rejected
    except (IntegrityError, DataError):  # a value the database refuses (PostgreSQL: a NUL) is no outage
        connection.close()
    except (DatabaseError, PayloadStoreUnavailable):
        raise  # the database or the payload store is down or locked: retried by write_retry
    except Exception:
        log.exception("a batch of %d log records could not be written; writing them one by one", len(records))
    for rec in records:
        try:
            write([rec])
        except IntegrityError as exc:
            log.error("log record %s rejected by the database: %s", rec.id, exc)
            rejected.append(rec)
        except (DatabaseError, PayloadStoreUnavailable) as exc:
            if not isinstance(exc, DataError):
                raise
            connection.close()
            _record_write_cleaned(write, rec, exc)
        except Exception as exc:
            _record_write_cleaned(write, rec, exc)
    return rejected


def _record_write_cleaned(write: Callable[[list[Record]], None], rec: Record, exc: Exception) -> None:
    """A record whose row failed on a value: again with the values read from JSON made storable (a NUL,
    a lone surrogate as U+FFFD), and if that fails too, with its plain fields only."""
    from django.db import DatabaseError, DataError, connection

    from logs.pipeline.rows import records_write_minimal, values_cleaned
    from logs.storage import PayloadStoreUnavailable

    try:
        with values_cleaned():
            write([rec])
        log.warning("log record %s held a value no column takes (%s): written with U+FFFD in its place",
                    rec.id, type(exc).__name__)
        return
    except DataError:
        connection.close()
    except (DatabaseError, PayloadStoreUnavailable):
        raise
    except Exception:
        pass
    log.exception("log record %s could not be written whole; kept without its body", rec.id, exc_info=exc)
    records_write_minimal([rec], exc)


def write_retry(work: Callable[[], None], on_error: Callable[[str], None],
                abandoned: Callable[[], bool] = lambda: False) -> bool:
    """Run a database write until it succeeds (True), or until abandoned (False).

    A payload store that is down is waited for the same way: its records stay in the journal and
    their bytes in the spool folder, so nothing is written without its files.
    """
    from django.db import DatabaseError, connection

    from logs.pipeline.payloads import store_wait_begin, store_wait_end
    from logs.storage import PayloadStoreUnavailable

    delay = 0.05
    said, said_at, since = "", 0.0, 0.0  # the error the console heard last, when, and when the outage began
    while True:
        if abandoned():
            return False
        try:
            work()
            store_wait_end()
            if said:
                log.warning("log store answers again after %.0fs: the records that waited are written",
                            time.monotonic() - since)
            return True
        except (DatabaseError, PayloadStoreUnavailable) as exc:
            if isinstance(exc, PayloadStoreUnavailable):
                store_wait_begin(str(exc))
            on_error(str(exc))
            now, error = time.monotonic(), str(exc)
            if not said:
                since = now
            # Once per change of the error, and a reminder now and then: at every retry, a store that
            # stays wrong printed the same line every 2 s for as long as nobody fixed it.
            if error != said:
                log.warning("log store unavailable, retrying until it answers (said again if the error changes, "
                            "else every %.0f min): %s", STORE_REMIND_SECONDS / 60, error)
                said, said_at = error, now
            elif now - said_at >= STORE_REMIND_SECONDS:
                log.warning("log store still unavailable after %.0fs, retrying: %s", now - since, error)
                said_at = now
            connection.close()
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        except Exception:  # a malformed record must not stop the writer for good
            log.exception("log record could not be written; skipped")
            return True


def journals_recover(on_error: Callable[[str], None], abandoned: Callable[[], bool] = lambda: False) -> None:
    """Replay the journals of dead gateway processes (retrying while the database refuses)."""
    from django.conf import settings

    from logs.pipeline.journal import journal_counters_prune
    from logs.pipeline.recovery import orphans_recover

    write_retry(lambda: orphans_recover(settings.JOURNAL_DIR), on_error, abandoned)
    journal_counters_prune(settings.JOURNAL_DIR)


def _lines_read(fd: int, pending: bytes) -> tuple[list[bytes], bytes, bool]:
    """Block for input, then take whatever else is already there: (complete lines, rest, eof)."""
    chunks, size, eof = [pending], 0, False
    while True:
        data = os.read(fd, READ_SIZE)
        if not data:
            eof = True
            break
        chunks.append(data)
        size += len(data)
        if size >= 8 * READ_SIZE or not select.select([fd], [], [], 0)[0]:
            break
    *lines, rest = b"".join(chunks).split(b"\n")
    return lines, rest, eof


def ingest_run(fd_in: int, out: BinaryIO) -> None:
    """Recover dead journals, then write what arrives on fd_in until it closes."""
    from django.conf import settings
    from django.db import connection

    from logs.pipeline.journal import unwritten_keep
    from logs.pipeline.rows import records_write

    kept_name = f"worker-{os.getppid()}"  # lines its worker sent that the database could not take
    acked = True

    def answer(line: str) -> None:
        nonlocal acked
        if not acked:
            return
        try:
            out.write(line.encode("utf-8", "replace") + b"\n")
            out.flush()
        except BrokenPipeError:
            # The worker is gone (killed): nobody reads acks any more, but what it sent before
            # is still written, until its end of the pipe is read to the end.
            acked = False
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError):
                os.dup2(devnull, out.fileno())  # the ack still buffered goes there at exit
            os.close(devnull)

    def report(message: str) -> None:
        answer("E " + " ".join(message.split())[:500])

    journals_recover(report)
    answer("R")  # ready: recovery done
    pending, eof = b"", False
    while not eof:
        lines, pending, eof = _lines_read(fd_in, pending)
        entries = lines_parse(lines)
        for i in range(0, len(entries), BATCH_MAX):
            chunk = entries[i:i + BATCH_MAX]
            records = [rec for rec in chunk if rec is not None]
            refused: list[Record] = []
            if records:
                write_retry(lambda: refused.extend(batch_write(records_write, records)), report)
            # Before the ack: once acknowledged, the worker's journal lets these lines go.
            try:
                unwritten_keep(settings.JOURNAL_DIR, kept_name, lines[i:i + BATCH_MAX], chunk, refused)
            except OSError as exc:  # DATA_DIR full or unwritable: dying here would only start over, for ever
                log.error("log journal lines the database could not take were not kept aside (%s): lost", exc)
            answer(f"A {len(chunk)}")
    connection.close()


def ingest_setup() -> None:
    """Django with only what writing rows needs, and the row builders imported.

    This is the start-up the first records after a quiet spell wait for: everything that only
    some records need (boto3 for an S3 store, httpx for Replicate's output files) is imported
    when one comes.
    """
    # Nearly everything start-up creates (modules, classes, models) lives as long as the
    # process: collecting garbage meanwhile frees nothing and costs time the first records wait
    # for. Frozen afterwards, those objects are never scanned again (docs/benchmark.md).
    gc.disable()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django
    from django.conf import settings

    # The logs app alone: its models hold no relation to another app's. Without the admin,
    # auth, templates and content types this process starts sooner and is smaller.
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app in INGEST_APPS]
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # A batch is written by multi-row inserts whose triggers (full text, rollups) touch many
        # pages; SQLite keeps each statement's undo pages (its statement journal) and, past 64 KiB,
        # spills them to a temporary file: one created and deleted per batch, written page by page
        # (docs/benchmark.md). In memory they cost one batch's pages at most. Only this process,
        # which runs nothing but those inserts: an admin query's sorts keep spilling to disk.
        options = database.setdefault("OPTIONS", {})
        options["init_command"] = f"{options.get('init_command', '')} PRAGMA temp_store=MEMORY;"
    django.setup()
    if os.environ.get(DB_NAME_ENV):
        settings.DATABASES["default"]["NAME"] = os.environ[DB_NAME_ENV]
    import logs.pipeline.rows  # noqa: F401 -- with pricing, still without collections

    gc.freeze()
    gc.enable()


def main() -> None:
    """Entry point of the child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Acks go out on the original stdout; anything else printed goes to stderr instead.
    acks = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    ingest_setup()
    ingest_run(sys.stdin.buffer.fileno(), acks)


if __name__ == "__main__":
    main()
