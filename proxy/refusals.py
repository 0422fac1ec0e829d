"""Requests the gateway answers itself, before anything is logged as forwarded: bad method, limits, access."""

from proxy.access import AccessDenied, access_check
from proxy.exchange import Exchange
from proxy.request_body import Refusal

# TRACE would echo credentials back, CONNECT would open a tunnel: neither is an API call.
PROXY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def refusal_find(x: Exchange) -> Refusal | None:
    """Why this request must not go upstream, or None. Also learns which gateway key it presented."""
    refusal = x.refusal  # a limit hit while the body was read (size, time, client gone)
    try:
        x.gateway_key = access_check(x.headers)
    except AccessDenied as exc:
        refusal = refusal or Refusal(401, str(exc), kind="authentication_error")
    if refusal is None and x.method not in PROXY_METHODS:
        refusal = Refusal(405, f"Method {x.method} is not supported by the gateway.",
                          headers=(("Allow", ", ".join(sorted(PROXY_METHODS))),))
    return refusal
