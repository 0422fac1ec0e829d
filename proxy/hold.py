"""The hold queue on the request path: a matching request waits, connection open, for a decision.

The switch and the decisions live in the database (the `hold` app), so a decision taken on any
worker or host reaches the worker holding the request. Each worker reads them in one
background task per event loop: the switch every SWITCH_REFRESH seconds (a request sees it at
most about a second old), and, while it holds anything, the decisions of everything it holds
every POLL_SECONDS, in one query. With the switch off, HoldStep.enabled() is an attribute read.
"""

import asyncio
import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, OperationalError, connection
from django.http import HttpResponse, HttpResponseBase
from django.utils import timezone

from hold.models import Decision
from hold.selectors import held_decisions, switch_read
from hold.services import held_create, held_end, held_release, held_timeout
from hold.types import Decided, SwitchState
from logs.outcomes import Outcome
from logs.pipeline.capture import content_type_is_text
from logs.pipeline.writer import writer_get
from logs.redaction.redact import MASK
from logs.redaction.scrub import Masked, text_scrub
from proxy.exchange import Exchange, json_error
from proxy.request_body import body_decoded, body_payload, headers_for_json
from wire.jsonutil import json_or_none, text_valid

log = logging.getLogger(__name__)

STEP = "hold"
POLL_SECONDS = 0.2
SWITCH_REFRESH = 0.5
WARN_EVERY = 60.0
REJECT_STATUS = {Decision.REJECT_400: 400, Decision.REJECT_500: 500}


DB_TRIES = 3  # a lock held a moment too long by another writer is tried again (SQLite)


def _db(fn):
    """An ORM call off the event loop, tried again on a passing lock; a broken connection is dropped
    so the next call opens a new one."""
    def call(*args, **kwargs):
        for attempt in range(DB_TRIES):
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == DB_TRIES - 1:
                    connection.close()
                    raise
                time.sleep(0.05 * (attempt + 1))
            except DatabaseError:
                connection.close()
                raise
    return sync_to_async(call, thread_sensitive=True)


class HoldWatch:
    """One event loop's view of the hold queue: the switch as last read, and its held requests' waits."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.switch: SwitchState | None = None  # None until first read
        self.switch_read_at = 0.0
        self.waiters: dict[str, asyncio.Future] = {}
        self.warned_at = -WARN_EVERY
        self.task = loop.create_task(self._run())

    async def switch_current(self) -> SwitchState:
        """The switch, read now if it never was (or is older than a second)."""
        if self.switch is None or time.monotonic() - self.switch_read_at > 1.0:
            try:
                await self._switch_refresh()
            except Exception as exc:  # no database: nothing is held (requests are never stopped by the queue)
                log.warning("hold queue: switch not readable, taken as off: %s: %s", type(exc).__name__, exc)
                self.switch, self.switch_read_at = SwitchState(), time.monotonic()
        return self.switch

    async def _switch_refresh(self) -> None:
        self.switch = await _db(switch_read)()
        self.switch_read_at = time.monotonic()

    async def _run(self) -> None:
        while True:
            try:
                if time.monotonic() - self.switch_read_at >= SWITCH_REFRESH:
                    await self._switch_refresh()
                if self.waiters and self.switch is not None and not self.switch.on:
                    await _db(held_release)(list(self.waiters))  # held on a switch read before it went off
                if self.waiters:
                    found = await _db(held_decisions)(list(self.waiters))
                    for rid, decided in found.items():
                        fut = self.waiters.get(rid)
                        if fut is not None and not fut.done():
                            fut.set_result(decided)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database is away: keep the last switch, try again
                if time.monotonic() - self.warned_at > WARN_EVERY:  # once a minute, not five times a second
                    self.warned_at = time.monotonic()
                    log.warning("hold queue: could not read the database: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(POLL_SECONDS)


_watch: HoldWatch | None = None


def watch_get() -> HoldWatch:
    """This event loop's watch (started on first use; a new loop, in tests, gets a new one)."""
    global _watch
    loop = asyncio.get_running_loop()
    if _watch is None or _watch.loop is not loop or _watch.task.done():
        _watch = HoldWatch(loop)
    return _watch


async def watch_stop() -> None:
    """Stop this loop's watch and close the database connection it used (the lifespan's shutdown)."""
    global _watch
    watch = _watch
    if watch is None or watch.loop is not asyncio.get_running_loop():
        return
    _watch = None
    watch.task.cancel()
    try:
        await watch.task
    except asyncio.CancelledError:
        pass
    try:
        await asyncio.wait_for(_db(_connection_close)(), 5)
    except Exception as exc:  # shutdown goes on whatever the database says
        log.warning("hold queue: closing its database connection failed: %s", exc)


