"""Reference: the smallest raw-ASGI pass-through on a shared httpx.AsyncClient, logging nothing.

It forwards method, path, query, headers and body to BENCH_UPSTREAM and streams the answer
back chunk by chunk. The benchmark compares the gateway against it: whatever the gateway costs
above this is the price of Django and of the audit log.

BENCH_TRANSPORT=aiohttp swaps httpx's transport for httpx-aiohttp's (same httpx API).
Run: BENCH_UPSTREAM=http://127.0.0.1:9100 uvicorn bench.passthrough:app --port 9200
"""

import os

import httpx

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:9100")
HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te",
                 b"upgrade", b"proxy-connection", b"trailer"})
_client: httpx.AsyncClient | None = None


def client_build() -> httpx.AsyncClient:
    """One shared client, default httpx transport or the aiohttp one."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    if os.environ.get("BENCH_TRANSPORT") == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        return httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=60)
    return httpx.AsyncClient(limits=limits, timeout=60)


async def body_read(receive) -> bytes:
    """The whole request body (the reference keeps it simple: bodies here are small)."""
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(parts)


async def app(scope, receive, send) -> None:
    """Forward one request and stream the answer back."""
    global _client
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _client = client_build()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = await body_read(receive)
    headers = [(k, v) for k, v in scope["headers"] if k not in HOP]
    url = UPSTREAM + scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}"
                                                    if scope["query_string"] else "")
    request = httpx.Request(scope["method"], url, headers=headers, content=body)
    upstream = await _client.send(request, stream=True)
    try:
        out = [(k, v) for k, v in upstream.headers.raw if k.lower() not in HOP or k.lower() == b"content-length"]
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": out})
        async for chunk in upstream.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await upstream.aclose()
