"""Links an answer gives the client to the upstream, pointed at the gateway instead.

A provider may answer with a URL of its own API for the client's next call: Gemini's resumable upload
(the X-Goog-Upload-URL header the bytes go to), an Anthropic Message Batch's results_url. Followed as
given, that call goes around the gateway: never logged, no limits, and a gateway key that stands for
a stored provider credential sent to the provider. The provider module names such headers and fields
(link_headers, link_fields); here they become the gateway's URL for the same upstream path
(proxy/paths.gateway_link), each change noted in the log's steps. Only the client's copy changes: the
log keeps the answer as the upstream sent it, and the response cache does not keep such an answer
(the links name the host one client reached the gateway at).
"""

import re
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from providers.base import json_bytes
from proxy.exchange import Exchange
from proxy.paths import gateway_link
from wire.encoding import decode_pieces, encoding_name
from wire.jsonutil import json_parse

DECODED_MAX = 16 * 1024 * 1024  # the most a compressed answer is decoded to, to point its links at the gateway
# A Host that is a host, with an optional port (a name, IPv4, or [IPv6]): anything else (userinfo, a path,
# spaces) would put the client's words into the URL it is told to call.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def _origin(x: Exchange) -> str:
    """scheme://host the client reached the gateway at; "" when the Host header cannot make a URL of ours
    (absent, not a host, or not one of ALLOWED_HOSTS)."""
    host = next((v for k, v in x.headers if k.lower() == "host"), "").strip()
    if not _HOST.fullmatch(host) or not validate_host(split_domain_port(host)[0], settings.ALLOWED_HOSTS):
        return ""
    scheme = x.scheme  # uvicorn's, which reads X-Forwarded-Proto from FORWARDED_ALLOW_IPS
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):  # TRUST_X_FORWARDED_PROTO: as Django reads it
        sent = next((v for k, v in x.headers if k.lower() == "x-forwarded-proto"), None)
        if sent is not None:
            scheme = "https" if sent.split(",", 1)[0].strip() == "https" else "http"
    return f"{scheme}://{host}"


def _link(x: Exchange, name: str, value: str, origin: str) -> str | None:
    """The gateway's URL for a link of the answer to the upstream, noted in the log's steps; None if elsewhere."""
    link = gateway_link(x.route, value, origin) if origin else None
    if link is not None:
        x.decisions.append({"step": "links", "decision": f"{name} points at the gateway", "upstream": value})
    return link


def links_in_headers(x: Exchange, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's copy of the answer's headers, its links to the upstream (the provider's link_headers)
    pointed at the gateway: the client's next call (an upload's bytes) is then proxied and logged."""
    origin = _origin(x)
    return [(name, (_link(x, name, value, origin) or value) if name.lower() in x.provider.link_headers else value)
            for name, value in headers]


def links_in_body_possible(x: Exchange, status: int, content_type: str, is_sse: bool) -> bool:
    """Whether this answer may hold links to point at the gateway (a JSON answer on one of the provider's
    link_paths, never a results file): the relay then takes it whole."""
    provider = x.provider
    return bool(provider.link_fields) and not is_sse and 200 <= status < 300 and "json" in content_type.lower() \
        and x.route.upstream_path.startswith(provider.link_paths)


def _json_text(body: bytes, headers: list[tuple[str, str]]) -> bytes | None:
    """A JSON answer's text, decoded when it came compressed; None when it is not JSON (or cannot be read)."""
    fields = {k.lower(): v for k, v in headers}
    if "json" not in fields.get("content-type", ""):
        return None
    try:
        encoding = encoding_name(fields.get("content-encoding", ""))
        if not encoding:
            return body
        pieces, size = [], 0
        for piece in decode_pieces(encoding, [body]):
            size += len(piece)
            if size > DECODED_MAX:  # a compression bomb: the answer goes as it came
                return None
            pieces.append(piece)
        return b"".join(pieces)
    except ValueError:  # DecodeError: corrupt, cut short, or an encoding not decoded
        return None


def _link_holders(answer: Any) -> list[dict]:
    """The objects of an answer whose link_fields are read: the answer, and the items of its `data` list."""
    if not isinstance(answer, dict):
        return []
    items = answer.get("data")
    return [answer, *(i for i in items if isinstance(i, dict))] if isinstance(items, list) else [answer]


def links_in_body(x: Exchange, body: bytes, headers: list[tuple[str, str]]) -> Any:
    """The answer, parsed, with its link_fields that point at the upstream pointed at the gateway (each change
    noted in the log's steps); None when there is none to change."""
    text, origin = _json_text(body, headers), _origin(x)
    if text is None or not origin:
        return None
    try:
        answer = json_parse(text)
    except ValueError:
        return None
    changed = False
    for holder in _link_holders(answer):
        for field in x.provider.link_fields:
            if isinstance(value := holder.get(field), str) and (link := _link(x, field, value, origin)):
                holder[field] = link
                changed = True
    return answer if changed else None


def links_apply(answer: Any, headers: list[tuple[str, str]], mask=None) -> tuple[bytes, list[tuple[str, str]]]:
    """The client's copy of an answer links_in_body changed: written again as JSON (one pass, whatever
    escapes the upstream used), uncompressed (the client accepts that too), a stored provider credential
    it echoes masked (mask: the exchange's EchoMask); its headers to match."""
    text = json_bytes(answer)
    if mask is not None:
        text = mask.mask(text)
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-encoding", "content-length")]
    return text, [*kept, ("Content-Length", str(len(text)))]
