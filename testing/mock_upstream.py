"""A fast mock OpenAI upstream on raw asyncio (no framework, so it is never the bottleneck).

Used by the tests, the benchmark and seed data. Routes (OpenAI wire format):
  POST /v1/chat/completions   JSON, or SSE when "stream": true (usage chunk if include_usage)
  POST /v1/responses          JSON, or Responses API SSE events
  POST /v1/embeddings, GET /v1/models
  GET, DELETE /v1/models/{id}  a model object, a deletion (the id percent-decoded once, as servers do)
  POST /v1/images/generations and /v1/images/edits   b64_json PNG
  POST /v1/audio/speech       audio/mpeg bytes (x-mock-size)
  POST /v1/audio/transcriptions  JSON: a text and gpt-4o-transcribe's usage (audio input tokens)
  Anthropic, Gemini and Replicate routes: see testing/mock_providers.py; OpenAI bodies: testing/mock_openai.py
  GET  /bin?size=N            N bytes of application/octet-stream, streamed
  POST /upload                reads the body, answers its size
  POST /v1/files              reads the body, answers a file object with its size (bytes) and sha256
Request headers steer it: x-mock-status (error status; with x-mock-together: N, answered once N such
requests are in flight, or after a second), x-mock-events / x-mock-delay-ms (SSE),
x-mock-gzip (gzip the JSON answer), x-mock-tool-call, x-mock-usage (a JSON object of chat usage fields),
x-mock-fault (close-mid-stream,
close-mid-event: half an event of a stream, then the connection reset, end-early: half a stream's
events, then its end of body, no-done: a stream without its final [DONE], linger-end: a stream's
end of body x-mock-stall-s after its last event,
stall, reset, bad-json, wrong-length, bad-sse: broken SSE framing, echo-auth: a 401 whose body
and headers echo the request's credentials, stall-body: half the JSON body, then x-mock-stall-s
of silence, then the rest), x-mock-content-type (label the answer with this content type
instead of the right one). Stalls and SSE delays watch the socket: when the gateway closes the
connection, `Received.peer_closed_at` is set (time.monotonic()) and the answer stops.
Answers to HEAD have no body; a CORS preflight (OPTIONS with Access-Control-Request-Method) gets
api.openai.com's answer: any origin, the headers asked for. Nothing received is decoded: `Received.head` is the request line
and headers byte for byte, `target`, `path` and `query` are as they came on the wire.

Run alone: python -m testing.mock_upstream --port 9100
"""

import argparse
import asyncio
import base64
import contextvars
import gzip
import hashlib
import json
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from testing.media import PNG
from testing.mock_openai import openai_chat, openai_chat_events, openai_response, openai_responses_events
from testing.mock_providers import provider_answer  # Anthropic, Gemini, Replicate routes
from testing.threads import ServerThread

CHUNK = 64 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB of deterministic binary


# Every framing mistake a stream can make: missing blank lines, bad JSON, wrong types, bare CRs,
# a field without colon, an unterminated last event.
BROKEN_SSE = [
    'data: {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n',
    "data: {not json}\n\n",
    "event: \n:comment only\r\n\r\n",
    'data: {"object": "chat.completion.chunk", "choices": [{"index": "zero", "delta": 5}, 7, null]}\n\n',
    'data: {"choices": {"index": 0}, "usage": "many"}\n\n',
    'event: response.completed\ndata: {"type": "response.completed", "response": [1, 2]}\n\n',
    "\r\r\n\nfieldwithoutcolon\n\n",
    'data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": -1}, 3]}}]}\n\n',
    "retry: abc\n\ndata: [DONE]",
]


_conn_reader: contextvars.ContextVar[asyncio.StreamReader] = contextvars.ContextVar("conn_reader")
_conn_method: contextvars.ContextVar[str] = contextvars.ContextVar("conn_method", default="")


class _PeerGone(Exception):
    """The gateway closed the connection while the mock was still answering."""


