"""The proxy's ASGI adapter: reads the body under the gateway's limits, calls the Django view, sends its answer.

Proxied calls do not go through Django's ASGIHandler, whose per-request work (two thread hops
for signals and response.close(), a fresh executor thread, URL resolution, middleware) does
nothing for them and was most of the gateway's overhead at low concurrency (docs/benchmark.md).
This adapter builds the same ASGIRequest, calls the same async view Django would, and sends
the response the way Django does, including cancelling the exchange when the client
disconnects (which is how the relay learns of an abort).
"""

import asyncio
import io
import logging
from contextlib import aclosing

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, HttpResponseBase

from logs.ids import exchange_id_new
from logs.outcomes import Outcome
from proxy.exchange import RECEIVING, SHUTDOWN_CANCEL, response_header_pairs
from proxy.relay import UpstreamBroken
from proxy.refusals import refusal_before_upload
from proxy.request_body import BodySpool, Refusal, body_is_large, body_receive, refusal_before_body
from proxy.views import proxy_view, server_error_json

log = logging.getLogger("django.request")

# The longest an answer is read for its usage after its client left (a key counting tokens or spend).
DRAIN_MAX_SECONDS = 600


async def _response_send(response: HttpResponseBase, send) -> None:
    """Send a Django response over ASGI, streaming ones chunk by chunk as they come."""
    pairs = getattr(response, "gateway_headers", None)  # a relayed answer: the upstream's headers exactly
    if pairs is None:  # the gateway's own answer
        pairs = response_header_pairs(response)
        if not response.streaming and not response.has_header("Content-Length"):
            pairs.append(("Content-Length", str(len(response.content))))  # else the server sends it chunked
    else:
        response.gateway_headers = None  # sent below: not held for as long as a stream lasts
    # Built in the call: a local would hold the encoded headers for as long as a stream lasts.
    await send({"type": "http.response.start", "status": response.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs]})
    del pairs
    if response.streaming:
        # Its streaming_content, not aiter(response): that is one more generator around it, held by every stream.
        async with aclosing(response.streaming_content) as content:
            async for chunk in content:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body"})
    else:
        await send({"type": "http.response.body", "body": response.content})


# A browser reads an answer to another origin's page only when the answer allows it. The upstream
# decides for its own answers (relayed as sent); the gateway's own answers (a refused key, a limit,
# a body too large, an upstream away) allow any origin, as the providers' APIs do: without it a browser
# app saw "Failed to fetch" instead of the error, and its SDK retried a 401 or a 429 as a lost connection.
# No cookie is involved, so "*" suffices; "*" also exposes the headers (request id, Retry-After, RateLimit).
_CORS_OPEN = (("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", "*"))
# Headers the gateway adds to a relayed answer (an upstream's own X-Gateway-* never reach the client).
_GATEWAY_ADDED = ("x-gateway-", "ratelimit")


def _cors_open(request: ASGIRequest, response: HttpResponseBase) -> None:
    """Let the page that sent a cross-origin call read the gateway's own answer to it, and, in an answer the
    upstream opened to it, the headers the gateway added (the request id, the cache's HIT, a key's limits):
    a browser hides any header the answer does not expose, and the upstream does not know the gateway's."""
    if "HTTP_ORIGIN" not in request.META:  # (request.headers would build a dict of every header)
        return
    pairs = getattr(response, "gateway_headers", None)
    if pairs is None:
        for name, value in _CORS_OPEN:
            if not response.has_header(name):
                response[name] = value
        return
    if any(k.lower() == "access-control-allow-origin" for k, _ in pairs):
        added = list(dict.fromkeys(k for k, _ in pairs if k.lower().startswith(_GATEWAY_ADDED)))
        if added:  # a second field of the same name: browsers read the two lists as one
            response.gateway_headers = [*pairs, ("Access-Control-Expose-Headers", ", ".join(added))]


class _Call:
    """One proxied call as its disconnect watcher sees it: the request until the view has answered, then only the
    exchange the view made of it (proxy/forward.py sets it on the request). The request (Django's object, its
    META) is let go once the answer's head is built: a stream held it for as long as it lasted."""

    __slots__ = ("request", "exchange")

    def __init__(self, request: ASGIRequest) -> None:
        self.request: ASGIRequest | None = request
        self.exchange = None

    def exchange_get(self):
        """The call's exchange (proxy/exchange.Exchange), None before the view made one."""
        if self.request is not None:
            return getattr(self.request, "gateway_exchange", None)
        return self.exchange

    def answered(self) -> None:
        """The view answered: the request is no longer needed."""
        self.exchange, self.request = self.exchange_get(), None


