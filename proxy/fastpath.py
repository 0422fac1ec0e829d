"""Serves proxied calls straight from ASGI, skipping Django's per-request machinery.

Django's ASGIHandler costs every request two thread hops (the request_started signal and
response.close(), both run through sync_to_async), a fresh executor thread
(ThreadSensitiveContext), URL resolution and the middleware chain. On the proxy path none of it
does anything (no database access on the event loop, no middleware applies), and it is most of
the gateway's overhead at low concurrency (see the README's "Benchmark"). This module builds
the same ASGIRequest Django would, calls the same `proxy_view`, and sends the response the
way Django does, including cancelling the exchange when the client disconnects (which is how
relay_stream learns of an abort). Anything it does not serve goes to Django unchanged.
"""

import asyncio
import functools
import logging
import tempfile
from contextlib import aclosing

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponseBase
from django.urls import Resolver404, URLResolver, get_resolver

from proxy.forward import json_error
from proxy.providers import openai_error
from proxy.views import proxy_view, server_error_json

log = logging.getLogger("django.request")

# The only middleware the proxy path may skip: it passes proxy paths straight through.
SKIPPABLE_MIDDLEWARE = ["gateway_project.middleware.AdminStackMiddleware"]


def fastpath_applies(scope: dict) -> bool:
    """True when Django would route this request to proxy_view with no middleware in the way."""
    if not settings.PROXY_FAST_PATH or settings.MIDDLEWARE != SKIPPABLE_MIDDLEWARE:
        return False
    return _routes_to_proxy(get_resolver(), scope["path"])


@functools.lru_cache(maxsize=1024)
def _routes_to_proxy(resolver: URLResolver, path: str) -> bool:
    """Whether the URLconf sends this path to proxy_view (cached: resolving costs ~2% of a request)."""
    try:
        return resolver.resolve(path).func is proxy_view
    except Resolver404:
        return False


async def _body_read(receive) -> tempfile.SpooledTemporaryFile | None:
    """The request body, spooled to disk past FILE_UPLOAD_MAX_MEMORY_SIZE; None if the client left."""
    body = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            body.close()
            return None
        if "body" in message:
            body.write(message["body"])
        if not message.get("more_body", False):
            body.seek(0)
            return body


async def _response_send(response: HttpResponseBase, send) -> None:
    """Send a Django response over ASGI, streaming ones chunk by chunk as they come."""
    headers = [(k.encode("ascii"), v.encode("latin-1")) for k, v in response.items()]
    headers += [(b"Set-Cookie", c.output(header="").encode("ascii").strip()) for c in response.cookies.values()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if response.streaming:
        async with aclosing(aiter(response)) as content:
            async for chunk in content:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body"})
    else:
        await send({"type": "http.response.body", "body": response.content})


async def _exchange_run(request: ASGIRequest, send) -> None:
    """Forward and answer; an unexpected error becomes the JSON 500, never a stack trace."""
    try:
        response = await proxy_view(request)  # the same Django async view the URLconf routes to
    except Exception:
        log.exception("Internal error on %s", request.path)
        response = server_error_json(request)
    await _response_send(response, send)


async def _disconnect_wait(receive) -> None:
    """Return when the client disconnects (the only message left after the body)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def proxy_asgi(scope: dict, receive, send) -> None:
    """One proxied call: read the body, run the exchange, cancel it if the client goes away."""
    body = await _body_read(receive)
    if body is None:
        return
    try:
        request = ASGIRequest(scope, body)
    except UnicodeDecodeError:
        body.close()
        await _response_send(json_error(400, openai_error("Request path is not valid UTF-8",
                                                          kind="invalid_request_error")), send)
        return
    exchange = asyncio.ensure_future(_exchange_run(request, send))
    watcher = asyncio.ensure_future(_disconnect_wait(receive))
    try:
        await asyncio.wait((exchange, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, exchange):
            if not task.done():
                task.cancel()  # on the exchange: relay_stream logs the client abort
        try:
            # An error raised while the response streamed (relay's UpstreamBroken) propagates
            # from here, as it does out of Django's handler: the ASGI entry point handles it.
            for task in (watcher, exchange):
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        finally:
            body.close()
