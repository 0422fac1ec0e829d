"""One exchange, stage by stage: route, refuse, record the request, policy steps, call upstream, relay.

Each stage is a function of its own module; this one only says in which order they run and
what ends an exchange early. A reader can list the request path from `exchange_forward`.
"""

import asyncio
import functools

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase

from logs.outcomes import Outcome
from logs.pipeline.capture import content_type_is_text
from logs.records import RequestRecord
from logs.redaction.scrub import Masked
from proxy.exchange import REQUEST_ID_HEADER, Exchange, json_error
from proxy.forwarded import forwarded_note
from proxy.paths import NoRoute, PathRefused, Route, path_owner, route_find
from proxy.refusals import refusal_find
from proxy.relay import relay_response
from proxy.request_body import Refusal, body_decoded
from proxy.step_answer import step_answer_log
from proxy.steps import relay_filter, steps_active, steps_run
from proxy.threads import off_loop
from proxy.upstream import headers_forward, upstream_call, upstream_failure_answer


async def exchange_forward(request: HttpRequest) -> HttpResponseBase:
    """Forward one request to its provider and stream the answer back, logging both."""
    route = route_or_answer(request)
    if not isinstance(route, Route):
        return route
    x = Exchange(request, route)
    request.gateway_exchange = x  # the ASGI adapter's disconnect watcher asks it (proxy/asgi.py)
    refusal = await refusal_find(x)
    if refusal is not None:
        return refuse(x, refusal)
    try:
        await request_record(x)
    except asyncio.CancelledError:  # the client left (or the grace ran out) while its body was being kept
        x.cancelled_mark("while its request body was being saved")
        if x.shutting_down:
            return shutdown_answer(x, NOT_FORWARDED)
        x.response_log(x.response_record(status=None, headers=[], content_type=""))
        raise
    # A CORS preflight asks the upstream whether the browser may send its call: no key, body or model for
    # a step to judge, and an answer that must not be held (the browser gives up) nor cached (it is
    # the upstream's answer for one Origin and list of headers, which the cache does not match on).
    steps = [] if x.preflight else steps_active()
    x.forward_headers = headers_forward(x.headers, request=True)
    try:
        answer = await steps_run(x, steps)
    except asyncio.CancelledError:  # the client left while a step waited (a hook's thread, the hold queue)
        x.cancelled_mark("during the policy steps")  # unless the step said where first
        if x.shutting_down:
            return shutdown_answer(x, NOT_FORWARDED)
        x.response_log(x.response_record(status=None, headers=[], content_type=""))
        raise
    if answer is not None:
        return await step_answered(x, answer)
    if x.request_changed:
        await forwarded_note(x)
    try:
        upstream = await upstream_call(x)
    except asyncio.CancelledError:
        if not x.shutting_down:  # the client left: logged, and goes on up
            raise
        if not x.sent:  # it waited for a free upstream connection (UPSTREAM_MAX_CONNECTIONS): never sent
            return shutdown_answer(x, NOT_FORWARDED)
        return shutdown_answer(x, "The gateway shut down before the upstream answered; the upstream may have "
                                  "received the request.")
    except Exception as exc:
        return upstream_failure_answer(x, exc)
    if not 100 <= upstream.status_code <= 599:  # the HTTP client reads any three digits; no answer can carry them
        await upstream.aclose()
        return x.gateway_answer(502, f"Upstream answered with status {upstream.status_code}, which HTTP does not "
                                     "have: not relayed", outcome=Outcome.UPSTREAM_ERROR)
    return await relay_response(x, upstream, functools.partial(relay_filter, x, steps))


NOT_FORWARDED = "The gateway is shutting down and this request was not forwarded: retry it."


def shutdown_answer(x: Exchange, message: str) -> HttpResponseBase:
    """The shutdown grace ran out before anything was sent: the client, still there, gets a 503 in its
    provider's shape (uvicorn's own answer would be a bare 500), logged as the exchange's end."""
    asyncio.current_task().uncancel()
    return x.gateway_answer(503, message, outcome=Outcome.INTERRUPTED)


def route_or_answer(request: HttpRequest) -> Route | HttpResponseBase:
    """Where the request goes; a path that is unsafe or served by nobody is answered here (not logged)."""
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.path
    try:
        return route_find(raw_path)
    except PathRefused as exc:
        return json_error(400, path_owner(raw_path).error_body(f"Refused path: {exc}", kind="invalid_request_error",
                                                              status=400))
    except NoRoute as exc:
        return json_error(404, path_owner(raw_path).error_body(str(exc), kind="not_found", status=404))


