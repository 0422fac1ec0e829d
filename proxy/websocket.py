"""Realtime sessions: a WebSocket upgrade on a provider prefix, relayed to the provider and logged frame by frame.

The upgrade goes through the same stages as any request (route, refuse, record, policy steps), so
gateway keys, limits and the hold queue apply before the handshake; a refused upgrade gets an HTTP
answer in the provider's error shape. A session whose model only its first message names (Gemini Live), that a
step judges by its model (a key held to models, a hook's on_session_model: proxy/session_policy.py), is accepted
first and that message judged before the upstream is opened: a refused session never reaches the provider. Then the
session is relayed both ways as messages come, each client message asking for a model judged the same way first (each
side's send waits for the other side to take it: back-pressure), close codes pass through, and
every frame is journaled as it passes (logs/records.py FrameRecord), so a session of any length is
never held in memory and a crash keeps what was received. The session is one exchange: the upgrade
request, and a response with status 101 written when it ends, saying how.
"""

import asyncio
import base64
import binascii
import io
import logging

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, HttpResponseBase
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from logs.ids import exchange_id_new
from logs.outcomes import Outcome
from logs.pipeline.tracks import Track
from logs.records import FileRecord, FrameRecord, ResponseRecord
from proxy.exchange import REQUEST_ID_HEADER, Exchange, json_error, response_header_pairs
from proxy.forward import refuse, request_record, step_answered
from proxy.forwarded import forwarded_note
from proxy.key_policy import SessionLimits
from proxy.paths import NoRoute, PathRefused, Route, path_owner, route_find
from proxy.refusals import refusal_find
from proxy.request_body import BodySpool
from proxy.session_policy import ModelAsked, SessionStop, model_in_first_message, session_model_judged
from proxy.steps import steps_active, steps_run
from proxy.upstream import headers_forward
from providers.base import SUBPROTOCOL_HEADER, RealtimeRead, usage_count_items
from wire.jsonutil import json_ambiguity, json_line, json_or_none

log = logging.getLogger(__name__)

# The handshake's own headers: the upstream connection makes its own.
HANDSHAKE_HEADERS = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                               "sec-websocket-protocol", "sec-websocket-accept"})
# Close codes that may be sent in a close frame (RFC 6455 §7.4): others end as a normal close.
SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})
# Normal ends. A client that vanishes without a close frame is reported by the server as 1005 or
# 1006: that is an abort, not a close.
NORMAL_UPSTREAM = frozenset({1000, 1001, 1005})
NORMAL_CLIENT = frozenset({1000, 1001, *range(3000, 5000)})  # the 3000s and 4000s: an application's own close
JSON_SPACE_TEXT = " \t\r\n"  # what JSON allows before a value
JSON_SPACE = JSON_SPACE_TEXT.encode()
# What uvicorn hands the application for every session when it shuts down (it closes them at once).
SERVER_RESTART = 1012
# Sent to the client when the upstream went away without a close frame (RFC 6455's "Bad Gateway").
UPSTREAM_LOST = 1014


def _sendable(code: int | None) -> int:
    return code if code in SENDABLE or (code is not None and 3000 <= code <= 4999) else 1000


async def _deny(scope: dict, send, response: HttpResponseBase) -> None:
    """Answer the upgrade with an HTTP response (the ASGI denial extension), or a bare 403."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response_header_pairs(response)]
    await send({"type": "websocket.http.response.start", "status": response.status_code, "headers": headers})
    # A streamed answer (a hook's) is read whole: the denial is one body, and the log keeps it as it ends.
    body = b"".join([chunk async for chunk in response]) if response.streaming else response.content
    await send({"type": "websocket.http.response.body", "body": body})


def _event_type(text: str) -> str:
    event = json_or_none(text) if text[:1] == "{" else None
    kind = event.get("type") if isinstance(event, dict) else None
    return kind[:128] if isinstance(kind, str) else ""


def upstream_ws_url(route: Route, query: str) -> str:
    """ws(s):// of the provider's upstream base, then the path and query as the client sent them."""
    base = route.upstream_base
    base = "wss://" + base[len("https://"):] if base.startswith("https://") else "ws://" + base.split("://", 1)[-1]
    return base + route.upstream_path + (f"?{query}" if query else "")


