"""Writes to the log: turns journal records into rows, files and parsed results."""

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.db import transaction

from logs.models import BinaryFile, Outcome, Request, Response
from logs.payloads import (b64_images_extract, epoch_datetime, file_id_derive, file_row_build, multipart_rows_build,
                           payload_path, unlink_after_commit, unlinks_deferred)
from logs.multipart import multipart_boundary
from logs.replicate_files import replicate_downloads_schedule, replicate_output_urls
from logs.rows import row_new, rows_insert
from logs.usage import ttft_compute, usage_fill, wire_get
from logs.streams import json_or_none

log = logging.getLogger(__name__)

JSON_PARSE_MAX_BYTES = 64 * 1024 * 1024


def _content_encoded(headers: list) -> bool:
    """True when the answer came compressed (Content-Encoding other than identity)."""
    return any(k.lower() == "content-encoding" and v.strip().lower() not in ("", "identity")
               for k, v in headers or [])


def request_row(rec: dict, files: list[BinaryFile]) -> Request:
    """Build the Request row (and its files) from a journal record."""
    req = row_new(Request, {
        "id": rec["id"], "provider": rec["provider"], "endpoint": rec["endpoint"], "method": rec["method"],
        "query_string": rec.get("query", ""), "headers": rec.get("headers", []), "body": rec.get("body"),
        "body_size": rec.get("body_size", 0), "content_type": rec.get("content_type", "")[:255],
        "client_addr": rec.get("client", ""), "key_fingerprint": rec.get("key_fp", ""),
        "gateway_key": (rec.get("gateway_key") or "")[:160],
        "instance": rec.get("instance", ""), "created_at": epoch_datetime(rec["created"]),
    })
    spill = rec.get("body_file")
    if spill and multipart_boundary(rec.get("content_type", "")):
        multipart_rows_build(rec, req, files)
    elif spill:
        files.append(file_row_build(file_id=file_id_derive(rec["id"], "body"), request_id=rec["id"], response_id=None,
                               name=spill["name"], role=BinaryFile.Role.REQUEST_BODY,
                               content_type=rec.get("content_type", ""), size=spill["size"],
                               sha256=spill.get("sha256", ""), ts=rec["created"]))
    payload = json_or_none(req.body) if "json" in req.content_type or req.body else None
    wire = wire_get(rec.get("wire"))
    req.model = wire.request_model(req.endpoint, payload) or req.model
    req.stream_requested = wire.stream_requested(req.endpoint, payload)
    return req


def _untrusted(parse: Callable, *args: Any) -> Any:
    """Run a parser over upstream data; a malformed answer leaves the derived fields NULL."""
    try:
        return parse(*args)
    except (TypeError, AttributeError, ValueError, KeyError, IndexError):
        log.warning("could not read %s from an upstream answer; left empty", parse.__name__)
        return None


def response_row(rec: dict, files: list[BinaryFile]) -> Response:
    """Build the Response row (and its files) from a journal record."""
    resp = row_new(Response, {
        "id": rec["id"], "request_id": rec["request_id"], "status_code": rec.get("status"),
        "headers": rec.get("headers", []), "body": rec.get("body"), "body_size": rec.get("body_size", 0),
        "content_type": rec.get("content_type", "")[:255], "is_stream": rec.get("is_stream", False),
        "event_offsets_ms": rec.get("event_offsets_ms"), "duration_ms": rec.get("duration_ms"),
        "ttfb_ms": rec.get("ttfb_ms"), "outcome": rec.get("outcome", Outcome.COMPLETED),
        "error_message": rec.get("error", ""), "created_at": epoch_datetime(rec["created"]),
        "usage_injected": bool(rec.get("usage_injected")),
    })
    wire = wire_get(rec.get("wire"))
    resp.is_error = bool(rec.get("error")) or resp.outcome != Outcome.COMPLETED or (
        resp.status_code is not None and resp.status_code >= 400)
    spill = rec.get("body_file")
    text = resp.body
    if spill and "json" in resp.content_type and spill["size"] <= JSON_PARSE_MAX_BYTES and not spill.get("error"):
        try:  # a big JSON answer (usually base64 images): parse it to cut the images out
            text = payload_path(spill["name"]).read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    parsed: Any = None
    if resp.is_stream and text is not None:
        resp.stream_result = _untrusted(wire.stream_reassemble, text) or {"result": None}
        parsed = resp.stream_result.get("result")
        if not _content_encoded(resp.headers):  # offsets count raw bytes: only plain ones map to events
            resp.ttft_ms = _untrusted(ttft_compute, wire, text, rec.get("event_offsets_ms"),
                                      rec.get("offsets_base_ms"), resp.ttfb_ms)
    elif text is not None:
        parsed = json_or_none(text)
        if isinstance(parsed, dict) and b64_images_extract(rec, parsed, files):
            resp.body = json.dumps(parsed)
            if spill:
                unlink_after_commit(payload_path(spill["name"]))
                spill = None
    if isinstance(parsed, dict):
        _untrusted(usage_fill, resp, wire, rec["provider"], parsed)
        if wire.name == "replicate":
            resp.output_urls = replicate_output_urls(parsed)
    if spill:
        if spill.get("error"):
            resp.error_message = "; ".join(filter(None, [resp.error_message, spill["error"]]))
        files.append(file_row_build(file_id=file_id_derive(rec["id"], "body"), request_id=rec["request_id"],
                               response_id=rec["id"], name=spill["name"], role=BinaryFile.Role.RESPONSE_BODY,
                               content_type=spill.get("content_type") or resp.content_type,
                               size=spill["size"], sha256=spill.get("sha256", ""), ts=rec["created"]))
    if rec.get("capture_error"):
        resp.error_message = "; ".join(filter(None, [resp.error_message, rec["capture_error"]]))
    return resp