def _connection_close() -> None:
    connection.close()  # looked up in the thread that runs it: that thread's connection


def hold_may_apply() -> bool:
    """False only when the switch is known to be off (the step then costs nothing), or outside an event loop."""
    try:
        switch = watch_get().switch
    except RuntimeError:  # no running loop: nothing is being proxied here
        return False
    return switch is None or switch.on


def _body_now(x: Exchange) -> bytes | None:
    """The body that would go upstream, when it is in memory."""
    return x.forward_body if x.forward_body is not None else x.body.in_memory()


def _matches(switch: SwitchState, x: Exchange) -> bool:
    """Whether a request is held under the switch's filters of provider, path and key (its model is matched
    after: only a request these let through has its body read)."""
    if switch.provider and switch.provider != x.provider.name:
        return False
    if switch.path and not _path_matches(switch.path, x):
        return False
    return not switch.gateway_key or (x.gateway_key is not None and switch.gateway_key == x.gateway_key.name)


def _path_matches(prefix: str, x: Exchange) -> bool:
    """Whether the path filter matches the path as sent, or as the upstream reads it: percent-decoded and under any
    of the provider's prefixes (/v1/%63hat/completions and /openai/v1/chat/completions are OpenAI's chat
    completions, which a filter /v1/chat/ let pass unheld)."""
    path = x.route.path
    if path.startswith(prefix):
        return True
    rest = unquote(path[len(x.provider.prefix_of(path) or ""):])
    return any((p + rest).startswith(prefix) for p in x.provider.prefixes)


def _body_for_operator(x: Exchange, body: bytes | None) -> str | None:
    """The body as the admin shows it and the held row keeps it (credential-named fields masked, and the
    request's own credentials wherever the body echoes them, as the log's copy); None when large or not text."""
    content_type = next((v for k, v in x.forward_headers if k.lower() == "content-type"), x.content_type)
    if body is not None:  # a compressed one decoded, as the log shows it: the operator reads the prompt
        body = body_decoded(x.forward_headers, body, settings.LOG_BODY_INLINE_MAX_BYTES)
    if body is None or len(body) > settings.LOG_BODY_INLINE_MAX_BYTES or not content_type_is_text(content_type):
        return None
    try:
        text = x.scrubber.text(body.decode("utf-8"), content_type, answer=False, masked=Masked())
    except UnicodeDecodeError:
        return None
    return text_scrub(text, x.scrubber.secrets)


async def _model_read(x: Exchange, filtered: bool) -> tuple[str | None, str]:
    """(the model that goes upstream, for the switch's model filter and the held row; why the body it is read from
    cannot be read, or "")."""
    if x.websocket:
        # A realtime session names its model in the upgrade's query (OpenAI), or only in its first message (Gemini
        # Live): the body's reading found none, and `--model gpt-realtime` let every session through unheld.
        return x.provider.realtime_model(x.route.upstream_path, x.query), ""
    # After the hooks: read from the upstream path (Gemini names it there), or the body as the steps read it
    # (decoded; shared with the key step, Exchange.body_reading).
    endpoint = unquote(x.route.upstream_path)
    if in_path := x.provider.request_model(endpoint, None):
        return in_path, ""
    if not filtered and x.forward_body is None and x.body.in_memory() is None:
        return None, ""  # a large body, read for the held row alone: not read
    reading = await x.body_reading()
    if reading.unread:
        return None, reading.unread
    model = x.provider.request_model(endpoint, reading.payload)
    return (text_valid(model) if model else None), ""


def _model_matches(switch: SwitchState, x: Exchange, model: str | None) -> bool:
    """Whether the model filter lets the request be held: its model, or a realtime session whose upgrade names none
    (the operator decides what nobody could read)."""
    return not switch.model or switch.model == model or (x.websocket and model is None)