class Session:
    """One relayed realtime session: frames journaled as they pass, its files, its usage, how it ended."""

    def __init__(self, x: Exchange) -> None:
        self.x = x
        self.seq = 0
        self.ended_by = ""  # "client" or "upstream"
        self.code: int | None = None
        self.reason = ""
        self.tracks: dict[str, Track] = {}  # open files: "input", "output", "binary-client"...
        self.turns = {"input": 0, "output": 0}
        self.formats: dict[str, tuple[str, int]] = {}
        self.usage: dict[str, int] = {}
        self.model: str | None = None
        self.limits = SessionLimits(x)
        self.judged_stop: SessionStop | None = None  # a step's judge refused a message: the session ends
        self.sending = asyncio.Lock()  # the relay and the gateway's own error events both send to the client
        self.upstream: ClientConnection | None = None
        self.answered = False  # the exchange was answered (and logged) as an HTTP refusal or failure: no session

    @property
    def stop(self) -> SessionStop | None:
        """Why the gateway ends the session: a judge refused a message, or the key's limits (None: it goes on)."""
        return self.judged_stop or self.limits.stop

    def asked(self, data: str | bytes, read: RealtimeRead | None, first: bool) -> ModelAsked | None:
        """The client message as the steps' judges see it, when it asks for a model or may (its JSON read otherwise
        upstream; for the first message of a session naming its model there, always); None: nothing to judge."""
        if not self.x.session_model_judges:
            return None
        model = read.asks_model if read is not None else None
        ambiguity = json_ambiguity(data)  # a binary frame's JSON too: json reads bytes
        if not (first or model or ambiguity):
            return None
        event = json_or_none(data)
        kind = event.get("type") if isinstance(event, dict) else None
        return ModelAsked(model, ambiguity, self.seq, kind if isinstance(kind, str) else None, first,
                          ends=first or not self.x.provider.realtime_error_events)

    def frame(self, direction: str, data: str | bytes) -> RealtimeRead | None:
        """Journal one frame as it passes: text with its audio moved to the session's tracks, binary to a file.
        What the provider read in it (None: not an event)."""
        self.seq += 1
        at = self.x.elapsed_ms()
        if direction == "upstream" and self.x.ttfb_ms is None:
            self.x.ttfb_ms = at
        record = FrameRecord(id=self.x.request_id, seq=self.seq, direction=direction, at_ms=at,
                             provider=self.x.provider.name, created=self.x.started_wall)
        read = None
        if isinstance(data, str):
            raw = data.encode("utf-8", "surrogatepass")
            record.size = len(raw)
            record.text, read = self._event_read(direction, data)
            if record.size > settings.LOG_BODY_INLINE_MAX_BYTES and not (read and read.audio):
                # Too large for the row, as a request body would be (an image sent inline, a long instruction):
                # in the session's file of such frames, as a binary frame's bytes are; the row keeps its type.
                key = f"text-{direction}"
                record.event_type = _event_type(record.text)
                record.text, record.file_key, record.file_offset = None, key, self._track(key).append(raw)
        else:
            record.size = len(data)
            key = f"binary-{direction}"
            record.file_key, record.file_offset = key, self._track(key).append(data)
            # Google's Live API sends its JSON messages (their usage) in binary frames.
            if data.lstrip(JSON_SPACE)[:1] == b"{":
                try:
                    _, read = self._event_read(direction, data.decode("utf-8"))
                except UnicodeDecodeError:
                    pass
        self.x.frame_log(record)
        return read

    def _event_read(self, direction: str, text: str) -> tuple[str, RealtimeRead | None]:
        """What a text frame means for the log (its text with base64 audio replaced by a reference), and the read."""
        # JSON may begin with white space: an event so sent went upstream unread (a session.update unchecked).
        event = json_or_none(text) if text.lstrip(JSON_SPACE_TEXT)[:1] == "{" else None
        if not isinstance(event, dict):
            return text, None
        try:
            read = self.x.provider.realtime_read(direction, event)
        except (TypeError, ValueError, KeyError, AttributeError):
            return text, None
        self.formats.update(read.formats)
        self.model = read.model or self.model
        if read.usage is not None and direction == "upstream":  # what the client says it used is no bill
            for name, value in usage_count_items(read.usage).items():
                if value >= 0:
                    self.usage[name] = self.usage.get(name, 0) + value
        for chunk in read.audio:
            data = chunk.holder[chunk.key]
            try:  # google-genai sends URL-safe base64
                audio = base64.b64decode(data, altchars=b"-_" if "-" in data or "_" in data else None, validate=True)
            except (binascii.Error, ValueError, TypeError):
                continue
            track = self._audio_track(chunk.track)
            chunk.holder[chunk.key] = {"$gateway_audio": {"track": track.key, "offset": track.append(audio),
                                                          "bytes": len(audio)}}
        for name in read.ends:
            self._track_end(name)
        return (json_line(event).decode().rstrip("\n") if read.audio else text), read

    def _audio_track(self, track: str) -> Track:
        if track not in self.tracks:
            self.turns[track] += 1
            codec, rate = self.formats.get(track, ("pcm16", 24000))
            self.tracks[track] = Track(self.x.request_id, f"{track}-{self.turns[track]}", codec, rate)
        return self.tracks[track]

    def _track(self, key: str) -> Track:
        if key not in self.tracks:
            self.tracks[key] = Track(self.x.request_id, key)
        return self.tracks[key]

    def _track_end(self, name: str) -> None:
        """A turn (or the session) ended: its file is complete, for the ingest process to store."""
        track = self.tracks.pop(name, None)
        if track is not None:
            self.x.file_log(FileRecord(id=self.x.request_id, key=track.key, file=track.finish(),
                                       provider=self.x.provider.name, created=self.x.started_wall))

    def tracks_end(self) -> None:
        for name in list(self.tracks):
            self._track_end(name)

    async def client_to_upstream(self, receive, upstream: ClientConnection, send) -> None:
        """Client messages to the upstream, until the client closes (or the gateway stops the session)."""
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                data = message.get("text")
                data = data if data is not None else message.get("bytes") or b""
                read = self.frame("client", data)
                if self.stop is not None:
                    return  # stopped while this message came: it does not go upstream
                asked = self.asked(data, read, first=False)
                if asked is not None and await self._model_refused(asked, data, send):
                    if self.stop is not None:
                        return
                    continue
                try:
                    await upstream.send(data)
                except ConnectionClosed:
                    return  # the upstream is gone: the other direction tells how
            elif message["type"] == "websocket.disconnect":
                if not self.ended_by:  # else the client's answer to the upstream's close, passed on
                    code = message.get("code", 1005)
                    self.ended_by = "server" if code == SERVER_RESTART else "client"
                    self.code, self.reason = code, message.get("reason") or ""
                await upstream.close(_sendable(message.get("code", 1005)), message.get("reason") or "")
                return

    async def _model_refused(self, asked: ModelAsked, data: str | bytes, send) -> bool:
        """A client's event asking for a model a step's judge refuses (a key's list, a hook: session_policy): answered
        with an error event, not forwarded. The session goes on, as after any event the upstream refuses; in a
        protocol without error events (Gemini Live) the session is stopped instead, its close frame saying why."""
        stop = await session_model_judged(self.x, asked)
        if stop is None:
            return False
        if asked.ends:
            self.judged_stop = stop
            return True
        event = json_or_none(data)
        event_id = event.get("event_id") if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None
        answer = self.x.provider.realtime_error(stop.message, kind=stop.kind, code=stop.code, event_id=event_id)
        async with self.sending:
            await send({"type": "websocket.send", "text": answer})
        return True

    async def upstream_to_client(self, upstream: ClientConnection, send) -> None:
        """Upstream messages to the client, until the upstream closes (or the gateway stops the session); its
        close code passes on."""
        try:
            mask = self.x.echo_mask  # a key's stored credential: quoted back (an error event), it reaches the client masked
            async for data in upstream:
                read = self.frame("upstream", data)
                key = "text" if isinstance(data, str) else "bytes"
                if mask is not None:
                    data = mask.mask(data.encode()).decode() if key == "text" else mask.mask(data)
                async with self.sending:
                    await send({"type": "websocket.send", key: data})
                if read is not None and read.usage is not None:  # a response's usage: the key's limits, now
                    self.limits.used(usage_count_items(read.usage).get("total_tokens", 0), self.usage, self.model)
                    if await self.limits.check() is not None:
                        return
        except ConnectionClosed:
            pass
        except OSError:  # the client vanished mid-answer (the server's ClientDisconnected): it ended the session
            if not self.ended_by:
                self.ended_by, self.code, self.reason = "client", 1006, ""
            return
        if not self.ended_by:
            self.ended_by = "upstream"
            close = upstream.protocol.close_rcvd  # what the upstream sent (None: it just went away)
            if close is not None:
                self.code, self.reason = close.code, close.reason
                reason = self.reason if mask is None else mask.mask(self.reason.encode()).decode()
                await send({"type": "websocket.close", "code": _sendable(self.code), "reason": reason})
            else:  # never a normal close to the client: the session broke off
                self.code, self.reason = 1006, "upstream connection lost without a close frame"
                await send({"type": "websocket.close", "code": UPSTREAM_LOST, "reason": "upstream connection lost"})

    async def watch(self) -> None:
        """Check the session's key every CHECK_EVERY seconds (revoked, usage logged meanwhile); return to stop it."""
        while True:
            await asyncio.sleep(SessionLimits.CHECK_EVERY)
            try:
                if await self.limits.check() is not None:
                    return
            except Exception:  # a failed read is tried again at the next check; it never ends the relay
                log.exception("realtime session %s: its gateway key could not be checked", self.x.request_id)

    async def stop_send(self, stop: SessionStop, send) -> None:
        """The gateway ends the session: the provider's error event saying why, then a close frame saying it too."""
        self.ended_by, self.code, self.reason = "gateway", stop.close_code, stop.reason
        event = self.x.provider.realtime_error(stop.message, kind=stop.kind, code=stop.code)
        try:
            if event is not None:
                await send({"type": "websocket.send", "text": event})
            await send({"type": "websocket.close", "code": stop.close_code,
                        "reason": stop.reason.encode()[:123].decode(errors="ignore")})
        except OSError:  # the client left meanwhile
            pass

    def end(self) -> None:
        """Decide the outcome from how the session ended; store its last files."""
        try:
            self.tracks_end()
        except OSError as exc:
            self.x.notes.append(f"session files not saved: {exc}")
        desc = f"{self.ended_by} closed the session with code {self.code}" + (f": {self.reason}" if self.reason else "")
        if self.ended_by == "client" and self.code in (1005, 1006):  # the server cannot tell an empty close frame
            desc = f"client went away without a close code ({self.code})"  # from a vanished client
        elif self.ended_by == "client" and self.code == 1009:  # closed by the server this gateway runs in
            desc = ("the gateway's server closed the session with code 1009: a client message over its size limit "
                    "(uvicorn --ws-max-size, 16 MiB by default)")
        if self.ended_by == "server":
            self.x.fail(Outcome.INTERRUPTED, f"gateway shut down during the session (the server closed it with code "
                                             f"{self.code}, at once: uvicorn gives WebSockets no grace)")
        elif self.ended_by == "upstream" and self.code not in NORMAL_UPSTREAM:
            self.x.fail(Outcome.UPSTREAM_ERROR, f"upstream closed the session with code {self.code}"
                        + (f": {self.reason}" if self.reason else ""))
        elif self.ended_by == "client" and self.code not in NORMAL_CLIENT:
            self.x.fail(Outcome.CLIENT_ABORTED, desc)
        else:
            self.x.notes.append(desc)
        self.x.clock_stop()

    def record(self) -> ResponseRecord:
        """The session's response for the log: status 101, the upstream's handshake headers (none if never opened)."""
        headers = list(self.upstream.response.headers.raw_items()) if self.upstream is not None else []
        record = self.x.response_record(status=101, headers=headers, content_type="")
        record.usage = {**self.usage, "model": self.model} if self.usage or self.model else None
        return record


