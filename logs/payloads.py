"""Payload files cut out of logged bodies: multipart parts, base64 images, stable names and rows."""

import base64
import binascii
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings

from logs.capture import extension_for, payload_open
from logs.models import BinaryFile, Request
from logs.multipart import multipart_boundary, multipart_split, part_copy, part_read

FORM_FIELD_INLINE_MAX = 64 * 1024

_pending_unlinks = threading.local()


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
    """Delete a source file only once its rows are committed: a retried batch still needs it."""
    pending = getattr(_pending_unlinks, "paths", None)
    if pending is None:
        path.unlink(missing_ok=True)
    else:
        pending.append(path)


def epoch_datetime(ts: float) -> datetime:
    """Epoch seconds to an aware datetime."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def file_id_derive(owner: str, label: str) -> uuid.UUID:
    """A stable id for a file derived from its owner, so a replayed record makes no duplicate."""
    return uuid.uuid5(uuid.UUID(owner), label)


def payload_name_derive(provider: str, owner: str, label: str, content_type: str, ts: float) -> str:
    """Stable payload path {provider}/{YYYY-MM-DD}/{uuid}.{ext} for a file cut out of a body."""
    day = epoch_datetime(ts).strftime("%Y-%m-%d")
    return f"{provider}/{day}/{file_id_derive(owner, label).hex}{extension_for(content_type)}"


def payload_path(name: str) -> Path:
    """Absolute path of a payload file."""
    return Path(settings.FILE_STORAGE_PATH) / name


def file_row_build(*, file_id: uuid.UUID, request_id: str, response_id: str | None, name: str,
              role: str, content_type: str, size: int, sha256: str, ts: float,
              field_name: str = "", filename: str = "") -> BinaryFile:
    """An unsaved BinaryFile row."""
    return BinaryFile(id=file_id, request_id=request_id, response_id=response_id, file=name,
                      role=role, content_type=content_type, size=size, sha256=sha256,
                      field_name=field_name, filename=filename or "", created_at=epoch_datetime(ts))



def multipart_rows_build(rec: dict, request: Request, files: list[BinaryFile]) -> None:
    """Split a multipart request body into file rows and a readable JSON body."""
    spill = rec["body_file"]
    source = payload_path(spill["name"])
    boundary = multipart_boundary(rec.get("content_type", ""))
    parts, complete = multipart_split(source, boundary) if boundary else ([], False)
    fields: dict[str, Any] = {}
    described = []
    for idx, part in enumerate(parts):
        size = part.end - part.start
        if part.filename is None and size <= FORM_FIELD_INLINE_MAX:
            raw = part_read(source, part)
            try:
                fields[part.name] = raw.decode("utf-8")
                continue
            except UnicodeDecodeError:
                pass
        name = payload_name_derive(rec["provider"], rec["id"], f"part{idx}", part.content_type, rec["created"])
        digest = hashlib.sha256()
        with payload_open(name) as dest:
            part_copy(source, part, _HashingWriter(dest, digest))
        fid = file_id_derive(rec["id"], f"part{idx}")
        files.append(file_row_build(file_id=fid, request_id=rec["id"], response_id=None, name=name,
                               role=BinaryFile.Role.REQUEST_PART, content_type=part.content_type,
                               size=size, sha256=digest.hexdigest(), ts=rec["created"],
                               field_name=part.name, filename=part.filename or ""))
        described.append({"field": part.name, "filename": part.filename, "content_type": part.content_type,
                          "size": size, "file": name})
    request.body = json.dumps({"fields": fields, "files": described, "complete": complete}, indent=None)
    if complete:
        unlink_after_commit(source)
    else:  # keep the raw bytes: a truncated body is evidence too
        files.append(file_row_build(file_id=file_id_derive(rec["id"], "raw"), request_id=rec["id"], response_id=None,
                               name=spill["name"], role=BinaryFile.Role.REQUEST_BODY,
                               content_type=rec.get("content_type", ""), size=spill["size"],
                               sha256=spill.get("sha256", ""), ts=rec["created"]))
    m = fields.get("model")
    request.model = m if isinstance(m, str) else None


class _HashingWriter:
    """File wrapper that hashes what is written through it."""

    def __init__(self, dest, digest) -> None:
        self.dest, self.digest = dest, digest

    def write(self, data: bytes) -> None:
        """Write and hash."""
        self.digest.update(data)
        self.dest.write(data)


def b64_images_extract(rec: dict, payload: dict, files: list[BinaryFile]) -> bool:
    """Move b64_json images out of a JSON answer into files; True when any was moved."""
    items = payload.get("data")
    if not isinstance(items, list):
        return False
    moved = False
    fmt = payload.get("output_format") or "png"
    ctype = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}.get(
        fmt, "image/png")
    for idx, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
            continue
        try:
            raw = base64.b64decode(item["b64_json"], validate=True)
        except (binascii.Error, ValueError):
            continue
        name = payload_name_derive(rec["provider"], rec["id"], f"image{idx}", ctype, rec["created"])
        with payload_open(name) as f:
            f.write(raw)
        fid = file_id_derive(rec["id"], f"image{idx}")
        files.append(file_row_build(file_id=fid, request_id=rec["request_id"], response_id=rec["id"], name=name,
                               role=BinaryFile.Role.RESPONSE_IMAGE, content_type=ctype, size=len(raw),
                               sha256=hashlib.sha256(raw).hexdigest(), ts=rec["created"]))
        item["b64_json"] = {"$gateway_file": name, "binary_file_id": str(fid), "bytes": len(raw)}
        moved = True
    return moved
