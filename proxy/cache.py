"""The response cache's policy (CacheStep in proxy/steps.py): replay a stored answer, or store a new one.

Off unless asked for: `X-Gateway-Cache: <ttl seconds>` (or CACHE_DEFAULT_TTL) reads an answer at
most that old and stores a new one for that long; `no-store` neither reads nor writes;
`refresh=<ttl>` skips the read and stores. Requests match on provider, method, upstream path,
query, the body as the upstream reads it (decoded, then JSON canonically, anything else byte for
byte), Accept-Encoding (a stored body is replayed in its stored encoding), the headers the provider
says change an answer (`answer_headers`: anthropic-beta, OpenAI-Project...) and the scope: every
credential that goes upstream (what the log masks) and the gateway key. A hit is its own exchange
of the log (cache_hit, cache_source), replaying the original's status, headers and body bytes,
chunk by chunk; only complete 2xx answers are stored.
The entries live in proxy/cache_store.py; docs/cache.md describes the whole contract.
"""

import asyncio
import hashlib
import json
import re
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl

import orjson
from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse

from keys.store import StoreUnavailable
from logs.outcomes import Outcome
from logs.pipeline.capture import BodyCapture
from logs.records import ResponseRecord
from logs.redaction.redact import header_is_secret, param_is_secret
from proxy.access import AccessKey, KeyGrant
from proxy.cache_store import CacheEntry, EntryRefused, EntryTooBig, cache_store
from proxy.exchange import Exchange, json_error
from proxy.request_body import READ_DECODED_MAX, BodyReading, body_decoded
from proxy.step_answer import AnswerEnd
from proxy.threads import off_loop
from wire.jsonutil import json_long_number, json_or_none
from wire.sse import sse_events

CACHE_HEADER = "x-gateway-cache"
PACE_HEADER = "x-gateway-cache-pace"  # "original": a hit is replayed with the original's timing between chunks
SOURCE_HEADER = "X-Gateway-Cache-Source"
# Headers a replay does not repeat: they describe the moment of the original answer.
_NOT_REPLAYED = frozenset({"date", "age"})


@dataclass(frozen=True, slots=True)
class Directive:
    """What a request asks of the cache."""

    read: bool
    ttl: int  # seconds: the oldest answer it accepts, and how long a new one is kept (0: not stored)


# ASCII digits only (str.isdigit() also takes "²", which int() refuses), and no more than int() reads.
_SECONDS = re.compile(r"[0-9]{1,12}")


_QUOTED_MAX = 64  # characters of a refused X-Gateway-Cache value quoted in the error


class DirectiveError(ValueError):
    """An X-Gateway-Cache value the gateway does not understand."""


def directive_parse(value: str | None, default_ttl: int) -> Directive | None:
    """The request's directive; None when the cache is not asked for at all."""
    if value is None:
        return Directive(read=True, ttl=default_ttl) if default_ttl > 0 else None
    sent, value = value, value.strip().lower()
    if value == "no-store":
        return Directive(read=False, ttl=0)
    read = True
    if value.startswith("refresh="):
        read, value = False, value.removeprefix("refresh=").strip()
    if _SECONDS.fullmatch(value) is None:
        sent = sent.strip()
        if len(sent) > _QUOTED_MAX:  # a header may be 64 KiB: the answer and the log quote its start
            sent = f"{sent[:_QUOTED_MAX]}... ({len(sent)} characters)"
        raise DirectiveError("X-Gateway-Cache must be a number of seconds, 'no-store' or 'refresh=<seconds>', "
                             f"not {sent!r}.")
    return Directive(read=read, ttl=int(value))


def _scope(x: Exchange) -> str:
    """Who may share an answer: every credential that goes upstream, and the gateway key."""
    key = x.gateway_key
    if isinstance(key, KeyGrant):
        who = f"key:{key.key.pk}"
    elif isinstance(key, AccessKey):
        who = f"static:{key.name}"
    else:
        who = ""
    # Every credential that goes upstream, not the first: a client may send two (the Anthropic SDK
    # with an api_key and an auth_token), and two callers sharing one would share answers. Every one
    # the log masks, not only the provider's own: a compatible server may take another header (Azure's
    # api-key), and two tenants told apart by it shared answers.
    creds = [v for k, v in x.forward_headers if header_is_secret(k)]
    if x.query:
        creds += [v for k, v in parse_qsl(x.query, keep_blank_values=True) if param_is_secret(k)]
    return "\0".join([*creds, who])