async def _upstream_open(x: Exchange, scope: dict) -> ClientConnection | HttpResponseBase:
    """Connect to the provider's WebSocket; an HTTP answer instead when it refuses or cannot be reached."""
    headers = [(k, v) for k, v in x.forward_headers if k.lower() not in HANDSHAKE_HEADERS]
    # The subprotocols as the steps left them (a hook may put a server-side key in place of a browser's).
    subprotocols = [p.strip() for k, v in x.forward_headers if k.lower() == SUBPROTOCOL_HEADER
                    for p in v.split(",") if p.strip()]
    try:
        return await connect(upstream_ws_url(x.route, x.query), additional_headers=headers,
                             subprotocols=subprotocols or None, user_agent_header=None,
                             open_timeout=settings.UPSTREAM_CONNECT_TIMEOUT, max_size=None, compression=None)
    except InvalidStatus as exc:  # the upstream answered the upgrade with an HTTP error: pass it on
        answer = exc.response
        # bytes: websockets gives a bytearray, which Django would take for an iterable of ints.
        body, headers = bytes(answer.body or b""), list(answer.headers.raw_items())
        if x.echo_mask is not None:  # a key's stored credential quoted back (a 401's message): masked, as in an answer
            body, headers = x.echo_mask.mask(body), x.echo_mask.headers(headers)
        response = HttpResponse(body, status=answer.status_code)
        del response["Content-Type"]
        for k, v in headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                response[k] = v
        return await step_answered(x, response)
    except (TimeoutError, asyncio.TimeoutError):
        return x.gateway_answer(504, f"Upstream WebSocket did not open within {settings.UPSTREAM_CONNECT_TIMEOUT:g} s "
                                     "(UPSTREAM_CONNECT_TIMEOUT)")
    except (OSError, InvalidHandshake) as exc:
        return x.gateway_answer(502, f"Upstream WebSocket unreachable: {type(exc).__name__}: {exc}")
    except (InvalidURI, UnicodeDecodeError) as exc:
        # A base URL plain HTTP takes (a user without a password, a fragment, a password not in UTF-8) that the
        # WebSocket client refuses: its own words quote the URL, with the password, and were a traceback on the
        # console and a bare 500 whose exchange was never logged.
        why = exc.msg if isinstance(exc, InvalidURI) else "its user or password is not UTF-8 once percent-decoded"
        setting = x.provider.upstream_env or "GATEWAY_PROVIDERS"
        return x.gateway_answer(502, f"Upstream WebSocket URL cannot be used ({setting}): {why}")


