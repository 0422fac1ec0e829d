"""An upstream played by a function, for tests that need answers no real server would send.

`ScriptedTransport` goes where the gateway's upstream transport goes (proxy.upstream.transport_build):
each request is handed to `answer(request)`, which returns (status, headers, body), the body as
bytes or a list of chunks; the gateway then reads it chunk by chunk, as off a socket.
"""

import asyncio
from collections.abc import Callable

import httpx

Script = Callable[[httpx.Request], tuple[int, list[tuple[str, str]], bytes | list[bytes]]]


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], pause: float) -> None:
        self.chunks, self.pause = chunks, pause

    async def __aiter__(self):
        for chunk in self.chunks:
            if self.pause:
                await asyncio.sleep(self.pause)
            yield chunk


class ScriptedTransport(httpx.AsyncBaseTransport):
    """Answers every request with what the script says; keeps the requests it saw."""

    def __init__(self, answer: Script, pause: float = 0.0) -> None:
        self.answer, self.pause = answer, pause
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        status, headers, body = self.answer(request)
        chunks = [body] if isinstance(body, bytes) else list(body)
        return httpx.Response(status, headers=headers, stream=_Chunks(chunks, self.pause), request=request)