def _varying(x: Exchange) -> str:
    """The provider's answer-changing headers as sent (anthropic-beta, OpenAI-Project...), by name."""
    names = x.provider.answer_headers
    sent = sorted((k.lower(), v.strip()) for k, v in x.forward_headers if k.lower() in names)
    return "\0".join(f"{k}:{v}" for k, v in sent)


def _body_canonical(x: Exchange, body: bytes, reading: BodyReading) -> bytes:
    """A JSON body with sorted keys and no spaces (key order and whitespace do not matter); another as sent, decoded.

    Made of the exchange's reading of the body (Exchange.body_reading: the key step's and the ambiguity check's
    parse), not parsed again. Compared as the upstream reads it: a gzip body's bytes change with its timestamp, so
    the same JSON sent compressed never matched (nor matched itself sent plain). One that does not decode (past
    READ_DECODED_MAX too: decoding it whole stalled the worker) is compared as sent."""
    decoded = reading.decoded
    if decoded is None:  # not decoded by the reading (two Content-Types: read no further), nor maybe at all
        decoded = body_decoded(x.forward_headers, body, READ_DECODED_MAX) if body else body
        return body if decoded is None else decoded
    if reading.is_json and "json" in x.content_type.lower():
        try:
            if reading.by_orjson:
                return orjson.dumps(reading.payload, option=orjson.OPT_SORT_KEYS)
            # orjson reads an integer past 64 bits as a float: two that differ would make one key. What orjson
            # refused (NaN, which it would write as null; a BOM) stays as sent.
            if json_long_number(decoded):
                return json.dumps(reading.payload, sort_keys=True, separators=(",", ":"),
                                  ensure_ascii=False).encode()
        except (ValueError, TypeError, RecursionError):  # a lone surrogate cannot be written as UTF-8: as sent
            pass
    return decoded


def cache_key(x: Exchange, body: bytes, reading: BodyReading) -> str:
    """The entry's name: a hash of everything that must match (the credential only ever in it hashed); `reading`:
    the exchange's reading of `body`."""
    encoding = ",".join(v.strip() for k, v in x.forward_headers if k.lower() == "accept-encoding")
    h = hashlib.sha256()
    for part in (x.provider.name, x.method, x.route.upstream_path, x.query, encoding, _scope(x), _varying(x)):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    h.update(_body_canonical(x, body, reading))
    return h.hexdigest()


# Misses of this process whose answer is on its way, by event loop and key: an identical request
# waits for it instead of calling the upstream too (concurrent first calls cost one upstream call
# per worker). Keyed by loop too: a future belongs to the loop it was made on.
_FILLING: dict[tuple[int, str], "CacheFill"] = {}


def _filling_key(key: str) -> tuple[int, str]:
    return id(asyncio.get_running_loop()), key


