"""Turns journal records into log rows: parsed bodies, usage, cost, stream results and files.

Runs in the ingest process, never on the proxy's event loop. What a provider's traffic means
comes from its module in `providers`; this module only applies it.
"""

import dataclasses
import html
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import unquote
from uuid import UUID

from django.conf import settings
from django.db import transaction

from logs.models import BinaryFile, Frame, Request, Response
from logs.outcomes import Outcome
from logs.pipeline.bulk import row_new, rows_insert
from logs.pipeline.output_files import output_files_schedule
from logs.pipeline.payloads import (embedded_store, epoch_datetime, file_row, multipart_store, raw_store,
                                    spooled_store, spooled_text, store_wait_note, unlink_after_commit,
                                    unlinks_deferred)
from logs.pipeline.spool import spool_path
from logs.pricing import cost_compute
from logs.records import FileRecord, FileRef, FrameRecord, Record, RequestRecord, ResponseRecord
from logs.redaction.echoes import echoes_mask
from logs.retention import files_delete
from logs.storage import PayloadStoreUnavailable
from logs.tags import tags_from_headers, tags_merge
from providers import COUNT_FIELDS, USAGE_FIELDS, Provider, Usage, registry
from providers.base import usage_counts
from wire.jsonutil import json_depth, json_or_none, text_valid
from wire.multipart import multipart_boundary
from wire.sse import sse_events

log = logging.getLogger(__name__)

JSON_PARSE_MAX_BYTES = 64 * 1024 * 1024  # a larger JSON answer is stored as a file without being parsed
# Parsed values nested deeper than this are not stored as JSON (the stream result, a rewritten
# answer): every reader would have to recurse through them. The text they came from is kept.
JSON_STORE_DEPTH = 64
# What a text error page says, for the list: its title (or first heading), else its first words.
_PAGE_TITLE = re.compile(r"<title[^>]*>(.*?)</title>|<h1[^>]*>(.*?)</h1>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
TEXT_ERROR_SCAN = 4096  # a page's title is near its top
TEXT_ERROR_CHARS = 200
STREAM_TAIL_CHARS = 4096  # a stream's final event is in its last bytes
NOT_JSON_NOTE = "the answer is labelled JSON but is not valid JSON (kept as received)"
STREAM_CUT_NOTE = "upstream ended the stream before its final event: the answer may be incomplete"


def _notes_join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


_cleaning = {"on": False}  # values_cleaned(): a record is being written again, its values made storable


@contextmanager
def values_cleaned() -> Iterator[None]:
    """Write rows with the values read from JSON made storable (_storable): the retry of a record
    whose row failed (walking every value of every record cost about a tenth of the ingest's time)."""
    _cleaning["on"] = True
    try:
        yield
    finally:
        _cleaning["on"] = False


def _untrusted(parse: Callable, *args: Any) -> Any:
    """Run a provider's reader over upstream data; a malformed answer leaves the derived fields NULL."""
    try:
        found = parse(*args)
        return _storable(found) if _cleaning["on"] else found
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError):
        log.warning("could not read %s from an upstream answer; left empty", getattr(parse, "__name__", parse))
        return None