async def hold_request(x: Exchange) -> HttpResponseBase | None:
    """Hold a matching request until it is decided (or times out); carry the decision out."""
    watch = watch_get()
    switch = await watch.switch_current()
    if not switch.on:
        return None
    if not _matches(switch, x):
        return None
    model, unread = await _model_read(x, bool(switch.model))
    if unread and switch.model:  # what the filter cannot read is bad input, refused: not held, not forwarded
        return x.body_refusal("hold", unread, f"the hold queue's model filter ('{switch.model}')")
    if not _model_matches(switch, x, model):
        return None
    body = _body_now(x)
    held_from = time.monotonic()
    timeout = settings.HOLD_TIMEOUT_SECONDS
    try:
        try:
            await _db(held_create)(request_id=x.request_id, provider=x.provider.name, method=x.method,
                                   path=text_scrub(x.route.path, x.scrubber.secrets),  # masked as the log's
                                   model=text_scrub(model or "", x.scrubber.secrets),
                                   gateway_key=x.gateway_key.name if x.gateway_key is not None else "",
                                   body=_body_for_operator(x, body),
                                   body_size=len(body) if body is not None else x.body.size,
                                   instance=writer_get().instance, timeout=timeout)
        except DatabaseError as exc:  # the queue never stops traffic by itself: not held
            log.warning("hold queue: request %s not held, the database refused it: %s", x.request_id, exc)
            x.notes.append(f"not held: the hold queue's database refused it ({exc})")
            return None
        # Waited for once its row exists: a decision taken before this is found by the next poll.
        fut = watch.loop.create_future()
        watch.waiters[x.request_id] = fut
        try:
            decided = await asyncio.wait_for(asyncio.shield(fut), max(0.0, timeout - (time.monotonic() - held_from)))
        except TimeoutError:
            decided = await _timeout_decide(x)
    except asyncio.CancelledError:
        held_ms = _held_ms(held_from)
        await _aborted(x, held_ms)
        raise
    finally:
        watch.waiters.pop(x.request_id, None)
    held_ms = _held_ms(held_from)
    x.held_ms = held_ms
    # The upstream's clock starts after the hold: duration and TTFB measure the upstream, not the wait.
    x.started += held_ms / 1000
    try:
        await _db(held_end)(x.request_id, aborted=False, held_ms=held_ms)
    except DatabaseError as exc:  # the decision is carried out anyway; the admin row stays "waiting"
        x.notes.append(f"hold queue row not updated: {exc}")
    x.decisions.append({"step": STEP, "decision": decided.decision, "by": decided.by,
                        "at": decided.at.isoformat() if decided.at else None, "held_ms": held_ms,
                        **({"edited_body": True} if decided.edited_body is not None else {})})
    return _carry_out(x, decided, body)


async def _timeout_decide(x: Exchange) -> Decided:
    """HOLD_TIMEOUT_ACTION, unless an operator decided in the meantime (then theirs stands)."""
    action = settings.HOLD_TIMEOUT_ACTION
    try:
        return await _db(held_timeout)(x.request_id, action)
    except DatabaseError as exc:  # carried out all the same; the admin row stays "waiting" until it is pruned
        x.notes.append(f"hold queue row not updated: {exc}")
        return Decided(action, "timeout", timezone.now())


def _held_ms(since: float) -> float:
    return round((time.monotonic() - since) * 1000, 2)


async def _aborted(x: Exchange, held_ms: float) -> None:
    """The client went away while held, or the shutdown grace ran out: marked client_aborted or interrupted
    (never forwarded), the queue's row too."""
    x.held_ms = held_ms
    x.started += held_ms / 1000  # as for a decided request: the duration leaves the hold out
    x.decisions.append({"step": STEP, "decision": "gateway shut down while held" if x.shutting_down
                        else "client disconnected while held", "held_ms": held_ms})
    x.cancelled_mark("while held")  # proxy/forward.py logs the exchange
    try:
        await asyncio.shield(_db(held_end)(x.request_id, aborted=True, held_ms=held_ms))
    except (DatabaseError, asyncio.CancelledError):
        pass