class CacheFill:
    """A miss's answer, collected as the client gets it, stored when it ends complete and 2xx."""

    def __init__(self, x: Exchange, key: str, ttl: int, keep_until: float = 0.0) -> None:
        self.key, self.ttl, self.keep_until = key, ttl, keep_until
        # The request as keyed: a later step that changes it (the hold queue's edit) makes the answer
        # another request's, which must not be stored under this key.
        self.keyed_body, self.keyed_changed = x.forward_body, x.request_changed
        self.chunks: list[bytes] = []
        self.times = array("d")  # machine floats: one for each chunk of a stream in flight (8 bytes, not 32)
        self.size = 0
        self.too_big = False
        # Identical requests waiting for this one's end; made when the first comes (an asyncio.Event
        # per miss, waited for or not, was most of a kilobyte held by every stream in flight).
        self.waiters: list[asyncio.Future] | None = None
        self.filling_key = _filling_key(key)
        self.first = self.filling_key not in _FILLING  # the first of identical misses: the others wait for its end
        if self.first:
            _FILLING[self.filling_key] = self

    async def wait(self) -> None:
        """Until this miss's exchange has ended (its answer stored or not)."""
        if not self.first:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        await waiter

    def release(self) -> None:
        """The exchange ended (Exchange.end), stored or not: identical requests waiting for it go on."""
        if self.first:
            self.first = False
            if _FILLING.get(self.filling_key) is self:
                del _FILLING[self.filling_key]
            for waiter in self.waiters or ():
                if not waiter.done():  # a waiter that timed out was cancelled
                    waiter.set_result(None)
            self.waiters = None

    def feed(self, chunk: bytes) -> None:
        """One chunk on its way to the client."""
        if self.too_big:
            return
        self.size += len(chunk)
        if self.size > settings.CACHE_MAX_ENTRY_BYTES:
            self.too_big, self.chunks = True, []
        else:
            self.chunks.append(chunk)
            self.times.append(time.monotonic())

    async def finish(self, x: Exchange, status: int, headers: list[tuple[str, str]], *, is_sse: bool,
                     replaced: bool) -> None:
        """Store the answer if it may be stored; x.cache_hit = False says it was (the log shows it)."""
        why = self._refusal(x, status, replaced, headers, is_sse)
        if why:
            x.decisions.append({"step": "cache", "decision": f"not stored: {why}"})
            return
        now = time.time()
        entry = CacheEntry(source=x.request_id, created=now, expires=max(now + self.ttl, self.keep_until), status=status,
                           headers=headers, is_sse=is_sse, chunks=[len(c) for c in self.chunks],
                           offsets_ms=[round((t - self.times[0]) * 1000, 2) for t in self.times],
                           body=b"".join(self.chunks))
        try:
            await off_loop(cache_store().put, self.key, entry)
        except EntryRefused as exc:
            x.decisions.append({"step": "cache", "decision": f"not stored: {exc}"})
            return
        except StoreUnavailable as exc:  # Redis away: the answer was served; say why it was not stored
            x.decisions.append({"step": "cache", "decision": f"not stored: {exc}"})
            x.notes.append(f"response cache: {exc.detail}")
            return
        except Exception as exc:  # a full disk: the answer was served; say so
            x.decisions.append({"step": "cache", "decision": f"not stored: {type(exc).__name__}"})
            x.notes.append(f"response cache: not stored: {type(exc).__name__}: {exc}")
            return
        x.cache_hit = False

    def _refusal(self, x: Exchange, status: int, replaced: bool, headers: list[tuple[str, str]], is_sse: bool) -> str:
        """Why this answer is not stored, or ""."""
        if x.outcome != Outcome.COMPLETED or x.error:
            return "the exchange did not complete"
        if not 200 <= status < 300:
            return f"status {status}"
        if replaced:
            return "a hook replaced the answer"
        if (x.request_changed and not self.keyed_changed) or (
                x.forward_body is not self.keyed_body and not x.usage_injected):
            return "a later step changed the request"
        if self.too_big:
            return f"larger than CACHE_MAX_ENTRY_BYTES ({settings.CACHE_MAX_ENTRY_BYTES})"
        if any(d.get("step") == "links" for d in x.decisions):
            return "its links were pointed at the gateway for this client's Host"
        body = b"".join(self.chunks)
        for secret in x.scrubber.secrets:  # never keep a credential in clear, even one an upstream echoed
            raw = secret.encode("utf-8", "ignore")
            if raw and (raw in body or any(secret in v for _, v in headers)):
                return "the answer echoes a credential"
        if said := _failure_reported(x, headers, body, is_sse):
            return f"the answer reports a failure: {said}"
        return ""


# A failure report is a small object: a larger answer is content, and is not read for one.
FAILURE_READ_MAX = 1 << 20
STREAM_TAIL_BYTES = 64 << 10  # a stream's last events, where an error event is


def _failure_reported(x: Exchange, headers: list[tuple[str, str]], body: bytes, is_sse: bool) -> str | None:
    """What a 2xx answer reports failed (a Replicate prediction answered 201 with status failed; a stream that
    began 200 and then sent an error event, as Anthropic's and Gemini's do when the model is overloaded
    mid-answer): like an error status, it is not stored, or a retry of a transient failure would be answered
    with it until it expired."""
    if is_sse:
        return _stream_failure(x, headers, body)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    if "json" not in content_type.lower() or len(body) > FAILURE_READ_MAX:
        return None
    decoded = body_decoded(headers, body, FAILURE_READ_MAX)
    return x.provider.failure_text(json_or_none(decoded)) if decoded else None