def _storable(value: Any) -> Any:
    """A value read from parsed JSON with the characters no database column takes replaced (U+FFFD):
    a NUL, and a lone surrogate ("\\ud800" is valid JSON). Written as they were, they failed the
    row, and the exchange was kept without its body. The short values (models, users, metadata, error
    messages) always go through it: a NUL that SQLite would take made a model the admin's filters cannot
    ask for (they refuse a NUL)."""
    if isinstance(value, str):
        if value.isascii() and "\x00" not in value:
            return value
        return text_valid(value).replace("\x00", "\ufffd")
    if isinstance(value, (list, tuple)):
        return type(value)(_storable(v) for v in value)
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _storable(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def request_row(rec: RequestRecord, provider: Provider, files: list[BinaryFile]) -> Request:
    """The Request row (and its files) of a request record."""
    req = row_new(Request, {
        "id": rec.id, "provider": rec.provider, "endpoint": rec.endpoint, "method": rec.method,
        "query_string": rec.query, "headers": rec.headers, "body": rec.body, "body_size": rec.body_size,
        "content_type": rec.content_type[:255], "client_addr": rec.client[:64], "key_fingerprint": rec.key_fp,
        "gateway_key": rec.gateway_key[:160], "instance": rec.instance, "created_at": epoch_datetime(rec.created),
    })
    text = req.body
    if rec.body_file is not None and multipart_boundary(rec.content_type):
        req.body = text = multipart_store(rec, files)
    elif rec.body_file is not None:
        ref = rec.body_file
        if "json" in rec.content_type.lower() and ref.size <= JSON_PARSE_MAX_BYTES and not ref.error:
            text = spooled_text(ref)  # a large JSON request names its model, stream and user like a small one
        missing = raw_store(rec, files)
        if missing:
            log.warning("request %s: %s", rec.id, missing)
    payload = json_or_none(text) if text else None
    if isinstance(payload, dict) and isinstance(payload.get("fields"), dict) and rec.body_file is not None \
            and multipart_boundary(rec.content_type):
        payload = payload["fields"]  # a multipart form: its fields name the model
    path = unquote(rec.endpoint)  # stored as sent; read decoded (a client may encode the ":" of :generateContent)
    req.model = _storable(_untrusted(provider.request_model, path, payload))
    if req.model is None and any(str(k).lower() == "upgrade" and str(v).lower() == "websocket" for k, v in rec.headers):
        req.model = _storable(_untrusted(provider.realtime_model, path, rec.query))  # a realtime session's
    req.stream_requested = bool(_untrusted(provider.stream_requested, path, payload))
    _tags_set(req, rec, _untrusted(provider.request_tags, path, payload))
    return req


def _tags_set(req: Request, rec: RequestRecord, body_tags=None) -> None:
    """End user, session and metadata: the gateway's headers, completed by the provider's body fields."""
    tags = tags_merge(tags_from_headers(rec.headers), body_tags)
    req.end_user, req.session_id, req.metadata = _storable((tags.user, tags.session, tags.metadata or None))


def _stream_read(resp: Response, provider: Provider, text: str, offsets: list | None,
                 prints: list | None = None) -> Any:
    """Reassemble a stream into resp.stream_result and time its first content event; the result.

    A credential the stream spelled out across its events is whole only here: masked (prints)."""
    events = [(e.name, json_or_none(e.data)) for e in sse_events(text)]
    result = _untrusted(provider.stream_reassemble, events)
    if json_depth(result, JSON_STORE_DEPTH) > JSON_STORE_DEPTH:
        resp.stream_result = {"events": len(events), "result": None,
                              "note": f"the reassembled answer nests deeper than {JSON_STORE_DEPTH} levels: not stored "
                                      "(every event is in the body)"}
    else:
        result = echoes_mask(result, prints)
        resp.stream_result = {"events": len(events), "result": result}
    for i, (name, payload) in enumerate(events[: len(offsets or [])]):
        if _untrusted(provider.event_has_content, name, payload):
            # Offsets are rounded: never report content before the first byte.
            resp.ttft_ms = max(float(offsets[i]), resp.ttfb_ms or 0.0)
            break
    return result


def _json_labelled(content_type: str) -> bool:
    """Whether a content type says the body is one JSON document (not NDJSON, whose lines each are)."""
    mime = content_type.partition(";")[0].strip().lower()
    return mime.endswith("/json") or mime.endswith("+json")


def _text_error(text: str) -> str:
    """What a non-JSON error answer says, in one line: an HTML page's title or first heading, else its text."""
    head = text[:TEXT_ERROR_SCAN]
    found = _PAGE_TITLE.search(head)
    said = (found.group(1) or found.group(2)) if found else head
    return " ".join(html.unescape(_TAG.sub(" ", said)).split())[:TEXT_ERROR_CHARS]


def _usage_fill(resp: Response, provider: Provider, answer: Any) -> None:
    """The answering model, token counts and cost (priced as of the exchange's start), from a parsed answer."""
    usage = _untrusted(provider.usage, answer)
    if usage is not None:
        _usage_set(resp, provider, usage)


def _usage_set(resp: Response, provider: Provider, usage: Usage) -> None:
    """Model, token counts and cost (priced as of the exchange's start) on the row."""
    resp.answer_usage = usage  # not a column: _model_as_requested prices it again, its audio or image tokens too
    resp.model = _storable(usage.model)
    for name in USAGE_FIELDS:
        setattr(resp, name, getattr(usage, name))
    price = cost_compute(provider, usage, at=resp.created_at)
    resp.cost_usd, resp.price_source = price.cost, price.source
    if price.note not in resp.error_message:  # once: an answer naming no model is priced again (_model_as_requested)
        resp.error_message = _notes_join(resp.error_message, price.note)


def _model_as_requested(resp: Response, provider: Provider, batch: list[Request]) -> None:
    """An answer that reports usage but names no model (OpenAI's images) is priced, and labelled, by the model
    its request asked for upstream: the forwarded one when a step changed it, else the request row's (from
    this batch's rows, else the database)."""
    if resp.model is not None or (resp.input_tokens is None and resp.output_tokens is None):
        return
    model = resp.forwarded.get("model") if isinstance(resp.forwarded, dict) else None
    model = model or next((r.model for r in batch if str(r.id) == str(resp.request_id)), None)
    if model is None:
        model = Request.objects.filter(pk=resp.request_id).values_list("model", flat=True).first()
    if model:
        # The answer's usage whole: its counts priced apart (a transcription's audio tokens, an image's image
        # tokens, several times text) and its service tier, as reprice_logs prices it.
        _usage_set(resp, provider, dataclasses.replace(resp.answer_usage, model=model))
        if resp.cache_hit:  # a replay priced only now: that price is what it saved, it cost nothing
            resp.cost_saved_usd, resp.cost_usd = resp.cost_usd, Decimal(0)


def response_row(rec: ResponseRecord, provider: Provider, files: list[BinaryFile]) -> Response:
    """The Response row (and its files) of a response record."""
    resp = row_new(Response, {
        "id": rec.id, "request_id": rec.request_id, "status_code": rec.status, "headers": rec.headers,
        "body": rec.body, "body_size": rec.body_size, "content_type": rec.content_type[:255],
        "is_stream": rec.is_stream, "event_offsets_ms": rec.event_offsets_ms, "duration_ms": rec.duration_ms,
        "ttfb_ms": rec.ttfb_ms, "outcome": rec.outcome, "error_message": _notes_join(rec.error, rec.notes),
        "created_at": epoch_datetime(rec.created), "usage_injected": rec.usage_injected, "steps": rec.steps,
        "forwarded": rec.forwarded, "cache_hit": rec.cache_hit, "cache_source": rec.cache_source or None,
        "held_ms": rec.held_ms,
    })
    resp.is_error = bool(rec.error) or rec.outcome != Outcome.COMPLETED or (rec.status or 0) >= 400
    ref = rec.body_file
    text = resp.body
    if ref is not None and "json" in resp.content_type and ref.size <= JSON_PARSE_MAX_BYTES and not ref.error:
        text = spooled_text(ref)  # a big JSON answer (usually base64 images): read to cut the images out
    answer: Any = None
    if resp.is_stream and text is not None:
        answer = _stream_read(resp, provider, text, rec.event_offsets_ms, rec.echo_prints)
        _stream_cut_note(rec, resp, provider, text, answer)
    elif text is not None:
        answer = json_or_none(text)
        if answer is None:
            _not_json_note(rec, resp, text)
        if _embedded_files_take(rec, resp, provider, answer, files) and ref is not None:
            unlink_after_commit(spool_path(ref.spool))  # the body is the rewritten answer now
            ref = None
    if rec.usage:  # a realtime session: its responses' usage, summed as they passed (kept whole: its audio
        # tokens price it, and re-pricing needs them again)
        _usage_set(resp, provider, usage_counts(rec.usage.get("model"), rec.usage))
        resp.stream_result = {"session_usage": {k: v for k, v in rec.usage.items() if k in COUNT_FIELDS}}
    if isinstance(answer, (dict, list)) and not rec.error:
        # The upstream's own error message, so a list of failures says what failed without opening each;
        # a stream that began 200 and then sent an error event (OpenRouter, Anthropic, Gemini's, also as one
        # JSON array) failed too, and so did work a 2xx answer reports failed (a Replicate prediction).
        read = provider.error_text if (rec.status or 0) >= 400 or resp.is_stream else provider.failure_text
        if said := _storable(_untrusted(read, answer)):
            resp.error_message = _notes_join(said, resp.error_message)
            resp.is_error = True
    elif answer is None and text and (rec.status or 0) >= 400 and not rec.error and not resp.is_stream:
        # A proxy in front of the server (nginx's 502 page before Ollama or vLLM, a balancer's 503) answers in
        # HTML or plain text, which no provider's error shape reads: the list showed the failure with no words.
        if said := _storable(_text_error(text)):
            resp.error_message = _notes_join(said, resp.error_message)
    if isinstance(answer, (dict, list)):  # a list: Gemini's stream without alt=sse, its chunks in one array
        _usage_fill(resp, provider, answer)
    if isinstance(answer, dict):
        resp.output_urls = _untrusted(provider.output_urls, answer) or []
        resp.output_provider = rec.provider
    if rec.cache_hit:
        _cache_saving(rec, resp)
    if ref is not None:
        _body_file_store(rec, resp, ref, files)
    if rec.forwarded_body_file is not None:
        _forwarded_store(rec, resp, files)
    return resp


def _stream_cut_note(rec: ResponseRecord, resp: Response, provider: Provider, text: str, answer: Any) -> None:
    """A stream the upstream closed cleanly but mid-answer (provider.stream_cut): the relay saw no fault and the
    client got every byte sent; logged as a stream it broke off, not as a whole answer."""
    if rec.outcome == Outcome.COMPLETED and not rec.cache_hit and (rec.status or 0) < 400 \
            and _untrusted(provider.stream_cut, text[-STREAM_TAIL_CHARS:].encode(), answer):
        resp.outcome, resp.is_error = Outcome.UPSTREAM_ERROR, True
        resp.error_message = _notes_join(resp.error_message, STREAM_CUT_NOTE)


def _not_json_note(rec: ResponseRecord, resp: Response, text: str) -> None:
    """A success labelled JSON that does not parse (a proxy's truncated body, an HTML page sent as JSON): relayed
    as it came, but not a success to read."""
    if (rec.status or 0) < 400 and not rec.error and _json_labelled(resp.content_type) \
            and text.strip() not in ("", "null"):
        resp.error_message = _notes_join(resp.error_message, NOT_JSON_NOTE)


def _embedded_files_take(rec: ResponseRecord, resp: Response, provider: Provider, answer: Any,
                         files: list[BinaryFile]) -> bool:
    """Move the files an answer embeds (base64 images) to the store, the row's body becoming the answer without
    them; True when it did (the body file, if any, is then not the body)."""
    found = _untrusted(provider.embedded_files, answer) or []
    if found and json_depth(answer, JSON_STORE_DEPTH) > JSON_STORE_DEPTH:
        found = []  # rewriting it would mean recursing through it: the answer is stored as it came
        resp.error_message = _notes_join(resp.error_message, "embedded files left in place: answer nested too deep")
    if found and (missing := embedded_store(found, provider=rec.provider, owner=rec.id,
                                            request_id=rec.request_id, created=rec.created, files=files)):
        resp.error_message = _notes_join(resp.error_message, missing)
        return False
    if found:
        resp.body = json.dumps(answer)
        return True
    return False


def _cache_saving(rec: ResponseRecord, resp: Response) -> None:
    """A replay from the response cache: nothing was paid for; what the original cost was saved."""
    resp.cost_saved_usd, resp.cost_usd = resp.cost_usd, Decimal(0)
    if resp.cost_saved_usd is None and resp.total_tokens is None and rec.cache_source:
        # The replayed body carries no usage (a stream whose usage STREAM_USAGE=inject hid from the
        # client): the original's row has it, once ingested (by now, unless in this batch). Its tokens
        # too: a replay's count toward a key's tokens per minute (docs/cache.md).
        original = (Response.objects.filter(request_id=rec.cache_source)
                    .values("cost_usd", "model", *USAGE_FIELDS).first())
        if original is not None:
            resp.cost_saved_usd, resp.model = original["cost_usd"], resp.model or original["model"]
            for name in USAGE_FIELDS:
                if getattr(resp, name) is None:
                    setattr(resp, name, original[name])


def _body_file_store(rec: ResponseRecord, resp: Response, ref: FileRef, files: list[BinaryFile]) -> None:
    """Move the answer's spooled body into the payload store, as a file row of the response."""
    content_type = ref.content_type or resp.content_type
    name, missing = spooled_store(ref, provider=rec.provider, owner=rec.id, label="body", created=rec.created,
                                  content_type=content_type)
    if name:
        files.append(file_row(owner=rec.id, label="body", request_id=rec.request_id, response_id=rec.id,
                              name=name, role=BinaryFile.Role.RESPONSE_BODY, content_type=content_type,
                              size=ref.size, sha256=ref.sha256, created=rec.created))
    resp.error_message = _notes_join(resp.error_message, ref.error, missing)


def _forwarded_store(rec: ResponseRecord, resp: Response, files: list[BinaryFile]) -> None:
    """The body a policy step sent upstream instead of the client's, kept as a FORWARDED_BODY file."""
    ref = rec.forwarded_body_file
    name, missing = spooled_store(ref, provider=rec.provider, owner=rec.id, label="forwarded", created=rec.created,
                                  content_type=ref.content_type)
    if name:
        files.append(file_row(owner=rec.id, label="forwarded", request_id=rec.request_id, response_id=rec.id,
                              name=name, role=BinaryFile.Role.FORWARDED_BODY, content_type=ref.content_type,
                              size=ref.size, sha256=ref.sha256, created=rec.created))
    resp.error_message = _notes_join(resp.error_message, ref.error, missing)


def _started(created: float) -> datetime:
    """A record's start; the time of writing when no datetime holds it (a journal line gone wrong: NaN, year
    10000), so the exchange is still logged. Raised here, the batch's remaining records went unwritten too."""
    try:
        return epoch_datetime(created)
    except (TypeError, ValueError, OverflowError, OSError):
        return datetime.now(timezone.utc)


def _row_minimal(rec: Record, exc: Exception) -> Request | Response:
    """A row with only the plain fields of a record whose body could not be processed.

    Keeps the exchange visible, and keeps the response's foreign key valid (a missing request
    row would make every later write of the batch fail).
    """
    note = f"log record could not be processed: {type(exc).__name__}: {exc}"
    if isinstance(rec, RequestRecord):
        req = Request(id=rec.id, provider=rec.provider, endpoint=rec.endpoint[:1024], method=rec.method[:16],
                      query_string=rec.query, headers=rec.headers, body_size=rec.body_size,
                      key_fingerprint=rec.key_fp, instance=rec.instance, gateway_key=rec.gateway_key[:160],
                      content_type=rec.content_type[:255], created_at=_started(rec.created))
        try:
            _tags_set(req, rec)
        except (TypeError, ValueError, AttributeError):  # headers as odd as the body: leave the tags empty
            pass
        return req
    return Response(id=rec.id, request_id=rec.request_id, status_code=rec.status, headers=rec.headers,
                    outcome=rec.outcome, is_error=True, duration_ms=rec.duration_ms, body_size=rec.body_size,
                    error_message=_notes_join(rec.error, rec.notes, note), created_at=_started(rec.created))


def records_write_minimal(records: list[Record], exc: Exception) -> None:
    """Write records with only their plain fields (their bodies could not be stored)."""
    rows = [_row_minimal(rec, exc) for rec in records if isinstance(rec, (RequestRecord, ResponseRecord))]
    with transaction.atomic():
        rows_insert(Request, [r for r in rows if isinstance(r, Request)])
        rows_insert(Response, [r for r in rows if isinstance(r, Response)])


def frame_row(rec: FrameRecord) -> Frame:
    """The row of one realtime frame (its audio and binary bytes are in the session's files)."""
    event = json_or_none(rec.text) if rec.text and rec.text[:1] == "{" else None
    kind = event.get("type") if isinstance(event, dict) else rec.event_type
    text = rec.text is not None or rec.file_key.startswith("text-")  # a text frame too large for its row: in a file
    return row_new(Frame, {
        "request_id": rec.id, "seq": rec.seq, "direction": rec.direction[:8], "offset_ms": rec.at_ms,
        "kind": "text" if text else "binary", "event_type": kind[:128] if isinstance(kind, str) else "",
        "size": rec.size, "text": rec.text, "file_key": rec.file_key[:64], "file_offset": rec.file_offset,
    })


def session_file_row(rec: FileRecord, files: list[BinaryFile]) -> None:
    """A file a realtime session completed (an audio track, its binary frames), moved into the store."""
    ref = rec.file
    name, missing = spooled_store(ref, provider=rec.provider, owner=rec.id, label=rec.key, created=rec.created,
                                  content_type=ref.content_type)
    if not name:
        log.warning("session %s: %s", rec.id, missing)
        return
    role = (BinaryFile.Role.SESSION_FRAMES if rec.key.startswith(("binary-", "text-"))
            else BinaryFile.Role.SESSION_AUDIO)
    files.append(file_row(owner=rec.id, label=rec.key, request_id=rec.id, response_id=None, name=name, role=role,
                          content_type=ref.content_type, size=ref.size, sha256=ref.sha256, created=rec.created,
                          field_name=rec.key, filename=f"{rec.key}.wav" if ref.content_type == "audio/wav" else ""))


def _store_wait_noted(responses: list[Response], files: list[BinaryFile]) -> None:
    """Exchanges with files that waited for the payload store say so in error_message."""
    with_files = {UUID(str(f.request_id)) for f in files}
    for resp in responses:
        if UUID(str(resp.request_id)) in with_files:
            note = store_wait_note(resp.created_at + timedelta(milliseconds=resp.duration_ms or 0))
            if note:
                resp.error_message = _notes_join(resp.error_message, note)


_reported: OrderedDict[str, None] = OrderedDict()  # records whose failure the console has shown, newest last


def _first_report(record_id: str) -> bool:
    """Whether this is the first time this process reports the record's failure (the last 1,000 remembered)."""
    if record_id in _reported:
        return False
    _reported[record_id] = None
    if len(_reported) > 1000:
        _reported.popitem(last=False)
    return True


def _uuid(value: Any) -> UUID | None:
    """A row's id as a UUID; None for one that is not (its row fails on its own, as before)."""
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _deleted_in_flight_dropped(requests: list[Request], responses: list[Response], files: list[BinaryFile],
                               frames: list[Frame]) -> tuple[list[Response], list[BinaryFile], list[Frame]]:
    """The rows of the batch without those of exchanges deleted while in flight (the admin deletes any
    exchange), and those exchanges' files, already stored, deleted from the store.

    Their rows would fail the foreign key on the missing request and be skipped (ingest.batch_write),
    leaving the answer's files in the store with no row naming them, which no prune ever finds.
    Only a batch with stored files asks the database: rows of such an exchange that left no file are
    skipped as before, and one query a batch cost the writer 14% of its rate (docs/benchmark.md).
    """
    stored = [f for f in files if f.file.name]
    if not stored:
        return responses, files, frames
    here = {_uuid(r.id) for r in requests}
    asked = {_uuid(f.request_id) for f in stored} - here - {None}
    if not asked:
        return responses, files, frames
    gone = asked - set(Request.objects.filter(pk__in=asked).values_list("pk", flat=True))
    if not gone:
        return responses, files, frames

    def kept(rows: list) -> list:
        return [r for r in rows if _uuid(r.request_id) not in gone]
    names = [f.file.name for f in files if _uuid(f.request_id) in gone and f.file.name]
    log.warning("log records of %d exchange(s) deleted while in flight were dropped, with %d stored file(s)",
                len(gone), len(names))
    files_delete(names)
    return kept(responses), kept(files), kept(frames)


def records_write(records: list[Record]) -> None:
    """Write a batch of journal records in one transaction; idempotent on replay."""
    requests, responses, files, frames = [], [], [], []
    providers = registry(settings.GATEWAY_PROVIDERS)
    with unlinks_deferred():
        for rec in records:
            provider = providers.get(rec.provider)
            try:
                if isinstance(rec, RequestRecord):
                    requests.append(request_row(rec, provider, files))
                elif isinstance(rec, ResponseRecord):
                    resp = response_row(rec, provider, files)
                    _model_as_requested(resp, provider, requests)
                    responses.append(resp)
                elif isinstance(rec, FrameRecord):
                    frames.append(frame_row(rec))
                else:
                    session_file_row(rec, files)
            except PayloadStoreUnavailable:
                raise  # nothing is wrong with the record: the whole batch waits for the store (ingest.py)
            except Exception as exc:  # one bad record must not cost the batch (nor leave a gap)
                if _first_report(rec.id):  # a batch retried (the database locked, a full disk) reports it once
                    log.exception("log record %s could not be processed; kept without its body", rec.id)
                if isinstance(rec, (RequestRecord, ResponseRecord)):
                    (requests if isinstance(rec, RequestRecord) else responses).append(_row_minimal(rec, exc))
        responses, files, frames = _deleted_in_flight_dropped(requests, responses, files, frames)
        _store_wait_noted(responses, files)
        with transaction.atomic():
            rows_insert(Request, requests)
            rows_insert(Response, responses)
            rows_insert(BinaryFile, files)
            rows_insert(Frame, frames)
    output_files_schedule(responses)
