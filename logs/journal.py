"""Append-only write-ahead journal: a log record is on disk before the exchange goes on.

Each process owns one file, `<instance>.jsonl`, under an exclusive flock. A file whose lock
can be taken belongs to a dead process: its records are replayed into the database.
"""

import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Journal:
    """One process's journal file; truncated whenever everything in it is in the database."""

    def __init__(self, directory: Path, instance: str, *, fsync: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{instance}.jsonl"
        self.fsync = fsync
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.appended = 0
        self.committed = 0

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as a JSON line (one write() call, so a crash leaves whole lines)."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)
            if self.fsync:
                os.fsync(self._fd)
            self.appended += 1

    def commit(self, count: int) -> None:
        """Note that `count` more records are in the database; empty the file when all are."""
        with self._lock:
            self.committed += count
            if self.committed == self.appended:
                os.ftruncate(self._fd, 0)

    @property
    def pending(self) -> int:
        """Records written to the journal but not yet to the database."""
        return self.appended - self.committed

    def close(self, *, remove: bool) -> None:
        """Release the file; remove it when nothing in it is still pending."""
        with self._lock:
            if remove and self.pending == 0:
                self.path.unlink(missing_ok=True)
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


def journal_records(path: Path) -> list[dict[str, Any]]:
    """Read a journal's complete lines; a torn last line (crash mid-write) is skipped."""
    records = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records