def _stream_failure(x: Exchange, headers: list[tuple[str, str]], body: bytes) -> str | None:
    """The error a stream's last events report (an error ends a stream): each event's data read as the
    provider's error body. A compressed stream is decoded first (its tail alone cannot be)."""
    decoded = body_decoded(headers, body, settings.CACHE_MAX_ENTRY_BYTES)
    # The last events (an error may come before a final `data: [DONE]`); the tail's first may be cut.
    for event in sse_events(decoded[-STREAM_TAIL_BYTES:])[-3:] if decoded else ():
        if said := x.provider.error_text(json_or_none(event.data or "")):
            return said
    return None


async def cache_request(x: Exchange) -> HttpResponseBase | None:
    """A hit's replay; or None, the request forwarded (a miss arranges for its answer to be stored)."""
    value = next((v for k, v in x.headers if k.lower() == CACHE_HEADER), None)
    default_ttl = _default_ttl(x)
    if value is None and default_ttl <= 0:
        return None  # not asked for: the answer is left as it is
    try:
        directive = directive_parse(value, default_ttl)
    except DirectiveError as exc:
        x.outcome, x.error = Outcome.GATEWAY_ERROR, str(exc)
        x.answer_headers.append(("X-Gateway-Cache", "BYPASS"))  # every answer to a request that asked says
        return json_error(400, x.provider.error_body(str(exc), kind="invalid_request_error", status=400))
    body = x.forward_body if x.forward_body is not None else (x.body.in_memory() if x.body.size else b"")
    why = _bypass_reason(x, directive, body)
    reading = None if why or not body else await x.body_reading()
    if not why and reading is not None and reading.ambiguity:
        # Its JSON repeats a key (the key reads it canonically, the last value winning; a provider may take the
        # first) or nests too deep to read: two different requests could share an entry.
        why = f"the request's JSON {reading.ambiguity} (providers may read it otherwise)"
    if why:
        x.answer_headers.append(("X-Gateway-Cache", "BYPASS"))
        x.decisions.append({"step": "cache", "decision": f"bypass: {why}"})
        return None
    key = cache_key(x, body, reading or BodyReading())
    stored, away = None, ""  # the entry found, fresh enough for this request or not; why the store was not read
    if directive.read:
        stored, away = await _entry_read(key)
        entry = _fresh(stored, directive.ttl)
        waits = 0
        while entry is None and waits < 2 and (filling := _FILLING.get(_filling_key(key))) is not None:
            # The same request is on its way upstream: its answer, once stored, serves this one too. Its
            # exchange may end without one (an error, a cut stream): then one waiter goes upstream in its
            # place (it registers before the next waiter looks) and the others wait for that one; if it
            # fails too (an outage), they go upstream together, as without the cache. (Waiting one after
            # another, five identical requests had an outage's errors after 2, 4, 6, 8 and 10 s.)
            waits += 1
            try:
                await asyncio.wait_for(filling.wait(), settings.UPSTREAM_READ_TIMEOUT)
            except TimeoutError:
                break
            except asyncio.CancelledError:  # the client left, or the shutdown's grace ran out: its answer and
                x.answer_headers.append(("X-Gateway-Cache", "MISS"))  # log still say what the cache did
                x.decisions.append({"step": "cache", "decision": "miss: waited for an identical request's answer"})
                raise
            stored, away = await _entry_read(key)
            entry = _fresh(stored, directive.ttl)
        if entry is not None:
            return await _replay(x, entry)
    x.answer_headers.append(("X-Gateway-Cache", "MISS"))
    decision = "miss" if directive.read else "refresh"
    x.decisions.append({"step": "cache", "decision": f"{decision}: the store was not read ({away})" if away
                        else decision, "ttl": directive.ttl})
    # A shorter TTL than the stored entry's does not shorten what others may read: the newer answer
    # is kept at least as long as the one it replaces would have been.
    x.cache_fill = CacheFill(x, key, directive.ttl, keep_until=stored.expires if stored is not None else 0.0)
    return None


def _default_ttl(x: Exchange) -> int:
    """The TTL of a request that does not say: its gateway key's, else CACHE_DEFAULT_TTL."""
    key = x.gateway_key
    if isinstance(key, KeyGrant) and key.key.cache_ttl is not None:
        return key.key.cache_ttl
    return settings.CACHE_DEFAULT_TTL