def exchange_records_write(records: Iterable[dict]) -> None:
    """Write a batch of journal records in one transaction; idempotent on replay."""
    requests, responses, files = [], [], []
    with unlinks_deferred():
        for rec in records:
            try:
                if rec.get("t") == "req":
                    requests.append(request_row(rec, files))
                elif rec.get("t") == "resp":
                    responses.append(response_row(rec, files))
            except Exception as exc:  # one bad record must not cost the batch (nor leave a gap)
                log.exception("log record %s could not be processed; kept without its body", rec.get("id"))
                row = _row_minimal(rec, exc)
                if row is not None:
                    (requests if isinstance(row, Request) else responses).append(row)
        with transaction.atomic():
            rows_insert(Request, requests)
            rows_insert(Response, responses)
            rows_insert(BinaryFile, files)
    replicate_downloads_schedule(responses)


def _row_minimal(rec: dict, exc: Exception) -> Request | Response | None:
    """A row with only the plain fields of a record whose body could not be processed.

    Keeps the exchange visible, and keeps the response's foreign key valid (a missing request
    row would make every later write of the batch fail).
    """
    try:
        if rec.get("t") == "req":
            return Request(id=rec["id"], provider=rec.get("provider", ""), endpoint=rec.get("endpoint", ""),
                           method=rec.get("method", ""), query_string=rec.get("query", ""),
                           headers=rec.get("headers", []), body_size=rec.get("body_size", 0),
                           key_fingerprint=rec.get("key_fp", ""), instance=rec.get("instance", ""),
                           gateway_key=str(rec.get("gateway_key") or "")[:160],
                           content_type=rec.get("content_type", "")[:255], created_at=epoch_datetime(rec["created"]))
        if rec.get("t") == "resp":
            status = rec.get("status")
            note = f"log record could not be processed: {type(exc).__name__}: {exc}"
            return Response(id=rec["id"], request_id=rec["request_id"],
                            status_code=status if isinstance(status, int) else None,
                            headers=rec.get("headers", []), outcome=rec.get("outcome", Outcome.COMPLETED),
                            is_error=True, duration_ms=rec.get("duration_ms"), body_size=rec.get("body_size", 0),
                            error_message="; ".join(filter(None, [rec.get("error", ""), note])),
                            created_at=epoch_datetime(rec["created"]))
    except Exception:
        log.exception("log record %s unusable", rec.get("id"))
    return None


def interrupted_mark(instance: str) -> int:
    """Give every request of a dead gateway process that has no response an 'interrupted' one."""
    now = datetime.now(timezone.utc)
    orphans = Request.objects.filter(instance=instance, response__isnull=True).values_list("id", flat=True)
    rows = [Response(request_id=rid, outcome=Outcome.INTERRUPTED, is_error=True,
                     error_message="the gateway process stopped before this exchange ended",
                     created_at=now) for rid in orphans]
    Response.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def orphans_recover(directory: Path, orphans: Callable, reader: Callable, batch: int = 500) -> int:
    """Replay the journals of dead processes into the database, then remove them."""
    import os

    replayed = 0
    for instance, path, fd in orphans(directory):
        try:
            records = reader(path)
            for i in range(0, len(records), batch):
                exchange_records_write(records[i:i + batch])
            interrupted_mark(instance)
            replayed += len(records)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return replayed
