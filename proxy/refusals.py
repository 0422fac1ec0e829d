"""Requests the gateway answers itself, before anything is logged as forwarded: bad method, limits, access."""

import asyncio

from django.db import DatabaseError

from proxy.access import AccessDenied, access_check, access_identify, keys_unreadable, secret_carried
from proxy.exchange import Exchange
from proxy.paths import NoRoute, PathRefused, route_find
from proxy.request_body import CONNECTION_CLOSE, Refusal, declared_length
from proxy.upstream import header_problem

# TRACE would echo credentials back, CONNECT would open a tunnel: neither is an API call.
PROXY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


async def refusal_find(x: Exchange) -> Refusal | None:
    """Why this request must not go upstream, or None. Also learns which gateway key it presented."""
    refusal = x.refusal  # a limit hit while the body was read (size, time, client gone)
    if refusal is not None:
        # Refused anyway: name a GATEWAY_API_KEYS key in the log if there is one, without waiting
        # on a lookup (a client already gone would cancel the wait before the refusal is logged).
        try:
            x.gateway_key = access_check(x.headers)
        except AccessDenied:
            pass
        return refusal
    if x.preflight and not secret_carried(x.headers, x.query):
        # Browsers send it without any key: refusing it with a 401 failed every browser app before its
        # real request, which is checked like any other. (A gk- secret in its URL or a header is refused
        # below, as for any request: it would go upstream.)
        return None
    try:
        x.gateway_key = await access_identify(x.headers, x.query, x.provider)
    except AccessDenied as exc:
        x.gateway_key = exc.grant  # a known key refused (revoked, expired) is named on the log row
        refusal = Refusal(401, str(exc), kind="authentication_error")
    except DatabaseError as exc:  # the keys cannot be read: a database that is down, or never migrated
        # The driver's message (it may name the database's host and port) goes to the log only.
        x.notes.append(f"gateway keys not read: {type(exc).__name__}: {exc}")
        refusal = Refusal(503, keys_unreadable(exc), kind="gateway_error")
    except asyncio.CancelledError:  # the client left while its key was looked up: still logged
        x.request_log(x.request_record())
        x.cancelled_mark("while its gateway key was looked up")
        x.response_log(x.response_record(status=None, headers=[], content_type=""))
        raise
    if refusal is None and x.method not in PROXY_METHODS:
        refusal = Refusal(405, f"Method {x.method} is not supported by the gateway.",
                          headers=(("Allow", ", ".join(sorted(PROXY_METHODS))),))
    if refusal is None:
        # A server that reads HTTP leniently (uvicorn --http h11) passes a control character in a header value
        # (\x01, DEL): the upstream client refuses to write it, which was a 500 with a traceback per request.
        problem = next((p for k, v in x.headers if (p := header_problem(k, v))), "")
        if problem:
            refusal = Refusal(400, f"Request refused: {problem}.")
    return refusal


async def refusal_before_upload(scope: dict) -> Refusal | None:
    """A large upload that presents no usable gateway key, refused before its body is read: else anyone
    could make the gateway spool MAX_REQUEST_BODY_BYTES to disk before hearing 401. (A path nobody serves,
    a database that cannot be read: decided after the body, as for any request.)"""
    try:
        route = route_find(scope.get("raw_path", b"").decode("latin-1") or scope.get("path", ""))
    except (NoRoute, PathRefused):
        return None
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]
    try:
        await access_identify(headers, scope.get("query_string", b"").decode("latin-1"), route.provider)
    except AccessDenied as exc:
        return Refusal(401, f"{exc} (refused before the request body was read)", kind="authentication_error",
                       body_size=declared_length(scope) or 0, headers=CONNECTION_CLOSE)
    except DatabaseError:
        return None
    return None
