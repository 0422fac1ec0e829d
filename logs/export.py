"""Exports exchanges as JSONL, JSON or CSV, streaming: memory stays flat however many rows.

Every column of requests, responses and binary_files is exported, read from the models: a
field added to a model is exported with no change here (tests/logs/test_export.py checks it).
"""

import csv
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import models
from django.db.models import QuerySet
from django.db.models.fields.files import FieldFile

from logs.models import Request, Response
from logs.redaction.redact import headers_safe, query_mask
from wire.jsonutil import text_valid

FORMATS = ("jsonl", "json", "csv")
CHUNK_ROWS = 500  # rows fetched (and files prefetched) per database round trip
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "json": "application/json", "csv": "text/csv; charset=utf-8"}
# Columns --no-bodies leaves out: they can hold megabytes per row.
BODY_COLUMNS = frozenset({"body", "stream_result"})
# Spreadsheets run a cell that starts with one of these as a formula (OWASP, "CSV Injection"); the
# log holds whatever clients and upstreams sent, so no text cell may start with one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class CsvColumn(NamedTuple):
    """Where a CSV column's cell comes from in an exchange record."""

    name: str
    part: str  # "request", "response" or "files"
    key: str  # the column in that part
    as_json: bool  # JSON values (headers, stream results, offsets, files) are written as JSON text


def _csv_layout() -> list[CsvColumn]:
    """One CSV row per exchange: the request's columns, then the response's, then its files as JSON.

    A name both tables have is prefixed with its table (request_body, response_body); the
    response's request_id is the request's id, which is already the row's request_id.
    """
    req, resp = Request._meta.concrete_fields, Response._meta.concrete_fields
    shared = {f.column for f in req} & {f.column for f in resp}
    layout = [CsvColumn(f"request_{f.column}" if f.column in shared else f.column, "request", f.column,
                        isinstance(f, models.JSONField)) for f in req]
    layout += [CsvColumn(f"response_{f.column}" if f.column in shared else f.column, "response", f.column,
                         isinstance(f, models.JSONField)) for f in resp if f.column != "request_id"]
    return [*layout, CsvColumn("files", "files", "", True)]


CSV_LAYOUT = _csv_layout()
CSV_COLUMNS = [c.name for c in CSV_LAYOUT]


def _value(obj: models.Model, field: models.Field) -> Any:
    """One column's value as JSON-ready data."""
    value = getattr(obj, field.attname)
    if field.column == "headers":  # rows written before a masking rule existed are masked on the way out
        key = getattr(obj, "gateway_key", "")  # the label that stands for a gateway key's secret is kept
        return headers_safe(value, labels=(key,) if key else ())
    if field.column == "query_string":  # the same, for a parameter listed after the row was written
        return query_mask(value, logged=True)
    if field.column == "forwarded" and isinstance(value, dict):  # the same, as the admin
        masked = {"headers": headers_safe(value["headers"])} if "headers" in value else {}
        if value.get("query"):
            masked["query"] = query_mask(str(value["query"]), logged=True)
        return {**value, **masked}
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):  # fixed-point: str() writes a cost under a millionth as "1.2E-7", and 0 as "0E-8"
        return format(value, "f")
    if isinstance(value, FieldFile):
        return value.name
    return value


def _row(obj: models.Model, bodies: bool) -> dict[str, Any]:
    """Every column of one row by column name; without bodies those columns are never read (they are deferred),
    and the body a policy step forwarded upstream in place of the client's is left out of `forwarded`."""
    row = {f.column: _value(obj, f) for f in obj._meta.concrete_fields if bodies or f.column not in BODY_COLUMNS}
    if not bodies and isinstance(row.get("forwarded"), dict):
        row["forwarded"] = {k: v for k, v in row["forwarded"].items() if k != "body"}
    return row


def exchange_record(req: Request, bodies: bool = True) -> dict[str, Any]:
    """One exchange as a JSON-ready dict: its request row, response row (None while open) and file rows."""
    try:
        resp = req.response
    except Response.DoesNotExist:
        resp = None
    return {"request": _row(req, bodies), "response": _row(resp, bodies) if resp is not None else None,
            "files": [_row(f, bodies) for f in req.files.all()]}


def csv_cell_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made text by a leading ' (OWASP's advice).

    Only text is changed: numbers the gateway itself wrote (status, sizes, tokens) stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_row(rec: dict[str, Any]) -> list[Any]:
    """An exchange record flattened to CSV_COLUMNS, every cell formula-safe."""
    cells = []
    for col in CSV_LAYOUT:
        value = rec["files"] if col.part == "files" else (rec[col.part] or {}).get(col.key)
        if col.as_json and value is not None:
            value = json.dumps(value, ensure_ascii=False)
        cells.append(csv_cell_safe(value))
    return cells


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
    # text_valid: a lone surrogate a row kept (SQLite keeps "\\ud800" in a JSON column as sent) would stop
    # the export at that row, since no UTF-8 writer takes it; written as U+FFFD instead.
    records = _rows(qs, bodies, tally)
    if fmt == "jsonl":
        for rec in records:
            yield text_valid(json.dumps(rec, ensure_ascii=False) + "\n")
    elif fmt == "json":
        yield "["
        for i, rec in enumerate(records):
            yield text_valid(("," if i else "") + "\n" + json.dumps(rec, ensure_ascii=False))
        yield "\n]\n"
    else:
        yield from map(text_valid, _csv_lines(records))


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