@dataclass
class Received:
    """What the mock saw of one request."""

    method: str
    path: str  # the request target before its "?", as sent (still percent-encoded)
    query: str  # after the "?", as sent
    headers: list[tuple[str, str]]
    body: bytes
    size: int
    sha256: str
    peer_closed_at: float | None = None  # when the gateway hung up before the answer ended
    target: str = ""  # the request target as sent
    head: bytes = b""  # the request line and headers, byte for byte (blank line included)

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitively."""
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


@dataclass
class MockUpstream:
    """The server; `received` lists every request it saw (bodies over 8 MiB kept as size+hash)."""

    host: str = "127.0.0.1"
    port: int = 0
    received: list[Received] = field(default_factory=list)
    record: bool = True
    # x-mock-together: N with x-mock-status: the error answer waits (at most a second) until N such requests
    # are in flight at once; together_most is the most there were (tests see who waited for whom).
    together: int = 0
    together_most: int = 0

    async def start(self) -> None:
        """Listen (port 0 picks a free one)."""
        self.server = await asyncio.start_server(self._conn, self.host, self.port, backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """Base URL of the mock."""
        return f"http://{self.host}:{self.port}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        current: Received | None = None
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = []
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers.append((k.strip(), v.strip()))
                hmap = {k.lower(): v for k, v in headers}
                digest, size, keep = hashlib.sha256(), 0, []
                if "chunked" in hmap.get("transfer-encoding", "").lower():
                    while True:
                        n = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                        if n == 0:
                            await reader.readline()
                            break
                        data = await reader.readexactly(n)
                        await reader.readexactly(2)
                        size += n
                        digest.update(data)
                        if size <= 8 << 20:
                            keep.append(data)
                else:
                    left = int(hmap.get("content-length", "0") or 0)
                    while left:
                        data = await reader.read(min(left, 1 << 20))
                        if not data:
                            raise ConnectionError
                        left -= len(data)
                        size += len(data)
                        digest.update(data)
                        if size <= 8 << 20:
                            keep.append(data)
                path, _, query = target.partition("?")
                req = Received(method, path, query, headers, b"".join(keep) if size <= 8 << 20 else b"",
                               size, digest.hexdigest(), target=target, head=head)
                if self.record:
                    self.received.append(req)
                _conn_reader.set(reader)  # per connection task, for _pause
                _conn_method.set(method)  # for _send: no body in answers to HEAD
                current = req
                keep_open = await self._answer(req, hmap, writer)
                if not keep_open or hmap.get("connection", "").lower() == "close":
                    break
        except _PeerGone:
            if current is not None and current.peer_closed_at is None:
                current.peer_closed_at = time.monotonic()
        except ConnectionError:
            if current is not None and current.peer_closed_at is None:
                current.peer_closed_at = time.monotonic()
        except (asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but stop at once (raising _PeerGone) if the gateway closes the connection."""
        reader = _conn_reader.get()
        try:
            data = await asyncio.wait_for(reader.read(1), timeout=seconds)
        except asyncio.TimeoutError:
            return
        if not data:
            raise _PeerGone

    async def _send(self, writer, status: int, body: bytes, ctype: str = "application/json",
                    extra: list[tuple[str, str]] | None = None, length: int | None = None) -> None:
        head = [f"HTTP/1.1 {status} X", f"content-type: {ctype}",
                f"content-length: {len(body) if length is None else length}", "x-request-id: mock-req-1"]
        head += [f"{k}: {v}" for k, v in extra or []]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (b"" if _conn_method.get() == "HEAD" else body))
        await writer.drain()

    async def _answer(self, req: Received, h: dict[str, str], writer) -> bool:
        """Write the answer; False to close the connection."""
        fault = h.get("x-mock-fault", "")
        if fault == "stall":
            await self._pause(float(h.get("x-mock-stall-s", "30")))
        if fault == "reset":
            writer.transport.abort()
            return False
        if fault == "echo-auth":  # a careless upstream that repeats the credential back
            auth = h.get("authorization", "") or h.get("x-api-key", "")
            body = json.dumps({"error": {"message": f"Incorrect API key provided: {auth}",
                                         "type": "invalid_request_error", "code": "invalid_api_key"}}).encode()
            extra = [("x-echo-auth", auth), ("set-cookie", f"sess={auth[-20:]}; Path=/; HttpOnly")]
            if h.get("x-mock-gzip") and "gzip" in h.get("accept-encoding", ""):  # the echo inside gzip
                body = gzip.compress(body)
                extra.append(("content-encoding", "gzip"))
            await self._send(writer, 401, body, extra=extra)
            return True
        if req.method == "OPTIONS" and "access-control-request-method" in h:
            await self._preflight(writer, h)
            return True
        if "x-mock-status" in h:
            status = int(h["x-mock-status"])
            body = json.dumps({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                         "param": None, "code": "invalid_api_key"}}).encode()
            wanted = int(h.get("x-mock-together", "0"))
            self.together += 1
            self.together_most = max(self.together_most, self.together)
            try:
                deadline = time.monotonic() + 1.0
                while self.together < wanted and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await self._send(writer, status, body)
            finally:
                self.together -= 1
            return True
        payload = {}
        if req.body and h.get("content-type", "").startswith("application/json"):
            try:
                payload = json.loads(req.body)
            except ValueError:
                payload = {}
        answered = await provider_answer(self, req, h, payload, writer)
        if answered is not None:
            return answered
        return await self._openai_answer(req, h, payload, writer, fault)

    async def _preflight(self, writer, h: dict[str, str]) -> None:
        """A CORS preflight, answered as api.openai.com does: any origin, the headers asked for."""
        head = ["HTTP/1.1 200 OK", "access-control-allow-origin: *",
                "access-control-allow-methods: GET, POST, PUT, PATCH, DELETE, OPTIONS",
                f"access-control-allow-headers: {h.get('access-control-request-headers', '')}",
                "access-control-max-age: 7200", "content-length: 0"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()

    async def _openai_answer(self, req: Received, h: dict[str, str], payload: dict, writer, fault: str) -> bool:
        """OpenAI's routes, and the plain /bin and /upload ones."""
        p = req.path
        if p.endswith("/chat/completions") or p.endswith("/completions"):
            if payload.get("stream"):
                return await self._sse(writer, openai_chat_events(payload, h), h, fault)
            return await self._json(writer, openai_chat(payload, h), h, fault)
        if p.endswith("/responses"):
            if payload.get("stream"):
                return await self._sse(writer, openai_responses_events(payload, h), h, fault)
            return await self._json(writer, openai_response(payload, "hello from responses"), h, fault)
        if p.endswith("/embeddings"):
            return await self._json(writer, {"object": "list", "model": payload.get("model", "text-embedding-3-small"),
                                             "data": [{"object": "embedding", "index": 0,
                                                       "embedding": [0.1, 0.2, 0.3]}],
                                             "usage": {"prompt_tokens": 3, "total_tokens": 3}}, h, fault)
        if p.startswith("/v1/models/") and req.method in ("GET", "DELETE"):
            model = unquote(p.removeprefix("/v1/models/"))
            if req.method == "DELETE":
                return await self._json(writer, {"id": model, "object": "model", "deleted": True}, h, fault)
            return await self._json(writer, {"id": model, "object": "model", "created": 1, "owned_by": "mock"},
                                    h, fault)
        if p.endswith("/models"):
            return await self._json(writer, {"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1, "owned_by": "openai"}]}, h, fault)
        if p.endswith("/images/generations") or p.endswith("/images/edits") or p.endswith("/images/variations"):
            n = int(payload.get("n", 1) or 1)
            data = [{"b64_json": base64.b64encode(PNG).decode(), "revised_prompt": "a red square"}] * n
            return await self._json(writer, {"created": int(time.time()), "data": data,
                                             "usage": {"input_tokens": 5, "output_tokens": 10,
                                                       "total_tokens": 15}}, h, fault)
        if p.endswith("/audio/transcriptions"):
            return await self._json(writer, {"text": "Hello there.", "usage": {
                "type": "tokens", "input_tokens": 14, "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
                "output_tokens": 45, "total_tokens": 59}}, h, fault)
        if p.endswith("/audio/speech"):
            size = int(h.get("x-mock-size", "4096"))
            return await self._binary(writer, size, h.get("x-mock-content-type", "audio/mpeg"), fault)
        if p == "/bin":
            size = int(parse_qs(req.query).get("size", ["1048576"])[0])
            return await self._binary(writer, size, "application/octet-stream", fault)
        if p == "/upload":
            return await self._json(writer, {"size": req.size, "sha256": req.sha256}, h, fault)
        if p.endswith("/files") and req.method == "POST":  # a file object; the body is only counted
            return await self._json(writer, {"id": "file-mock", "object": "file", "bytes": req.size,
                                             "created_at": int(time.time()), "filename": "upload",
                                             "purpose": "assistants", "sha256": req.sha256}, h, fault)
        await self._send(writer, 404, json.dumps({"error": {"message": f"mock: no route {p}"}}).encode())
        return True

    async def _json(self, writer, obj: dict, h: dict[str, str], fault: str) -> bool:
        body = json.dumps(obj).encode()
        if fault == "bad-json":
            body = body[: len(body) // 2]
        extra = []
        if h.get("x-mock-gzip") and "gzip" in h.get("accept-encoding", ""):
            body = gzip.compress(body)
            extra.append(("content-encoding", "gzip"))
        ctype = h.get("x-mock-content-type", "application/json")
        if fault == "wrong-length":
            await self._send(writer, 200, body, ctype, extra=extra, length=len(body) + 100)
            return False
        if fault == "stall-body":
            half = len(body) // 2
            await self._send(writer, 200, body[:half], ctype, extra=extra, length=len(body))
            await self._pause(float(h.get("x-mock-stall-s", "30")))
            writer.write(body[half:])
            await writer.drain()
            return True
        await self._send(writer, 200, body, ctype, extra=extra)
        return True

    async def _binary(self, writer, size: int, ctype: str, fault: str) -> bool:
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {size}\r\n\r\n".encode())
        sent = 0
        while sent < size:
            part = BLOCK[: min(CHUNK, size - sent)]
            writer.write(part)
            sent += len(part)
            await writer.drain()
            if fault == "close-mid-stream" and sent >= size // 2:
                writer.transport.abort()
                return False
        return True

    async def _sse(self, writer, events: list[str], h: dict[str, str], fault: str) -> bool:
        delay = float(h.get("x-mock-delay-ms", "0")) / 1000
        if fault == "bad-sse":
            events = BROKEN_SSE
        elif fault == "end-early":  # the body ends cleanly halfway: no finish_reason, no [DONE]
            events = events[: len(events) // 2]
        elif fault == "no-done":  # every event but the final [DONE], as some compatible servers send
            events = [e for e in events if e != "data: [DONE]\n\n"]
        ctype = h.get("x-mock-content-type", "text/event-stream").encode("latin-1")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: " + ctype + b"\r\ntransfer-encoding: chunked\r\n"
                     b"cache-control: no-cache\r\n\r\n")
        for i, ev in enumerate(events):
            if fault == "close-mid-stream" and i == len(events) // 2:
                await writer.drain()
                writer.transport.abort()
                return False
            data = ev.encode()
            if fault == "close-mid-event" and i == len(events) // 2:
                half = data[: len(data) // 2]
                writer.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
                await writer.drain()
                writer.transport.abort()
                return False
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
            if delay:
                await self._pause(delay)
        if fault == "linger-end":  # the last event sent, the end of body comes late
            await self._pause(float(h.get("x-mock-stall-s", "1")))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


class MockUpstreamThread(ServerThread):
    """Runs a MockUpstream on its own event loop in a thread (for tests)."""

    def __init__(self) -> None:
        super().__init__(MockUpstream())


async def _main(port: int) -> None:
    mock = MockUpstream(port=port, record=False)
    await mock.start()
    print(f"mock upstream on {mock.url}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        import uvloop  # faster loop when installed (uvicorn[standard] brings it)
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_main(args.port))
