"""Writes to the log: turns journal records into rows, files and parsed results."""

import functools
import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.backends.base.operations import BaseDatabaseOperations

from logs.models import BinaryFile, Outcome, Request, Response
from logs.payloads import (b64_images_extract, epoch_datetime, file_id_derive, file_row_build, multipart_rows_build,
                           payload_path, unlink_after_commit, unlinks_deferred)
from logs.multipart import multipart_boundary
from logs.replicate_files import replicate_downloads_schedule, replicate_output_urls
from logs.usage import ttft_compute, usage_fill, wire_get
from logs.streams import json_or_none

log = logging.getLogger(__name__)

JSON_PARSE_MAX_BYTES = 64 * 1024 * 1024
M = TypeVar("M", bound=models.Model)


def _content_encoded(headers: list) -> bool:
    """True when the answer came compressed (Content-Encoding other than identity)."""
    return any(k.lower() == "content-encoding" and v.strip().lower() not in ("", "identity")
               for k, v in headers or [])


@functools.lru_cache(maxsize=8)
def _attnames(model: type[models.Model]) -> tuple[tuple[str, models.Field], ...]:
    """(attname, field) of each concrete field, in the order Model() takes them positionally."""
    return tuple((f.attname, f) for f in model._meta.concrete_fields)


def row_new(model: type[M], values: dict[str, Any]) -> M:
    """A model instance from attname -> value, defaults for the rest.

    Positional: Model(**kwargs) costs twice as much (it checks every name for a relation or
    a property), which the log writer pays for every row.
    """
    return model(*[values[a] if a in values else f.get_default() for a, f in _attnames(model)])


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


_CONFLICT_IGNORED = {"sqlite": ("INSERT OR IGNORE INTO", ""), "postgresql": ("INSERT INTO", " ON CONFLICT DO NOTHING")}


@functools.lru_cache(maxsize=64)
def _insert_sql(model: type[models.Model], vendor: str, quote: Callable[[str], str], rows: int) -> str:
    """INSERT of `rows` rows that skips rows already there (cached: batches repeat their sizes)."""
    verb, tail = _CONFLICT_IGNORED[vendor]
    columns = ", ".join(quote(f.column) for f in model._meta.concrete_fields)
    row = f"({', '.join(['%s'] * len(model._meta.concrete_fields))})"
    return f"{verb} {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)}{tail}"


# Fields whose value Django passes to the database unchanged when it has this exact type
# (get_prep_value is str(), float() or bool() of it and no adapter applies); integers too
# where the backend does not wrap them (PostgreSQL's psycopg gets typed Int4/Int8).
_PLAIN_TYPES: dict[type[models.Field], type] = {
    models.CharField: str, models.TextField: str, models.BooleanField: bool, models.FloatField: float,
}
_PLAIN_INTEGERS: dict[type[models.Field], type] = {models.IntegerField: int, models.BigIntegerField: int}


@functools.lru_cache(maxsize=64)
def _field_plans(model: type[models.Model], ops_class: type) -> tuple[tuple[str, type | None, models.Field], ...]:
    """(attname, plain type or None, field) for each concrete field, in column order."""
    plain = dict(_PLAIN_TYPES)
    if ops_class.adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value:
        plain.update(_PLAIN_INTEGERS)
    return tuple((f.attname, plain.get(type(f)), f) for f in model._meta.concrete_fields)


def row_values(rows: list[models.Model], connection) -> list[Any]:
    """The rows' column values as Django would send them (get_db_prep_save), flattened.

    Plain values (a str for a CharField, an int for an IntegerField, None) pass through
    untouched; only the rest (JSON, dates, UUIDs, decimals) go through their field. Calling
    get_db_prep_save on every value was half of the log writer's CPU time.
    """
    plans = _field_plans(type(rows[0]), type(connection.ops))
    values: list[Any] = []
    append = values.append
    for row in rows:
        data = row.__dict__
        for attname, plain, field in plans:
            value = data[attname]
            if plain is not None and (value is None or type(value) is plain):
                append(value)
            else:
                append(field.get_db_prep_save(value, connection))
    return values


def rows_insert(model: type[models.Model], rows: list[models.Model]) -> None:
    """Insert rows, skipping any already there (a replayed journal): bulk_create(ignore_conflicts=True), cheaper.

    Cached multi-row statements, values converted by row_values; bulk_create's per-value SQL
    compilation was most of the log writer's CPU time (see the README's "Benchmark"). Not
    executemany: SQLite would release and retake the GIL for every row, and a busy event loop
    keeps the writer thread waiting for it each time. Other databases get bulk_create itself.
    """
    if not rows:
        return
    connection = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: no proxy lookup per value
    if connection.vendor not in _CONFLICT_IGNORED:
        model.objects.bulk_create(rows, ignore_conflicts=True)
        return
    size = max(1, connection.ops.bulk_batch_size(model._meta.concrete_fields, rows))
    with connection.cursor() as cursor:
        i = 0
        for count in chunk_sizes(len(rows), min(size, INSERT_ROWS_MAX)):
            chunk = rows[i:i + count]
            i += count
            sql = _insert_sql(model, connection.vendor, connection.ops.quote_name, count)
            cursor.execute(sql, row_values(chunk, connection))


# Rows per INSERT statement at most; see chunk_sizes.
INSERT_ROWS_MAX = 256


def chunk_sizes(count: int, cap: int) -> list[int]:
    """Split count rows into powers of two no larger than cap, largest first.

    Every distinct row count is a statement of its own in the caches (ours and SQLite's
    prepared statements, large for a few hundred rows): with any count up to the batch size,
    the ingest process held ~6 MiB more after 6 s of load. Powers of two keep it to a few.
    """
    cap = 1 << (max(cap, 1).bit_length() - 1)
    sizes = [cap] * (count // cap)
    rest = count % cap
    while rest:
        part = 1 << (rest.bit_length() - 1)
        sizes.append(part)
        rest -= part
    return sizes


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
