"""Exports exchanges as JSONL, JSON or CSV, streaming: memory stays flat however many rows."""

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.db.models import QuerySet

from logs.models import Request, Response
from logs.redaction.redact import headers_safe

FORMATS = ("jsonl", "json", "csv")
CHUNK_ROWS = 500  # rows fetched (and files prefetched) per database round trip
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "json": "application/json", "csv": "text/csv; charset=utf-8"}

CSV_COLUMNS = [
    "request_id", "created_at", "provider", "method", "endpoint", "query_string", "model", "stream_requested",
    "client_addr", "key_fingerprint", "gateway_key", "request_content_type", "request_body_size", "request_headers",
    "request_body", "response_id", "status_code", "outcome", "is_error", "error_message", "response_model",
    "is_stream", "duration_ms", "ttfb_ms", "input_tokens", "output_tokens", "cached_tokens",
    "reasoning_tokens", "total_tokens", "cost_usd", "response_content_type", "response_body_size",
    "response_headers", "response_body", "stream_result", "response_created_at", "files",
]


def _when(value) -> str | None:
    """ISO 8601 text of a datetime."""
    return value.isoformat() if value else None


def _response(resp: Response | None, bodies: bool) -> dict[str, Any] | None:
    """The response part of an exchange record."""
    if resp is None:
        return None
    out = {
        "id": resp.id.hex, "status_code": resp.status_code, "outcome": resp.outcome, "is_error": resp.is_error,
        "error_message": resp.error_message, "model": resp.model, "is_stream": resp.is_stream,
        "duration_ms": resp.duration_ms, "ttfb_ms": resp.ttfb_ms, "input_tokens": resp.input_tokens,
        "output_tokens": resp.output_tokens, "cached_tokens": resp.cached_tokens,
        "reasoning_tokens": resp.reasoning_tokens, "total_tokens": resp.total_tokens,
        "cost_usd": str(resp.cost_usd) if resp.cost_usd is not None else None,
        "content_type": resp.content_type, "body_size": resp.body_size,
        "headers": headers_safe(resp.headers), "event_offsets_ms": resp.event_offsets_ms,
        "created_at": _when(resp.created_at),
    }
    if bodies:
        out["body"] = resp.body
        out["stream_result"] = resp.stream_result
    return out


def exchange_record(req: Request, bodies: bool = True) -> dict[str, Any]:
    """One exchange as a JSON-ready dict: request, response and file references."""
    try:
        resp = req.response
    except Response.DoesNotExist:
        resp = None
    record = {
        "request": {
            "id": req.id.hex, "created_at": _when(req.created_at), "provider": req.provider,
            "method": req.method, "endpoint": req.endpoint, "query_string": req.query_string,
            "model": req.model, "stream_requested": req.stream_requested, "client_addr": req.client_addr,
            "key_fingerprint": req.key_fingerprint, "gateway_key": req.gateway_key, "content_type": req.content_type,
            "body_size": req.body_size, "headers": headers_safe(req.headers),
        },
        "response": _response(resp, bodies),
        "files": [{"id": f.id.hex, "role": f.role, "file_path": f.file.name, "content_type": f.content_type,
                   "size": f.size, "sha256": f.sha256, "field_name": f.field_name, "filename": f.filename,
                   "response_id": f.response_id.hex if f.response_id else None} for f in req.files.all()],
    }
    if bodies:
        record["request"]["body"] = req.body
    return record


def _csv_row(rec: dict[str, Any]) -> list[Any]:
    """An exchange record flattened to the CSV columns (nested values as JSON text)."""
    req, resp = rec["request"], rec["response"] or {}
    as_json = lambda v: json.dumps(v, ensure_ascii=False) if v is not None else ""  # noqa: E731
    return [
        req["id"], req["created_at"], req["provider"], req["method"], req["endpoint"], req["query_string"],
        req["model"], req["stream_requested"], req["client_addr"], req["key_fingerprint"], req["gateway_key"],
        req["content_type"],
        req["body_size"], as_json(req["headers"]), req.get("body"), resp.get("id"), resp.get("status_code"),
        resp.get("outcome"), resp.get("is_error"), resp.get("error_message"), resp.get("model"),
        resp.get("is_stream"), resp.get("duration_ms"), resp.get("ttfb_ms"), resp.get("input_tokens"),
        resp.get("output_tokens"), resp.get("cached_tokens"), resp.get("reasoning_tokens"),
        resp.get("total_tokens"), resp.get("cost_usd"), resp.get("content_type"), resp.get("body_size"),
        as_json(resp.get("headers")), resp.get("body"), as_json(resp.get("stream_result")),
        resp.get("created_at"), as_json([f["file_path"] for f in rec["files"]]),
    ]


def _rows(qs: QuerySet, bodies: bool, tally: list[int] | None) -> Iterator[dict[str, Any]]:
    """Exchange records, fetched CHUNK_ROWS at a time (files prefetched per chunk)."""
    for req in qs.iterator(chunk_size=CHUNK_ROWS):
        if tally is not None:
            tally[0] += 1
        yield exchange_record(req, bodies)


def export_chunks(qs: QuerySet, fmt: str, bodies: bool = True, tally: list[int] | None = None) -> Iterator[str]:
    """The export as text pieces, one exchange (or header) at a time; tally[0] counts exchanges."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    records = _rows(qs, bodies, tally)
    if fmt == "jsonl":
        for rec in records:
            yield json.dumps(rec, ensure_ascii=False) + "\n"
    elif fmt == "json":
        yield "["
        for i, rec in enumerate(records):
            yield ("," if i else "") + "\n" + json.dumps(rec, ensure_ascii=False)
        yield "\n]\n"
    else:
        yield from _csv_lines(records)


def _csv_lines(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV text, every field quoted (bodies hold commas, quotes and newlines), rows CRLF-ended.

    It starts with a UTF-8 byte order mark: without it Excel reads UTF-8 as a legacy code page.
    """
    buf = io.StringIO()
    buf.write("\ufeff")
    writer = csv.writer(buf, quoting=csv.QUOTE_ALL)
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        writer.writerow(_csv_row(rec))
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():
        yield buf.getvalue()


def export_write(qs: QuerySet, fmt: str, out, bodies: bool = True) -> int:
    """Write an export to a text file object; returns the number of exchanges."""
    tally = [0]
    for piece in export_chunks(qs, fmt, bodies, tally):
        out.write(piece)
    return tally[0]
