"""Files of an exchange, taken out of its records: spooled bodies, multipart parts, embedded images.

Every file gets an id derived from its record and a label, and a name from that id
(logs/storage.py), so replaying a journal stores each file once. Spool files are removed only
once the batch's rows are committed: a batch that is retried still finds them.
"""

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings

from logs.ids import derive
from logs.models import BinaryFile
from logs.pipeline.spool import spool_cut, spool_discard, spool_path
from logs.records import FileRef, RequestRecord
from logs.storage import payload_exists, payload_move_in, payload_name, payload_save_bytes
from providers import EmbeddedFile
from wire.multipart import FIELD_MAX, TooManyParts, multipart_boundary, multipart_split, part_read

_pending_unlinks = threading.local()
# While the ingest waits for a payload store that failed (logs/pipeline/ingest.py): since when and why;
# and the last such wait once over (since, why, until). The exchanges that ended before the store came
# back say so when written, though none of their files is missing: the batch that was retried, and
# those queued behind it, written in later batches.
_store_wait: dict[str, Any] = {"since": None, "error": "", "last": None}


def store_wait_begin(error: str) -> None:
    """The payload store failed; the batch is retried (the first failure's time and cause are kept,
    the spool file it names left out: it may be another exchange's than the row the note goes on)."""
    if _store_wait["since"] is None:
        _store_wait["since"] = datetime.now(timezone.utc)
        _store_wait["error"] = re.sub(re.escape(str(settings.SPOOL_DIR)) + r"/\S+", "a spool file", error)


def store_wait_end() -> None:
    """A batch was written: the store answers again."""
    if _store_wait["since"] is not None:
        _store_wait["last"] = (_store_wait["since"], _store_wait["error"], datetime.now(timezone.utc))
    _store_wait["since"], _store_wait["error"] = None, ""


def store_wait_note(ended: datetime) -> str:
    """The note for an exchange that ended at `ended` whose files are stored only now, after waiting for the
    store ("" if they did not wait)."""
    if _store_wait["since"] is not None:  # still waiting: this batch is being retried
        since, error = _store_wait["since"], _store_wait["error"]
    elif _store_wait["last"] is not None and ended < _store_wait["last"][2]:  # ended before the store came back
        since, error, _ = _store_wait["last"]
    else:
        return ""
    return f"{error} (since {since.isoformat(timespec='seconds')}); files stored when it answered again"


@contextmanager
def unlinks_deferred() -> Iterator[None]:
    """Collect unlink_after_commit() calls of one batch; delete those files only if it succeeds."""
    _pending_unlinks.paths = []
    try:
        yield
        for path in _pending_unlinks.paths:
            path.unlink(missing_ok=True)
    finally:
        _pending_unlinks.paths = None


def unlink_after_commit(path: Path) -> None:
    """Delete a spool file only once its rows are committed: a retried batch still needs it."""
    pending = getattr(_pending_unlinks, "paths", None)
    if pending is None:
        path.unlink(missing_ok=True)
    else:
        pending.append(path)