def _fresh(entry: CacheEntry | None, ttl: int) -> CacheEntry | None:
    """The entry if it is at most ttl seconds old (what the request accepts)."""
    return entry if entry is not None and time.time() - entry.created <= ttl else None


async def _entry_read(key: str) -> tuple[CacheEntry | None, str]:
    """The stored answer for the key, unless expired; and, when the store is away, why (a miss)."""
    store = cache_store()
    try:
        if store.inline_max:  # a small file: read on the loop (a thread hop costs more than the read)
            try:
                return store.get(key, size_max=store.inline_max), ""
            except EntryTooBig:
                pass
        return await off_loop(store.get, key), ""
    except StoreUnavailable as exc:
        return None, f"{exc}: {exc.detail}" if exc.detail else str(exc)
    except Exception as exc:  # the store is away (a folder that cannot be read): forward, and say so
        return None, f"{type(exc).__name__}: {exc}"


def _bypass_reason(x: Exchange, directive: Directive, body: bytes | None) -> str:
    """Why the cache neither reads nor writes for this request, or ""."""
    if directive.ttl <= 0:
        return "no-store" if not directive.read else "ttl 0"
    if x.websocket:
        return "a WebSocket session is not cached"
    if body is None:
        return "request body too large to match (kept on disk)"
    return x.provider.cache_refusal(x.method, x.route.upstream_path, body)


_sleep = asyncio.sleep  # tests count the pauses instead of waiting them


async def _pieces(pieces: list[bytes], offsets_ms: list[float] | None = None,
                  end: AnswerEnd | None = None) -> AsyncIterator[bytes]:
    """The stored chunks, at once or (offsets_ms) each as long after the first as it came originally."""
    started = time.monotonic()
    finished = False
    try:
        for i, piece in enumerate(pieces):
            if offsets_ms and i < len(offsets_ms):
                wait = offsets_ms[i] / 1000 - (time.monotonic() - started)
                if wait > 0:
                    await _sleep(wait)
            yield piece
        finished = True
    finally:
        if end is not None:
            await end(finished)


async def _replay(x: Exchange, entry: CacheEntry) -> HttpResponseBase:
    """The stored answer as this exchange's own, logged with the replayed body: at once, or, paced, when its last
    chunk went out or the client left."""
    headers = [(k, v) for k, v in entry.headers if k.lower() not in _NOT_REPLAYED]
    # The stored Date was the original's: this answer is made now. Run as documented (uvicorn
    # --no-date-header, so relayed answers carry the upstream's Date alone), nobody else sets it.
    now = time.time()
    x.answer_headers += [("Date", formatdate(now, usegmt=True)), ("X-Gateway-Cache", "HIT"),
                         ("Age", str(max(0, int(now - entry.created)))), (SOURCE_HEADER, entry.source)]
    paced = next((v for k, v in x.headers if k.lower() == PACE_HEADER), "").strip().lower() == "original"
    x.decisions.append({"step": "cache", "decision": "hit", "source": entry.source,
                        **({"pace": "original"} if paced else {})})
    x.cache_hit, x.cache_source = True, entry.source
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "")
    capture = BodyCapture(spool_name=f"{x.request_id}.response", content_type=content_type,
                          content_encoding=encoding, stream=entry.is_sse, started=x.started)
    pieces = entry.pieces()
    for piece in pieces:
        capture.feed(piece)
    x.ttfb_ms = x.elapsed_ms()

    def record_new() -> ResponseRecord:
        return x.response_record(status=entry.status, headers=headers, content_type=content_type,
                                 is_stream=entry.is_sse)

    end = AnswerEnd(x, capture, record_new)
    if paced and entry.offsets_ms and (entry.is_sse or len(pieces) > 1):
        response: HttpResponseBase = StreamingHttpResponse(_pieces(pieces, entry.offsets_ms, end),
                                                           status=entry.status)
        response.gateway_abandon = end.abandon
    else:
        await end(True)
        response = StreamingHttpResponse(_pieces(pieces), status=entry.status) if (
            entry.is_sse or len(pieces) > 1) else HttpResponse(entry.body, status=entry.status)
    response.gateway_logs_itself = True
    response.gateway_headers = headers
    return response
