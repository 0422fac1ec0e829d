"""Append-only write-ahead journal: a log record is on disk before the exchange goes on.

Each process owns one file, `<instance>.jsonl`, under an exclusive flock. A file whose lock
can be taken belongs to a dead process: its records are replayed into the database.
Beside it, `<instance>.committed` holds how many of its lines are already in the database, so
any process can count what is still waiting (`journal_pending_total`).
"""

import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

COMMITTED_SUFFIX = ".committed"
PARTS_SUFFIX = ".parts"  # a folder of the answers a process is streaming (logs/pipeline/progress.py)
UNREADABLE_FOLDER = "unreadable"  # journal lines the database could not take, kept for the operator
_COUNT_WIDTH = 20  # fixed-width counter: rewritten in place with one pwrite, never torn


_private: set[str] = set()  # folders already made private by this process


def private_folder(path: Path) -> Path:
    """The folder, made if need be, readable by the gateway's user only (0700): what waits there (journal
    records, request bodies as sent) may hold prompts and credentials. One made by an older version with
    the default mode is narrowed too, once per process."""
    key = str(path)
    if key not in _private:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
        _private.add(key)
    return path


class Journal:
    """One process's journal file; truncated whenever everything in it is in the database."""

    def __init__(self, directory: Path, instance: str, *, fsync: bool = False) -> None:
        private_folder(directory)
        self.path = directory / f"{instance}.jsonl"
        self.committed_path = directory / f"{instance}{COMMITTED_SUFFIX}"
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._count_fd = os.open(self.committed_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.appended = 0  # lines in the file now
        self.committed = 0  # of those, lines already in the database
        self._count_write()

    def append(self, line: bytes) -> None:
        """Write one record's line (one write() call, so a crash leaves whole lines).

        Raises OSError (disk full...) without counting the record: the caller decides.
        """
        with self._lock:
            written = os.write(self._fd, line)
            if written != len(line):  # a short write on a full disk: cut it off, report it
                os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
                raise OSError(28, "short write to the log journal (disk full?)")
            if self.fsync:
                os.fsync(self._fd)
            self.appended += 1

    def commit(self, count: int) -> None:
        """Note that `count` more records are in the database; empty the file when all are."""
        with self._lock:
            self.committed = min(self.committed + count, self.appended)
            if self.committed == self.appended:
                os.ftruncate(self._fd, 0)
                self.appended = self.committed = 0
            self._count_write()

    def _count_write(self) -> None:
        """Publish the committed-line count for other processes (best effort)."""
        try:
            os.pwrite(self._count_fd, f"{self.committed:0{_COUNT_WIDTH}d}\n".encode(), 0)
        except OSError:
            pass

    @property
    def pending(self) -> int:
        """Records written to the journal but not yet to the database."""
        return self.appended - self.committed

    def close(self, *, remove: bool) -> None:
        """Release the file; remove it when nothing in it is still pending."""
        with self._lock:
            if remove and self.pending == 0:
                self.path.unlink(missing_ok=True)
                self.committed_path.unlink(missing_ok=True)
            os.close(self._count_fd)
            os.close(self._fd)


def journal_orphans(directory: Path) -> Iterator[tuple[str, Path, int]]:
    """Yield (instance, path, fd) of journals whose owner is gone; the caller closes fd."""
    if not directory.exists():
        return
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        yield path.stem, path, fd


def journal_orphans_exist(directory: Path) -> bool:
    """True if a journal whose owner is gone is waiting to be replayed."""
    for _instance, _path, fd in journal_orphans(directory):
        os.close(fd)
        return True
    return False


def journal_lines(path: Path) -> list[bytes]:
    """A journal's complete lines; a torn last line (crash mid-write) is left out, with a warning."""
    with open(path, "rb") as f:
        lines = list(f)
    if lines and not lines[-1].endswith(b"\n"):
        # Only a power loss (or a disk error) leaves one: a record is one write(), whole or not at all
        # when a process dies. The exchange it began is still closed as interrupted from its request row.
        log.warning("log journal %s ends on an unfinished record (%d bytes, cut off by a crash): left out",
                    path.name, len(lines.pop()))
    return lines


def lines_keep_aside(directory: Path, instance: str, lines: list[bytes]) -> Path:
    """Append journal lines that cannot be written to the database (unparsable, refused) to
    `unreadable/<instance>.jsonl` beside the journals, byte for byte, and return that file.

    What was logged is never dropped: a line written by a newer version (after a downgrade), a
    corrupted disk block or a record the database refuses waits there for the operator, who can
    read it and, once the cause is fixed, move the file back into the journal folder to replay it.
    The lines were masked before they were journaled; the folder stays private all the same.
    Appended (a replay run twice after a crash may keep a line twice: a replay writes nothing twice).
    """
    path = private_folder(directory / UNREADABLE_FOLDER) / f"{instance}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        data = b"".join(lines)
        while data:  # a short write (a signal, a full disk) goes on where it stopped, or raises
            data = data[os.write(fd, data):]
        os.fsync(fd)  # the journal holding them is removed next
    finally:
        os.close(fd)
    return path


def unwritten_keep(directory: Path, instance: str, lines: list[bytes], entries: list, refused: list) -> int:
    """Keep aside the lines whose entry is None (unparsable) or a record in `refused` (the database
    refused it), saying where on the console; returns how many. `entries` parallels `lines`."""
    refused_ids = {id(rec) for rec in refused}
    kept = [line if line.endswith(b"\n") else line + b"\n"  # the ingest's piped lines come without theirs
            for line, rec in zip(lines, entries, strict=True) if rec is None or id(rec) in refused_ids]
    if not kept:
        return 0
    path = lines_keep_aside(directory, instance, kept)
    log.warning("%d log journal line(s) could not be written to the database (unreadable or refused): "
                "kept in %s (docs/operations.md)", len(kept), path)
    return len(kept)


def _lines_count(path: Path) -> int:
    """Complete lines in a file (0 when it is gone)."""
    count = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                count += block.count(b"\n")
    except FileNotFoundError:
        return 0
    return count


def _committed_read(path: Path) -> int:
    """A journal's published committed-line count (0 when absent or unreadable)."""
    try:
        return int(path.read_bytes().strip() or 0)
    except (OSError, ValueError):
        return 0


def journal_pending_total(directory: Path) -> int:
    """Log records waiting for the database across every journal (all processes, live or dead)."""
    if not directory.exists():
        return 0
    total = 0
    for path in directory.glob("*.jsonl"):
        # Counter first, lines second: a truncation in between can only make this undercount
        # a batch that was just written, never report records that are already in the database.
        committed = _committed_read(path.with_suffix(COMMITTED_SUFFIX))
        total += max(0, _lines_count(path) - committed)
    return total


def journal_kept_aside_total(directory: Path) -> int:
    """Journal lines kept in `unreadable/` (lines_keep_aside) for the operator: one stat when there are none."""
    kept = directory / UNREADABLE_FOLDER
    if not kept.is_dir():
        return 0
    return sum(_lines_count(path) for path in kept.glob("*.jsonl"))


def journal_counters_prune(directory: Path) -> int:
    """Remove committed-counters and progress folders whose journal is gone (replayed); returns how many."""
    removed = 0
    for counter in directory.glob(f"*{COMMITTED_SUFFIX}"):
        if not counter.with_suffix(".jsonl").exists():
            counter.unlink(missing_ok=True)
            removed += 1
    for parts in directory.glob(f"*{PARTS_SUFFIX}"):
        if not parts.with_suffix(".jsonl").exists():
            shutil.rmtree(parts, ignore_errors=True)
            removed += 1
    return removed
