"""Replay: send a logged request again through this gateway, as it was or with an edited body.

The log never keeps a credential, so the operator supplies one (a provider key, or a gateway key
that holds one). The replay is an ordinary client request to the gateway: it is logged as a new
exchange, linked to the original by the `replay-of` metadata (an X-Gateway-Meta-Replay-Of header,
which never goes upstream).
"""

from dataclasses import dataclass

import httpx

from logs.models import Request
from logs.redaction.redact import MASK, header_is_secret
from logs.tags import META_PREFIX, tag_header
from providers import Provider

REPLAY_OF_HEADER = f"{META_PREFIX}replay-of"
# Not resent: the connection's own headers (httpx sets them for the new request), the encodings
# (the page shows the answer as text; the body sent is the logged text, a compressed one decoded)
# and the gateway's own headers (replaced below).
_NOT_RESENT = frozenset({"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
                         "upgrade", "proxy-connection", "accept-encoding", "content-encoding", "x-gateway-key",
                         "cookie"})
REPLAY_TIMEOUT = httpx.Timeout(300.0, connect=5.0)


class ReplayRefused(ValueError):
    """The exchange cannot be replayed (its body is a file, no credential given...): the message says why."""


@dataclass
class ReplayResult:
    """What the gateway answered to the replay."""

    status: int
    request_id: str  # the new exchange's id (X-Gateway-Request-Id), "" when the gateway gave none
    content_type: str
    body: str


def replay_headers(req: Request, provider: Provider, *, provider_key: str, gateway_key: str) -> list[tuple[str, str]]:
    """The original request's headers without its (masked) credentials, plus the ones supplied now."""
    headers = []
    for name, value in req.headers or []:
        low = str(name).lower()
        if low in _NOT_RESENT or tag_header(low) or header_is_secret(low) or MASK in str(value):
            continue
        headers.append((str(name), str(value)))
    if provider_key:
        headers.append(provider.credential_pair(provider_key))
    if gateway_key:
        headers.append(("X-Gateway-Key", gateway_key))
    for name, value in req.headers or []:  # the original's user, session and metadata go with it
        if tag_header(str(name)) and str(name).lower() != REPLAY_OF_HEADER:
            headers.append((str(name), str(value)))
    headers.append((REPLAY_OF_HEADER, req.pk.hex))
    return headers


def replay_send(*, base_url: str, req: Request, provider: Provider, body: str | None, provider_key: str,
                gateway_key: str) -> ReplayResult:
    """Send the request to the gateway at base_url and wait for the whole answer."""
    if not provider_key and not gateway_key:
        raise ReplayRefused("The log keeps no credential: give a provider key or a gateway key.")
    if body is None and req.body_size:
        raise ReplayRefused("This request's body is kept as a file (large, binary or multipart): "
                            "it cannot be replayed from this page.")
    headers = replay_headers(req, provider, provider_key=provider_key, gateway_key=gateway_key)
    url = base_url.rstrip("/") + req.endpoint + (f"?{req.query_string}" if req.query_string else "")
    if MASK in req.query_string:
        raise ReplayRefused("This request's query string carried a credential (masked in the log): "
                            "it cannot be replayed from this page.")
    with httpx.Client(timeout=REPLAY_TIMEOUT, follow_redirects=False) as client:
        answer = client.request(req.method, url, headers=headers,
                                content=body.encode("utf-8") if body is not None else None)
    return ReplayResult(status=answer.status_code, request_id=answer.headers.get("x-gateway-request-id", ""),
                        content_type=answer.headers.get("content-type", ""), body=answer.text)
