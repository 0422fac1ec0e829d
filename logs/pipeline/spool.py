"""Spool files: bodies the proxy keeps as files, in a local folder, until the ingest stores them.

The proxy writes here as bytes pass (request bodies it must keep whole, large or binary
answers); the journal record names the file (records.FileRef); the ingest process moves it into
the payload store (logs/storage.py) and removes it. So the event loop only ever writes local
files, and a slow or unreachable payload store costs nothing but a delay in the log.
"""

import hashlib
import os
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from logs.pipeline.journal import private_folder
from logs.records import FileRef

CUT_CHUNK = 1 << 20


def spool_dir() -> Path:
    """The spool folder (created on first use, for the gateway's user only)."""
    return private_folder(Path(settings.SPOOL_DIR))


def spool_create(name: str, *, buffered: bool = True) -> BinaryIO:
    """A new spool file, readable by the gateway's user only (as the journal's files): a request body
    waits here as it was sent, credentials and all, while it goes upstream. Unbuffered, every write
    reaches the file or fails there (a full disk), never later in a flush."""
    fd = os.open(spool_dir() / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb", buffering=-1 if buffered else 0)


def spool_path(name: str) -> Path:
    """Where a spool file lives; the name is ours (an id and a label), never a client's."""
    return Path(settings.SPOOL_DIR) / os.path.basename(name)


def spool_discard(name: str) -> None:
    """Remove a spool file nobody will store (already gone is fine)."""
    try:
        spool_path(name).unlink(missing_ok=True)
    except OSError:
        pass


class SpoolWriter:
    """A new spool file written in pieces, hashed as it goes."""

    def __init__(self, name: str, content_type: str = "") -> None:
        self.name = name
        self.content_type = content_type
        self.size = 0
        self._sha = hashlib.sha256()
        self._file = spool_create(name)  # closed by close/discard

    def write(self, data: bytes) -> None:
        """Append bytes (OSError on a full disk: the caller decides)."""
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)

    def close(self, error: str = "") -> FileRef:
        """Finish the file and describe it for the journal record."""
        self._file.close()
        return FileRef(spool=self.name, size=self.size, sha256=self._sha.hexdigest(),
                       content_type=self.content_type, error=error)

    def discard(self) -> None:
        """Drop a file that cannot be finished (a truncated copy is no evidence, and frees the disk)."""
        try:
            self._file.close()
        except OSError:
            pass
        spool_discard(self.name)


def spool_cut(source: Path, start: int, end: int, name: str) -> FileRef:
    """Copy bytes [start, end) of a local file into a spool file of their own, in chunks.

    A multipart part becomes a whole file this way, so the store receives every file as a
    finished local file (an S3 store then uploads it from its path; logs/s3_storage.py). The name
    is derived from the record, so a cut left behind by a crash is replaced, not collided with.
    """
    spool_discard(name)
    writer = SpoolWriter(name)
    try:
        with open(source, "rb") as f:
            f.seek(start)
            left = end - start
            while left > 0 and (chunk := f.read(min(left, CUT_CHUNK))):
                writer.write(chunk)
                left -= len(chunk)
    except BaseException:
        writer.discard()
        raise
    return writer.close()