def epoch_datetime(ts: float) -> datetime:
    """Epoch seconds to an aware datetime."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def file_row(*, owner: str, label: str, request_id: str, response_id: str | None, name: str, role: str,
             content_type: str, size: int, sha256: str, created: float, field_name: str = "",
             filename: str = "") -> BinaryFile:
    """An unsaved BinaryFile row, its id derived from the owning record and a label."""
    return BinaryFile(id=derive(owner, label), request_id=request_id, response_id=response_id, file=name, role=role,
                      content_type=content_type[:255], size=size, sha256=sha256, field_name=field_name[:255],
                      filename=(filename or "")[:255], created_at=epoch_datetime(created))


def spooled_store(ref: FileRef, *, provider: str, owner: str, label: str, created: float,
                  content_type: str) -> tuple[str, str]:
    """Move a spooled body into the payload store: (stored name, "") or ("", why it is missing)."""
    name = payload_name(provider, created, derive(owner, label).hex, content_type)
    path = spool_path(ref.spool)
    if path.exists():
        try:
            return payload_move_in(name, path), ""
        except OSError as exc:  # the store is full or unreachable: the bytes stay in the spool folder
            return "", f"body file not stored ({exc}); it stays in the spool folder as {ref.spool}"
    if payload_exists(name):  # a replayed record whose file was stored before the crash
        return name, ""
    return "", f"body file {ref.spool} was not found in the spool folder"


def spooled_text(ref: FileRef) -> str | None:
    """A spooled body's text (None when it is not UTF-8 or is gone)."""
    try:
        return spool_path(ref.spool).read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def multipart_store(rec: RequestRecord, files: list[BinaryFile]) -> str:
    """Split a spooled multipart body into stored file parts; returns the readable JSON body.

    Small text fields stay in the body; file parts (and large or binary fields) become files.
    A body that does not parse to its final boundary is kept whole as well: a truncated
    upload is evidence too.
    """
    ref = rec.body_file
    source = spool_path(ref.spool)
    boundary = multipart_boundary(rec.content_type)
    limit = settings.LOG_MULTIPART_MAX_PARTS
    try:
        parts, complete = multipart_split(source, boundary, limit) if boundary and source.exists() else ([], False)
    except TooManyParts:
        raw_store(rec, files, label="raw")
        return json.dumps({"fields": {}, "files": [], "complete": False,
                           "note": f"more than {limit} parts: kept whole, not split (LOG_MULTIPART_MAX_PARTS)"})
    fields: dict[str, Any] = {}
    described = []
    for idx, part in enumerate(parts):
        size = part.end - part.start
        if part.filename is None and size <= FIELD_MAX:
            try:
                fields[part.name] = part_read(source, part).decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass
        label = f"part{idx}"
        file_id = derive(rec.id, label).hex
        cut = spool_cut(source, part.start, part.end, f"{file_id}.part")
        try:
            name = payload_move_in(payload_name(rec.provider, rec.created, file_id, part.content_type),
                                   spool_path(cut.spool))
        finally:
            spool_discard(cut.spool)  # stored or not, the source stays until the batch commits
        files.append(file_row(owner=rec.id, label=label, request_id=rec.id, response_id=None, name=name,
                              role=BinaryFile.Role.REQUEST_PART, content_type=part.content_type, size=size,
                              sha256=cut.sha256, created=rec.created, field_name=part.name,
                              filename=part.filename or ""))
        described.append({"field": part.name, "filename": part.filename, "content_type": part.content_type,
                          "size": size, "file": name})
    if complete:
        unlink_after_commit(source)
    else:
        raw_store(rec, files, label="raw")
    return json.dumps({"fields": fields, "files": described, "complete": complete})


def raw_store(rec: RequestRecord, files: list[BinaryFile], *, label: str = "body") -> str:
    """Store a spooled request body whole; returns a note when it could not be."""
    ref = rec.body_file
    name, missing = spooled_store(ref, provider=rec.provider, owner=rec.id, label=label, created=rec.created,
                                  content_type=rec.content_type)
    if name:
        files.append(file_row(owner=rec.id, label=label, request_id=rec.id, response_id=None, name=name,
                              role=BinaryFile.Role.REQUEST_BODY, content_type=rec.content_type, size=ref.size,
                              sha256=ref.sha256, created=rec.created))
    return missing


def embedded_store(found: list[EmbeddedFile], *, provider: str, owner: str, request_id: str, created: float,
                   files: list[BinaryFile]) -> str:
    """Store files embedded in a JSON answer, leaving a reference where each sat; "" or, when a local store
    is full, why the answer must be kept as it came (its images in it)."""
    for item in found:
        file_id = derive(owner, item.label)
        try:
            name = payload_save_bytes(payload_name(provider, created, file_id.hex, item.content_type), item.data)
        except OSError as exc:  # a full disk: the row, its usage and cost are still written
            return f"embedded files not stored ({exc}): the answer is kept with them in it"
        files.append(file_row(owner=owner, label=item.label, request_id=request_id, response_id=owner, name=name,
                              role=BinaryFile.Role.RESPONSE_IMAGE, content_type=item.content_type, size=len(item.data),
                              sha256=hashlib.sha256(item.data).hexdigest(), created=created))
        item.holder[item.key] = {"$gateway_file": name, "binary_file_id": str(file_id), "bytes": len(item.data)}
    return ""