async def _exchange_run(call: _Call, send) -> None:
    """Forward and answer; an unexpected error becomes the JSON 500, never a stack trace."""
    request = call.request
    try:
        response = await proxy_view(request)
    except Exception:
        log.exception("Internal error on %s", request.path)
        response = server_error_json(request)
    _cors_open(request, response)
    call.answered()
    del request  # not held while the answer streams
    try:
        await _response_send(response, send)
    finally:
        abandon = getattr(response, "gateway_abandon", None)
        if abandon is not None:
            await abandon()  # nothing to do unless the client left before the relay started


async def _run_until_disconnect(call: _Call, receive, send) -> None:
    """Run the exchange in this task; a watcher task cancels it if the client goes away first (the relay logs the abort).

    One extra task per exchange, not two and an asyncio.wait: the exchange's own task is the one
    the server gave this call.
    """
    task = asyncio.current_task()
    left = False
    cap: asyncio.TimerHandle | None = None

    async def watch() -> None:
        nonlocal left, cap
        while (await receive())["type"] != "http.disconnect":  # the only message left after the body
            pass
        left = True
        x = call.exchange_get()
        if x is not None and x.usage_counted and x.sent and not x.shutting_down:
            # A key that counts tokens or spend: a client hanging up once its answer was asked for (just
            # before a stream's usage chunk, or before a long answer arrived) would have it for free. The
            # exchange runs on (the server drops what is sent) and the relay reads its answer to the end.
            x.client_gone = True
            cap = asyncio.get_running_loop().call_later(DRAIN_MAX_SECONDS, task.cancel)
            return
        # At once: the server drops what is sent to a client that left, so a relay let run on would
        # log an answer the client never got as completed. One that hung up on a stream's final
        # event (openai-python closes at `data: [DONE]`) is told apart by the relay (stream_ended).
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await _exchange_run(call, send)
    except asyncio.CancelledError as exc:
        if not (left or SHUTDOWN_CANCEL in exc.args):  # not the client's departure nor the grace's end: pass it on
            raise
        task.uncancel()
    finally:
        watcher.cancel()
        if cap is not None:
            cap.cancel()


async def _body_receive(scope: dict, receive, spool: BodySpool) -> Refusal | None:
    """The body, or why the request is refused; one still arriving when the shutdown grace runs out is
    refused with a 503 (logged interrupted), instead of keeping the server up until its client gives up."""
    task = asyncio.current_task()
    RECEIVING.add(task)
    try:
        return await body_receive(scope, receive, spool)
    except asyncio.CancelledError as exc:
        if SHUTDOWN_CANCEL not in exc.args:
            raise
        task.uncancel()
        return Refusal(503, f"The gateway is shutting down: the request body was still arriving ({spool.size} bytes "
                            "received), and was not forwarded: retry it.", kind="gateway_error",
                       outcome=Outcome.INTERRUPTED, body_size=spool.size)
    finally:
        RECEIVING.discard(task)


async def proxy_app(scope: dict, receive, send) -> None:
    """One proxied call: read the body under the limits, then run the exchange."""
    spool = BodySpool(f"{exchange_id_new()}.request")
    try:
        refusal = refusal_before_body(scope)
        if refusal is None and body_is_large(scope):
            refusal = await refusal_before_upload(scope)
        refusal = refusal or await _body_receive(scope, receive, spool)
        try:
            # Django's own body stream stays empty: the body is the spool, read by the gateway only.
            request = ASGIRequest(scope, io.BytesIO())
        except UnicodeDecodeError:
            await _response_send(HttpResponse(b'{"error": {"message": "Request path is not valid UTF-8", '
                                              b'"type": "invalid_request_error"}}', status=400,
                                              content_type="application/json"), send)
            return
        request.gateway_body, request.gateway_refusal = spool, refusal
        call = _Call(request)
        del request  # the call lets it go once the view has answered
        await _run_until_disconnect(call, receive, send)
    except UpstreamBroken:
        # Already logged. Returning with the response unfinished makes the server drop the
        # connection, so the client sees a broken body instead of a truncated "complete" one.
        return
    finally:
        spool.close()