def _masks_restored(x: Exchange, body: bytes | None, edited: str) -> str:
    """The operator's edit of the body as the page showed it, each credential it still shows masked ("…abcd", a
    field named like one) put back as the client sent it: the mask went upstream in its place (an MCP tool's
    `authorization` became "…abcd"). Each mask is matched to its value by walking the body shown beside the
    body received; one shown alike for two values stays as shown, and the exchange's notes say so.

    Put back only where it was shown, and only when the edit sends nothing to a new address: the operator never
    sees the credential, and must not hand it to a party of their choosing (an MCP tool's server_url pointed at
    their own server, a Replicate webhook, the mask moved into the prompt for the model to repeat)."""
    shown = _body_for_operator(x, body)
    if shown is None or MASK not in shown:
        return edited
    values: dict[str, str | None] = {}
    places: dict[str, set[tuple]] = {}

    def pair(seen: Any, sent: Any, path: tuple) -> None:
        if isinstance(seen, str) and isinstance(sent, str) and seen != sent:
            values[seen] = sent if values.get(seen, sent) == sent else None
            places.setdefault(seen, set()).add(path)
        elif isinstance(seen, list) and isinstance(sent, list) and len(seen) == len(sent):
            for i, (a, b) in enumerate(zip(seen, sent)):
                pair(a, b, (*path, i))
        elif isinstance(seen, dict) and isinstance(sent, dict):
            for key in seen.keys() & sent.keys():
                pair(seen[key], sent[key], (*path, key))

    shown_value = json_or_none(shown)
    sent = body_decoded(x.forward_headers, body, settings.LOG_BODY_INLINE_MAX_BYTES) if body is not None else None
    pair(shown_value, json_or_none(sent), ())
    edited_value = json_or_none(edited)
    found: dict[str, list[tuple]] = {}
    _strings(edited_value, (), found)
    redirected = _addresses(found) - _addresses(_strings(shown_value, (), {}))
    for masked, value in values.items():
        forms = {json.dumps(masked), json.dumps(masked, ensure_ascii=False)}
        written = sum(edited.count(form) for form in forms)
        if not written:
            continue
        if value is None:
            x.notes.append(f"the edited body went with {masked} as shown: two masked values look alike")
            continue
        # Every place the edit writes it (a key's name counts too) is where it was shown.
        if len(found.get(masked, ())) != written or not set(found[masked]) <= places[masked]:
            x.notes.append(f"the edited body went with {masked} as shown: moved from where the client sent it")
            continue
        if redirected:
            x.notes.append(f"the edited body went with {masked} as shown: the edit sends to an address the client "
                           f"did not ({min(url for _, url in redirected)})")
            continue
        for form in forms:
            edited = edited.replace(form, json.dumps(value, ensure_ascii=False))
    return edited


def _strings(value: Any, path: tuple, found: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Each string value of a JSON value with the paths where it is."""
    if isinstance(value, str):
        found.setdefault(value, []).append(path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _strings(item, (*path, i), found)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings(item, (*path, key), found)
    return found


URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")


def _addresses(strings: dict[str, list[tuple]]) -> set[tuple[tuple, str]]:
    """The URLs the strings hold, each with where it is: where a provider may send something (a prompt that quotes
    one, edited elsewhere, still quotes the same; one the prompt quoted, copied into a tool's server_url, is new)."""
    return {(path, url) for s, paths in strings.items() if "://" in s for url in URL.findall(s) for path in paths}


def _carry_out(x: Exchange, decided: Decided, body: bytes | None) -> HttpResponseBase | None:
    """Approve (maybe with the edited body), or answer with the chosen rejection in the provider's shape."""
    if decided.decision == Decision.APPROVE:
        if decided.edited_body is not None:
            x.forward_body = _masks_restored(x, body, decided.edited_body).encode("utf-8")
            # The edit is plain JSON text: an encoding the client's body had no longer describes it, nor a type
            # other than JSON.
            x.forward_headers = headers_for_json([(k, v) for k, v in x.forward_headers
                                                  if k.lower() != "content-encoding"])
            x.request_changed = True
        return None
    who = "the timeout (HOLD_TIMEOUT_ACTION)" if decided.by == "timeout" else decided.by
    x.outcome = Outcome.GATEWAY_ERROR
    if decided.decision in REJECT_STATUS:
        status = REJECT_STATUS[decided.decision]
        x.error = f"held request rejected with {status} by {who}"
        message = f"Request rejected with {status} by the gateway's hold queue ({who})"
        return json_error(status, x.provider.error_body(message, kind=x.provider.error_kind(status), status=status),
                          x.request_id)
    status, content_type, answer = x.provider.content_policy_answer(unquote(x.route.upstream_path), x.query,
                                                                    body_payload(body, x.content_type))
    x.error = f"held request answered with the provider's content-policy refusal by {who}"
    if x.websocket and status < 400:
        # A refusal that is a success (Gemini's blocked prompt is a 200) answers no handshake: a Live session's
        # client read "HTTP 200" as a refusal it could not explain, the log a success status.
        status, content_type = 400, "application/json"
        answer = x.provider.error_body(f"Request refused under the content policy by the gateway's hold queue ({who})",
                                       kind=x.provider.error_kind(400), status=400)
    return HttpResponse(answer, status=status, content_type=content_type)
