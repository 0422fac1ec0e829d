"""A mock realtime upstream (WebSocket): OpenAI's Realtime event protocol, Gemini Live's, and an echo.

  /v1/realtime?model=...        OpenAI Realtime: session.created at once; session.update ->
                                session.updated; input_audio_buffer.commit -> .committed;
                                response.create -> response.created, text deltas, audio deltas
                                (base64 PCM16), response.done with usage. A client event
                                {"type": "mock.close", "code": 1011, "reason": "..."} makes the
                                mock close the session with that code; {"type": "mock.drop"}
                                makes it drop the connection without a close frame.
  a path with refuse-<status>   the upgrade answered with that HTTP status and a JSON error body (with echo
                                in the path too, its message and an X-Echo header quote the Authorization).
  a path with slow-open-<ms>    the upgrade answered after that many milliseconds.
  /ws/...BidiGenerateContent    Gemini Live: setup -> setupComplete; realtimeInput audio;
                                clientContent turnComplete -> modelTurn audio + turnComplete, usage
                                (with binary in the query, each message in a binary frame, as Google's).
  /echo                         every message sent back as it came (text or binary).
Every connection's handshake headers and received messages are kept in `sessions`; `handshakes` counts every
upgrade asked for, refused ones too.
"""

import asyncio
import base64
import json
import re
import struct
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from testing.threads import ServerThread

PCM_CHUNK = struct.pack("<240h", *([1000, -1000] * 120))  # 10 ms of a 24 kHz square wave, PCM16


@dataclass
class MockSession:
    """What the mock saw of one WebSocket session."""

    path: str
    headers: list[tuple[str, str]]
    subprotocol: str | None
    received: list[str | bytes] = field(default_factory=list)
    closed_code: int | None = None


class MockRealtime:
    """The server; `sessions` lists every session it saw."""

    def __init__(self) -> None:
        self.sessions: list[MockSession] = []
        self.handshakes = 0  # upgrades asked for, whatever their answer
        self.port = 0
        self.audio_chunks = 3  # audio deltas per response

    async def start(self) -> None:
        self.server = await serve(self._session, "127.0.0.1", 0, max_size=None, compression=None,
                                  process_request=self._refusal)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _refusal(self, ws: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        slow = re.search(r"slow-open-(\d+)", request.path)
        if slow is not None:  # a handshake that takes that many milliseconds
            await asyncio.sleep(int(slow.group(1)) / 1000)
        match = re.search(r"refuse-(\d{3})", request.path)
        if match is None:
            return None
        status = HTTPStatus(int(match.group(1)))
        message = f"refused: {status.phrase}"
        extra = []
        if "echo" in request.path:  # an upstream quoting the key it was sent, as an error may
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            message, extra = f"Incorrect API key provided: {sent}", [("X-Echo", sent)]
        body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        return Response(status.value, status.phrase, Headers([("Content-Type", "application/json"),
                                                              ("Content-Length", str(len(body))), *extra]), body)

    async def _session(self, ws: ServerConnection) -> None:
        request = ws.request
        session = MockSession(request.path, list(request.headers.raw_items()), ws.subprotocol)
        self.sessions.append(session)
        try:
            if "echo" in request.path:
                async for message in ws:
                    session.received.append(message)
                    await ws.send(message)
            elif "BidiGenerateContent" in request.path:
                await self._gemini(ws, session)
            else:
                await self._openai(ws, session)
        finally:
            session.closed_code = ws.close_code

    async def _send(self, ws: ServerConnection, event: dict) -> None:
        await ws.send(json.dumps(event))

    async def _openai(self, ws: ServerConnection, session: MockSession) -> None:
        model = request_model = ws.request.path.partition("model=")[2] or "gpt-realtime"
        fmt = {"type": "audio/pcm", "rate": 24000}
        await self._send(ws, {"type": "session.created", "event_id": "ev_0", "session": {
            "id": "sess_1", "object": "realtime.session", "model": request_model,
            "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}})
        responses = 0
        async for message in ws:
            session.received.append(message)
            event = json.loads(message)
            kind = event.get("type")
            if kind == "mock.close":
                await ws.close(event.get("code", 1011), event.get("reason", ""))
                return
            if kind == "mock.drop":
                ws.transport.abort()
                return
            if kind == "session.update":
                await self._send(ws, {"type": "session.updated", "session": {**event.get("session", {}),
                                                                              "model": model}})
            elif kind == "input_audio_buffer.commit":
                await self._send(ws, {"type": "input_audio_buffer.committed", "item_id": "item_in"})
            elif kind == "response.create":
                responses += 1
                await self._response(ws, f"resp_{responses}")

    async def _response(self, ws: ServerConnection, rid: str) -> None:
        await self._send(ws, {"type": "response.created", "response": {"id": rid, "status": "in_progress"}})
        for piece in ("Hello", " there"):
            await self._send(ws, {"type": "response.output_text.delta", "response_id": rid, "delta": piece})
        for _ in range(self.audio_chunks):
            await self._send(ws, {"type": "response.output_audio.delta", "response_id": rid,
                                  "delta": base64.b64encode(PCM_CHUNK).decode()})
        await self._send(ws, {"type": "response.done", "response": {
            "id": rid, "object": "realtime.response", "status": "completed",
            "usage": {"total_tokens": 30, "input_tokens": 12, "output_tokens": 18,
                      "input_token_details": {"cached_tokens": 4, "text_tokens": 8, "audio_tokens": 4},
                      "output_token_details": {"text_tokens": 6, "audio_tokens": 12}}}})

    async def _gemini(self, ws: ServerConnection, session: MockSession) -> None:
        binary = "binary" in ws.request.path.partition("?")[2]

        async def send(event: dict) -> None:
            await ws.send(json.dumps(event).encode() if binary else json.dumps(event))

        async for message in ws:
            session.received.append(message)
            event = json.loads(message)
            if "setup" in event:
                await send({"setupComplete": {}})
            elif (event.get("clientContent") or {}).get("turnComplete") or "realtimeInput" in event and (
                    event["realtimeInput"].get("audioStreamEnd")):
                parts = [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
                                         "data": base64.b64encode(PCM_CHUNK).decode()}}]
                await send({"serverContent": {"modelTurn": {"parts": parts}}})
                await send({"serverContent": {"turnComplete": True},
                            "usageMetadata": {"promptTokenCount": 9, "responseTokenCount": 11, "totalTokenCount": 20}})


class MockRealtimeThread(ServerThread):
    """Runs a MockRealtime on its own event loop in a thread (for tests and the benchmark)."""

    def __init__(self) -> None:
        super().__init__(MockRealtime())
