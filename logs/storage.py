"""Every read and write of payload files, through Django's storage API (STORAGES["payloads"]).

One naming scheme for every stored file: {provider}/{YYYY-MM-DD}/{file id}{.ext}, the file id
being the BinaryFile row's id. The proxy never writes here: it writes spool files
(logs/pipeline/spool.py) and the ingest process moves them in, so a slow or remote store never
holds up a client.

The store is a local folder or an S3-compatible bucket (FILE_STORAGE_URL, django-storages). Bytes
always move in chunks, so no body is ever held whole in memory: every body goes in as a finished
local file with its path (a folder store renames it; an S3 store uploads it from the path, reading
each multipart part from disk as it sends it: logs/s3_storage.py), except bytes already held in
memory (images cut out of JSON answers); reads stream the object or the byte range asked for. A
remote store that fails raises PayloadStoreUnavailable, which the ingest retries like a database
outage: the records wait in the journal and the bytes in the spool folder until the store answers
again.
"""

import logging
import mimetypes
import os
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

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


log = logging.getLogger(__name__)

class PayloadStoreUnavailable(Exception):
    """The remote payload store refused or did not answer; nothing was lost, the caller retries."""


def remote_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a remote store's client that mean "try again later".

    Called in `except` clauses, so only once something was raised, and it looks only at the
    clients already loaded: boto3 cannot raise anything before an S3 store has imported it, and
    importing it just for its exceptions was a large part of every ingest process's start-up
    with a local folder store (docs/benchmark.md).
    """
    errors: list[type[BaseException]] = []
    if (botocore := sys.modules.get("botocore.exceptions")) is not None:
        errors += [botocore.BotoCoreError, botocore.ClientError]
    if (boto3 := sys.modules.get("boto3.exceptions")) is not None:
        errors.append(boto3.Boto3Error)
    return tuple(errors)


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
    """A finished local file handed to the store with its path: a folder store moves it instead of
    copying it, an S3 store uploads it from the path instead of from the open file."""

    def __init__(self, path: Path) -> None:
        super().__init__(open(path, "rb"), name=path.name)
        self._path = path

    def temporary_file_path(self) -> str:
        """FileSystemStorage renames files that have one (file_move_safe) rather than copying them."""
        return str(self._path)


def _save(name: str, content: File) -> str:
    """Store content under exactly `name`, unless a file of that name is there already (a replay)."""
    storage = payload_storage()
    try:
        if storage.exists(name):
            return name
        return storage.save(name, content)
    except remote_errors() as exc:
        raise PayloadStoreUnavailable(f"payload store unavailable: {type(exc).__name__}: {exc}") from exc
    finally:
        content.close()


def payload_move_in(name: str, path: Path) -> str:
    """Move a finished local file into the store (a rename on a local folder store)."""
    stored = _save(name, _LocalFile(path))
    Path(path).unlink(missing_ok=True)  # copied (not moved) by a remote store: the local file goes
    return stored


def payload_save_bytes(name: str, data: bytes) -> str:
    """Store bytes held in memory."""
    return _save(name, ContentFile(data, name=os.path.basename(name)))


def payload_exists(name: str) -> bool:
    """Whether the store holds a file of that name."""
    try:
        return payload_storage().exists(name)
    except remote_errors() as exc:
        raise PayloadStoreUnavailable(f"payload store unavailable: {type(exc).__name__}: {exc}") from exc


def payload_size(name: str) -> int | None:
    """A stored file's size in bytes, None when the store does not have it; PayloadStoreUnavailable
    when a remote store cannot say (unreachable, or refusing: a file there is not a file gone)."""
    try:
        return payload_storage().size(name) if name else None
    except (OSError, ValueError, SuspiciousFileOperation):  # gone, or a name outside the store
        return None
    except remote_errors() as exc:
        if _not_found(exc):
            return None
        raise PayloadStoreUnavailable(f"payload store unavailable: {type(exc).__name__}: {exc}") from exc


def _not_found(exc: BaseException) -> bool:
    """A remote store's answer that the object does not exist (S3: 404, NoSuchKey)."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def payload_chunks(name: str, byte_range: tuple[int, int] | None = None) -> Iterator[bytes]:
    """A stored file's bytes in chunks, closed at the end; only bytes [start, end) when given a range.

    Only the bytes asked for are read from the store: a local file is seeked, an S3 object is
    fetched with a ranged GET.
    """
    start, end = byte_range or (0, None)
    storage = payload_storage()
    bucket = getattr(storage, "bucket", None)
    if bucket is not None:
        # An S3 bucket: stream the GET body. Opening it as a file (S3File) would download the
        # whole object before the first byte.
        ranged = {"Range": f"bytes={start}-{end - 1}"} if byte_range else {}
        body = bucket.Object(_object_key(storage, name)).get(**ranged)["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()
        return
    with storage.open(name, "rb") as f:
        f.seek(start)
        while (want := READ_CHUNK if end is None else min(READ_CHUNK, end - f.tell())) > 0 and (chunk := f.read(want)):
            yield chunk


def payloads_delete(names: list[str]) -> list[str]:
    """Delete stored files (already gone is fine); the names the store did not delete (it failed
    or refused), which the caller keeps to try again."""
    storage = payload_storage()
    bucket = getattr(storage, "bucket", None)
    names = [name for name in names if name]
    left: list[str] = []
    if bucket is not None:  # an S3 bucket: one request per 1000 objects, not one per file
        for i in range(0, len(names), 1000):
            part = names[i:i + 1000]
            try:
                answer = bucket.delete_objects(Delete={"Objects": [{"Key": _object_key(storage, n)} for n in part],
                                                       "Quiet": True})
            except remote_errors() as exc:
                log.warning("payload store: %d file(s) not deleted: %s: %s", len(part), type(exc).__name__, exc)
                left += part
                continue
            # Quiet: the answer lists only the objects it could not delete (access denied, ...).
            failed = {e.get("Key") for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"}
            left += [n for n in part if _object_key(storage, n) in failed]
        return left
    for name in names:
        try:
            storage.delete(name)
        except OSError as exc:
            log.warning("payload store: %s not deleted: %s", name, exc)
            left.append(name)
    return left