async def _relay(x: Exchange, session: Session, upstream: ClientConnection, receive, send) -> None:
    """Both directions at once; when one ends, the other is finished off."""
    tasks = [asyncio.ensure_future(session.client_to_upstream(receive, upstream, send)),
             asyncio.ensure_future(session.upstream_to_client(upstream, send))]
    if session.limits.key is not None:
        tasks.append(asyncio.ensure_future(session.watch()))
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if session.stop is not None:  # a step stopped it: nothing more passes either way
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            await session.stop_send(session.stop, send)
        elif tasks[0] in done:  # the client left: the upstream's own close ends the other direction
            await asyncio.wait_for(asyncio.shield(tasks[1]), timeout=5)
    except asyncio.CancelledError:
        if x.shutting_down:
            x.fail(Outcome.INTERRUPTED, "gateway shut down during the session (SHUTDOWN_GRACE_SECONDS ran out)")
            await send({"type": "websocket.close", "code": 1001, "reason": "gateway shutting down"})
        else:
            x.cancelled_mark("during the session")
        raise
    except asyncio.TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        # The session ended now: closing the upstream may wait for its close frame behind queued messages.
        x.clock_stop()
        await asyncio.shield(upstream.close())


def _exchange(scope: dict, route: Route) -> Exchange:
    """The exchange of an upgrade: a Django request made of the handshake (it has no body)."""
    request = ASGIRequest({**scope, "type": "http", "method": "GET"}, io.BytesIO())
    request.gateway_body, request.gateway_refusal = BodySpool(f"{exchange_id_new()}.request"), None
    x = Exchange(request, route)
    x.websocket = True
    return x


