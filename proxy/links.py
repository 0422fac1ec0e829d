"""Links an answer gives the client to the upstream, pointed at the gateway instead.

A provider may answer with a URL of its own API for the client's next call: Gemini's resumable upload
(the X-Goog-Upload-URL header the bytes go to), an Anthropic Message Batch's results_url. Followed as
given, that call goes around the gateway: never logged, no limits, and a gateway key that stands for
a stored provider credential sent to the provider. The provider module names such headers and fields
(link_headers, link_fields); here they become the gateway's URL for the same upstream path
(proxy/paths.gateway_link), each change noted in the log's steps. The log keeps the answer as the
upstream sent it.
"""

import json

from django.conf import settings

from proxy.exchange import Exchange
from proxy.paths import gateway_link
from wire.encoding import decode_pieces, encoding_name
from wire.jsonutil import json_parse

DECODED_MAX = 16 * 1024 * 1024  # the most a compressed answer is decoded to, to point its links at the gateway


def _origin(x: Exchange) -> str:
    """scheme://host the client reached the gateway at ("" without a Host header)."""
    host = next((v for k, v in x.headers if k.lower() == "host"), "")
    scheme = x.scheme
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None) and any(  # TRUST_X_FORWARDED_PROTO, as Django reads it
            k.lower() == "x-forwarded-proto" and v.strip() == "https" for k, v in x.headers):
        scheme = "https"
    return f"{scheme}://{host}" if host else ""


def _link(x: Exchange, name: str, value: str, origin: str) -> str | None:
    """The gateway's URL for a link of the answer to the upstream, noted in the log's steps; None if elsewhere."""
    link = gateway_link(x.route, value, origin) if origin else None
    if link is not None:
        x.decisions.append({"step": "links", "decision": f"{name} points at the gateway", "upstream": value})
    return link


def links_in_headers(x: Exchange, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Point the answer's links to the upstream (the provider's link_headers) at the gateway: the client's
    next call (an upload's bytes) is then proxied and logged, with the credential the gateway swaps in."""
    origin = _origin(x)
    return [(name, (_link(x, name, value, origin) or value) if name.lower() in x.provider.link_headers else value)
            for name, value in headers]


def links_in_body_possible(x: Exchange, status: int, is_sse: bool) -> bool:
    """Whether this answer may hold links to point at the gateway (the provider's link_fields, on its link_paths):
    the relay then takes it whole."""
    provider = x.provider
    return bool(provider.link_fields) and not is_sse and 200 <= status < 300 \
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


def links_in_body(x: Exchange, body: bytes, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The provider's link_fields in a JSON answer that point at its upstream: (upstream URL, gateway URL) each,
    noted in the log's steps."""
    text, origin = _json_text(body, headers), _origin(x)
    if text is None or not origin:
        return []
    try:
        answer = json_parse(text)
    except ValueError:
        return []
    items = [answer, *(answer.get("data") if isinstance(answer, dict) and isinstance(answer.get("data"), list)
                       else [])]
    return [(value, link) for item in items if isinstance(item, dict) for field in x.provider.link_fields
            if isinstance(value := item.get(field), str) and (link := _link(x, field, value, origin))]


def links_apply(body: bytes, headers: list[tuple[str, str]],
                      links: list[tuple[str, str]]) -> tuple[bytes, list[tuple[str, str]]]:
    """The client's copy of the answer with its links replaced where they stand (the rest keeps its bytes),
    decoded when it came compressed (the client accepts that too); its headers to match."""
    text = _json_text(body, headers)
    if text is None:
        return body, headers
    for value, link in links:
        text = text.replace(json.dumps(value)[1:-1].encode(), json.dumps(link)[1:-1].encode())
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-encoding", "content-length")]
    return text, [*kept, ("Content-Length", str(len(text)))]
