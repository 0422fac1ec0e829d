"""Every read and write of payload files, through Django's storage API (STORAGES["payloads"]).

One naming scheme for every stored file: {provider}/{YYYY-MM-DD}/{file id}{.ext}, the file id
being the BinaryFile row's id. The proxy never writes here: it writes spool files
(logs/pipeline/spool.py) and the ingest process moves them in, so a slow or remote store never
holds up a client.
"""

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


class _RangeFile(File):
    """Part of a local file (a multipart part), read in chunks."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        super().__init__(open(path, "rb"), name=path.name)
        self.start, self.end = start, end
        self.file.seek(start)

    @property
    def size(self) -> int:
        return self.end - self.start

    def chunks(self, chunk_size: int | None = None) -> Iterator[bytes]:
        left = self.end - self.start
        self.file.seek(self.start)
        while left > 0:
            data = self.file.read(min(left, chunk_size or READ_CHUNK))
            if not data:
                break
            left -= len(data)
            yield data


def _save(name: str, content: File) -> str:
    """Store content under exactly `name`, unless a file of that name is there already (a replay)."""
    storage = payload_storage()
    try:
        if storage.exists(name):
            return name
        return storage.save(name, content)
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
    return payload_storage().exists(name)


def payload_size(name: str) -> int | None:
    """A stored file's size in bytes, None when the store does not have it."""
    try:
        return payload_storage().size(name) if name else None
    except (OSError, ValueError, SuspiciousFileOperation):  # gone, or a name outside the store
        return None


def payload_open(name: str) -> IO[bytes]:
    """A stored file, opened for reading (the caller closes it)."""
    return payload_storage().open(name, "rb")


def payload_chunks(name: str) -> Iterator[bytes]:
    """A stored file's bytes in chunks, closed at the end."""
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
    for name in names:
        if name:
            storage.delete(name)