_GONE = object()


async def _steps_unless_gone(x: Exchange, receive) -> HttpResponseBase | None | object:
    """The policy steps' answer, or _GONE when the client left first (an upgrade held by the hold queue).

    Before the handshake the client can send nothing but its departure, so the only message
    receive() can give here is websocket.disconnect; the waiting step is cancelled (the hold
    queue marks its row aborted) and the exchange is logged client_aborted, never forwarded.
    """
    steps = asyncio.ensure_future(steps_run(x, steps_active()))
    gone = asyncio.ensure_future(receive())
    try:
        await asyncio.wait({steps, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the gateway is shutting down
        gone.cancel()
        await _steps_cancel(x, steps)
        raise
    if steps.done():
        gone.cancel()
        return steps.result()
    await _steps_cancel(x, steps)
    return _GONE


async def _steps_cancel(x: Exchange, steps: asyncio.Future) -> None:
    """Cancel the waiting steps and log the exchange as it ended (no upstream was opened)."""
    steps.cancel()
    try:
        await steps
    except asyncio.CancelledError:
        pass
    x.cancelled_mark("during the policy steps")  # unless the step said where first
    x.response_log(x.response_record(status=None, headers=[], content_type=""))


async def websocket_app(scope: dict, receive, send) -> None:
    """One WebSocket upgrade on a proxy path: refuse it with an HTTP answer, or relay and log the session."""
    if (await receive())["type"] != "websocket.connect":
        return
    raw_path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
    try:
        route = route_find(raw_path)
    except PathRefused as exc:
        await _deny(scope, send, json_error(400, path_owner(raw_path).error_body(
            f"Refused path: {exc}", kind="invalid_request_error", status=400)))
        return
    except NoRoute as exc:
        await _deny(scope, send, json_error(404, path_owner(raw_path).error_body(str(exc), kind="not_found", status=404)))
        return
    x = _exchange(scope, route)
    if (refusal := await refusal_find(x)) is not None:
        await _deny(scope, send, refuse(x, refusal))
        return
    await request_record(x)
    # The client's handshake headers stay behind (the upstream connection makes its own), but its
    # subprotocols go on, as the steps leave them.
    x.forward_headers = [(k, v) for k, v in headers_forward(x.headers, request=True)
                         if k.lower() not in HANDSHAKE_HEADERS or k.lower() == SUBPROTOCOL_HEADER]
    answer = await _steps_unless_gone(x, receive)
    if answer is _GONE:
        return
    if answer is not None:
        await _deny(scope, send, await step_answered(x, answer))
        return
    if x.request_changed:  # a hook changed the upgrade (its path, query or headers): what went upstream
        await forwarded_note(x)
    session = Session(x)
    try:
        try:
            if x.session_model_judges and model_in_first_message(x):
                opened = await _open_after_first_message(x, session, scope, receive, send)
            else:
                opened = await _open_then_accept(x, session, scope, send)
        except asyncio.CancelledError:  # the gateway is shutting down
            x.cancelled_mark("before the session opened")
            raise
        if opened:
            await _relay(x, session, session.upstream, receive, send)
    finally:
        session.limits.close()
        if not session.answered:
            session.end()
            x.response_log(session.record())


async def _accept(x: Exchange, session: Session, send, subprotocol: str | None) -> bool:
    """Accept the client's WebSocket; False when it left meanwhile (its exchange says so)."""
    try:  # the steps' answer headers too: a limited key's RateLimit fields are on every answer to it
        await send({"type": "websocket.accept", "subprotocol": subprotocol,
                    "headers": [*((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in x.answer_headers),
                                (REQUEST_ID_HEADER.lower().encode(), x.request_id.encode())]})
    except OSError:  # the client left while the upstream's handshake ran (the server's ClientDisconnected)
        x.fail(Outcome.CLIENT_ABORTED, "client disconnected before the session opened")
        session.ended_by, session.code = "client", 1006
        return False
    return True


async def _open_then_accept(x: Exchange, session: Session, scope: dict, send) -> bool:
    """Open the upstream, then accept the client with the subprotocol the upstream chose: an upstream that refuses
    is the HTTP answer to the client's handshake. False when there is no session to relay."""
    upstream = await _upstream_open(x, scope)
    if isinstance(upstream, HttpResponseBase):
        session.answered = True
        await _deny(scope, send, upstream)
        return False
    session.upstream = upstream
    if not await _accept(x, session, send, upstream.subprotocol):
        await asyncio.shield(upstream.close())
        return False
    return True


async def _open_after_first_message(x: Exchange, session: Session, scope: dict, receive, send) -> bool:
    """A session whose model only its first message names (Gemini Live's setup), that a step judges by its model:
    accept the client, read and judge that message, and only then open the upstream (with the provider's credential) and
    send it that message first, as it came (text or binary): a refused session never reaches the provider.

    The client is accepted without a subprotocol (the upstream's choice is not known yet; Gemini Live uses none),
    and an upstream that then refuses or cannot be reached is logged as its HTTP answer would be, the client
    getting close code 1014 (bad gateway) with that status."""
    if not await _accept(x, session, send, None):
        return False
    first = await _first_message(x, session, receive, send)
    if first is None:
        return False
    upstream = await _upstream_open(x, scope)
    if isinstance(upstream, HttpResponseBase):
        session.answered = True
        try:
            session.tracks_end()  # a first message kept in a file
        except OSError as exc:
            log.warning("realtime session %s: its files were not saved: %s", x.request_id, exc)
        await _close(send, UPSTREAM_LOST, f"upstream did not open the session (HTTP {upstream.status_code})")
        return False
    session.upstream = upstream
    try:
        await upstream.send(first)
    except ConnectionClosed:
        pass  # the upstream is gone already: the relay tells how
    return True


async def _first_message(x: Exchange, session: Session, receive, send) -> str | bytes | None:
    """The client's first message, journaled, once every step's judge allows the model it names; None when the
    session ended instead: refused (closed as the judge that refused says: session_policy.session_model_judged),
    the client gone, or nothing sent within REQUEST_BODY_TIMEOUT (close 1008: a client that never sends its setup
    is not held open)."""
    try:
        async with asyncio.timeout(settings.REQUEST_BODY_TIMEOUT):
            message = await receive()
    except TimeoutError:
        why = f"no first message within {settings.REQUEST_BODY_TIMEOUT:g} s (REQUEST_BODY_TIMEOUT)"
        x.fail(Outcome.GATEWAY_ERROR, f"The client sent {why}: the session was closed before it reached the upstream.")
        session.ended_by, session.code, session.reason = "gateway", 1008, why
        await _close(send, 1008, why)
        return None
    if message["type"] != "websocket.receive":  # the client left (or the server is stopping)
        code = message.get("code", 1005)
        session.ended_by = "server" if code == SERVER_RESTART else "client"
        session.code, session.reason = code, message.get("reason") or ""
        return None
    data = message.get("text")
    data = data if data is not None else message.get("bytes") or b""
    read = session.frame("client", data)
    stop = await session_model_judged(x, session.asked(data, read, first=True))
    if stop is not None:
        await session.stop_send(stop, send)
        return None
    return data


async def _close(send, code: int, reason: str) -> None:
    """Close the client's WebSocket (a client that left meanwhile needs nothing)."""
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason.encode()[:123].decode(errors="ignore")})
    except OSError:
        pass
