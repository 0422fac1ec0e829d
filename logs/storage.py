"""Every read and write of payload files, through Django's storage API (STORAGES["payloads"]).

One naming scheme for every stored file: {provider}/{YYYY-MM-DD}/{file id}{.ext}, the file id
being the BinaryFile row's id. The proxy never writes here: it writes spool files
(logs/pipeline/spool.py) and the ingest process moves them in, so a slow or remote store never
holds up a client.

The store is a local folder or an S3-compatible bucket (FILE_STORAGE_URL, django-storages). Bytes
always move in chunks: uploads go through the storage API from open files (multipart above the
transfer threshold) and reads stream the object, so no body is ever held whole in memory. A remote
store that fails raises PayloadStoreUnavailable, which the ingest retries like a database outage:
the records wait in the journal and the bytes in the spool folder until the store answers again.
"""

import io
import mimetypes
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import Storage, storages

EXTENSIONS = {
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav",
    "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/aac": ".aac", "audio/flac": ".flac",
    "audio/pcm": ".pcm", "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
    "image/gif": ".gif", "application/pdf": ".pdf", "video/mp4": ".mp4",
    "application/octet-stream": ".bin", "application/json": ".json", "text/plain": ".txt",
    "text/event-stream": ".txt", "multipart/form-data": ".multipart",
}
READ_CHUNK = 256 * 1024


class PayloadStoreUnavailable(Exception):
    """The remote payload store refused or did not answer; nothing was lost, the caller retries."""


def _remote_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a remote store's client that mean "try again later" (none without boto3)."""
    try:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return ()
    return (BotoCoreError, ClientError, Boto3Error)


REMOTE_ERRORS = _remote_errors()


def _object_key(storage: Storage, name: str) -> str:
    """An S3 store's key for a stored name (its prefix joined on)."""
    from storages.utils import clean_name

    return storage._normalize_name(clean_name(name))


def payload_storage() -> Storage:
    """The payload store (a local folder by default)."""
    return storages["payloads"]


def extension_for(content_type: str) -> str:
    """File extension for a content type (".bin" when unknown)."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(ct) or mimetypes.guess_extension(ct) or ".bin"


def payload_name(provider: str, created: float, file_id: str, content_type: str) -> str:
    """The stored name of a file: {provider}/{YYYY-MM-DD}/{file id}{.ext}."""
    day = datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%d")
    return f"{provider or 'unknown'}/{day}/{file_id}{extension_for(content_type)}"


class _LocalFile(File):
    """A finished local file handed to the store: a folder store moves it instead of copying it."""

    def __init__(self, path: Path) -> None:
        super().__init__(open(path, "rb"), name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        """FileSystemStorage renames files that have one (file_move_safe) rather than copying them."""
        return str(self._path)


class _RangeReader(io.RawIOBase):
    """Bytes [start, end) of a local file as a file of their own: a remote store's upload seeks and
    reads it like any file, and never reads past the part."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self._f = open(path, "rb")
        self.start, self.end, self._pos = start, end, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.end - self.start}[whence]
        self._pos = max(0, min(base + offset, self.end - self.start))
        return self._pos

    def readinto(self, buffer) -> int:
        want = min(len(buffer), self.end - self.start - self._pos)
        if want <= 0:
            return 0
        self._f.seek(self.start + self._pos)
        data = self._f.read(want)
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._f.close()
        super().close()


class _RangeFile(File):
    """Part of a local file (a multipart part), read in chunks."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__(_RangeReader(path, start, end), name=path.name)
        self.start, self.end = start, end

    @property
    def size(self) -> int:
        return self.end - self.start

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        self.file.seek(0)
        while data := self.file.read(chunk_size or READ_CHUNK):
            yield data


def _save(name: str, content: File) -> str:
    """Store content under exactly `name`, unless a file of that name is there already (a replay)."""
    storage = payload_storage()
    try:
        if storage.exists(name):
            return name
        return storage.save(name, content)
    except REMOTE_ERRORS as exc:
        raise PayloadStoreUnavailable(f"payload store unavailable: {type(exc).__name__}: {exc}") from exc
    finally:
        content.close()


def payload_move_in(name: str, path: Path) -> str:
    """Move a finished local file into the store (a rename on a local folder store)."""
    stored = _save(name, _LocalFile(path))
    Path(path).unlink(missing_ok=True)  # copied (not moved) by a remote store: the local file goes
    return stored


def payload_save_range(name: str, path: Path, start: int, end: int) -> str:
    """Store bytes [start, end) of a local file."""
    return _save(name, _RangeFile(path, start, end))


def payload_save_bytes(name: str, data: bytes) -> str:
    """Store bytes held in memory."""
    return _save(name, ContentFile(data, name=os.path.basename(name)))


def payload_exists(name: str) -> bool:
    """Whether the store holds a file of that name."""
    try:
        return payload_storage().exists(name)
    except REMOTE_ERRORS as exc:
        raise PayloadStoreUnavailable(f"payload store unavailable: {type(exc).__name__}: {exc}") from exc


def payload_size(name: str) -> int | None:
    """A stored file's size in bytes, None when the store does not have it."""
    try:
        return payload_storage().size(name) if name else None
    except (OSError, ValueError, SuspiciousFileOperation, *REMOTE_ERRORS):  # gone, or a name outside the store
        return None


def payload_open(name: str) -> IO[bytes]:
    """A stored file, opened for reading (the caller closes it)."""
    return payload_storage().open(name, "rb")


def payload_chunks(name: str) -> Iterator[bytes]:
    """A stored file's bytes in chunks, closed at the end."""
    storage = payload_storage()
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        # An S3 bucket: stream the GET body. Opening it as a file (S3File) would download the
        # whole object before the first byte.
        body = bucket.Object(_object_key(storage, name)).get()["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()
        return
    with payload_open(name) as f:
        while chunk := f.read(READ_CHUNK):
            yield chunk


def payload_read_text(name: str) -> str:
    """A stored file as UTF-8 text (UnicodeDecodeError when it is not)."""
    with payload_open(name) as f:
        return f.read().decode("utf-8")


def payloads_delete(names: list[str]) -> None:
    """Delete stored files (already gone is fine)."""
    storage = payload_storage()
    bucket = getattr(storage, "bucket", None)
    names = [name for name in names if name]
    if bucket is not None:  # an S3 bucket: one request per 1000 objects, not one per file
        for i in range(0, len(names), 1000):
            keys = [{"Key": _object_key(storage, n)} for n in names[i:i + 1000]]
            bucket.delete_objects(Delete={"Objects": keys, "Quiet": True})
        return
    for name in names:
        storage.delete(name)