def refuse(x: Exchange, refusal: Refusal) -> HttpResponseBase:
    """Log the refused request (without its body) and answer in the provider's error shape."""
    record = x.request_record()
    if refusal.body_size is not None:
        record.body_size = refusal.body_size
    x.request_log(record)
    if refusal.outcome == Outcome.CLIENT_ABORTED:
        # Nobody is left to answer: logged without a status, as every other departure is (a 400 that
        # no one received counted among the client errors, and the row said the gateway answered it).
        x.fail(Outcome.CLIENT_ABORTED, refusal.message)
        x.response_log(x.response_record(status=None, headers=[], content_type=""))
        return HttpResponse(status=refusal.status)  # sent to no one: the server drops it
    response = x.gateway_answer(refusal.status, refusal.message, kind=refusal.kind, outcome=refusal.outcome)
    for name, value in refusal.headers:
        response[name] = value
    return response


def _body_as_file(x: Exchange) -> bool:
    """Whether the log keeps the request body as a file: large, binary or multipart."""
    ct = x.content_type.lower()
    return bool(x.body.size) and (x.body.size > settings.LOG_BODY_INLINE_MAX_BYTES or not content_type_is_text(ct)
                                  or ct.startswith("multipart/"))


# A compressed request body is logged decoded up to this many times its size (JSON prompts compress
# 3-10x), or up to DECODED_ALWAYS_BYTES whatever its ratio; past that it is kept as the bytes received.
DECODED_RATIO_MAX = 20
DECODED_ALWAYS_BYTES = 64 * 1024


def _body_text(x: Exchange, data: bytes) -> str | None:
    """The body as the log's text column keeps it: its Content-Encoding undone, as answers are logged (a
    gzip JSON body was a file nobody could read, its model unknown and its credential fields unmasked);
    None when it is kept as a file: not UTF-8, an encoding that cannot be undone within the inline limit,
    or one that grows it past DECODED_RATIO_MAX times (a few KB of gzip from anyone, a refused key's
    too, would write a MiB of text to the log each: that body is kept as it came)."""
    if any(k.lower() == "content-encoding" for k, _ in x.headers):
        size = len(data)
        data = body_decoded(x.headers, data, min(settings.LOG_BODY_INLINE_MAX_BYTES,
                                                 max(DECODED_RATIO_MAX * size, DECODED_ALWAYS_BYTES)))
        if data is None:
            return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # raw bytes never go into a TEXT column
        return None


async def request_record(x: Exchange) -> None:
    """Journal the request as received (credentials masked), before anything goes upstream.

    Its body inline, or as a spool file (large, binary or multipart bodies).
    """
    record: RequestRecord = x.request_record()
    data = x.body.in_memory()
    masked = Masked()
    if data is not None and not _body_as_file(x):
        text = _body_text(x, data)
        if text is not None:
            record.body = x.scrubber.text(text, x.content_type, answer=False, masked=masked)
    left: asyncio.CancelledError | None = None
    if x.body.size and record.body is None:
        # Kept even if the client leaves meanwhile (the copy of a large body takes a while): the request is
        # logged with its file, then the cancellation goes on (unlogged before, its copy left in the spool).
        keep = asyncio.ensure_future(off_loop(x.body.keep, x.content_type, x.scrubber, masked))
        while True:
            try:
                record.body_file = await asyncio.shield(keep)
                break
            except asyncio.CancelledError as exc:
                if keep.cancelled():
                    raise
                left = exc
            except OSError as exc:  # spool folder full or unwritable: forward anyway, say so in the log
                x.notes.append(f"request body file not saved: {exc}")
                break
    if note := masked.note("request body (the log's copy only; anything forwarded went as received)"):
        x.notes.append(note)
    x.request_log(record)
    if left is not None:
        raise left


async def step_answered(x: Exchange, answer: HttpResponseBase) -> HttpResponseBase:
    """A policy step answered the request itself: logged as the exchange's response, no upstream call.

    It is logged as the client gets it (proxy/step_answer.py), a streamed one as it ends; a cache hit logs
    itself (its record keeps the stored answer's headers).
    """
    if not getattr(answer, "gateway_logs_itself", False):
        await step_answer_log(x, answer)
    added = [*x.answer_headers, (REQUEST_ID_HEADER, x.request_id)]
    pairs = getattr(answer, "gateway_headers", None)  # headers sent exactly as listed (proxy/asgi.py)
    if pairs is not None:
        answer.gateway_headers = [*pairs, *added]
    else:
        for name, value in added:
            answer[name] = value
    return answer
