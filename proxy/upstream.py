"""Calling the upstream: the shared client, the header rules for what crosses the gateway, and its failures."""

import asyncio
import functools
import logging
import re

import httpx
from django.conf import settings
from django.http import HttpResponse

from proxy.exchange import Exchange
from proxy.paths import Route
from proxy.slots import ProviderSlots, SlotReturningStream, SlotWaitTimeout
from proxy.transport import AiohttpTransport

log = logging.getLogger(__name__)

# RFC 9110 §7.6.1 hop-by-hop headers, plus framing the gateway recomputes, plus Expect: the gateway
# answered the client's 100-continue itself and holds the whole body (forwarded, the upstream call
# waited for an upstream's 100 that most servers never send, until UPSTREAM_READ_TIMEOUT).
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "expect",
})
# Said to the gateway, never to the upstream: the access key, the response cache's directive.
GATEWAY_HEADERS = frozenset({"x-gateway-key", "x-gateway-cache", "x-gateway-cache-pace", "x-gateway-request-id"})

_client: httpx.AsyncClient | None = None


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the answer's Set-Cookie: it is relayed to the client, never kept."""


_NO_COOKIES = _NoCookies()


class UpstreamClient(httpx.AsyncClient):
    """httpx.AsyncClient without a cookie jar, with each provider's slots (proxy/slots.py).

    The client is shared by every caller of the gateway: a jar would collect each upstream's
    Set-Cookie values from all of them (never sent, since redirects are not followed), and
    filling it cost a measurable share of each request's CPU (docs/benchmark.md).
    """

    def __init__(self, *, slots: ProviderSlots, **kwargs) -> None:
        super().__init__(**kwargs)
        self.slots = slots

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        """Refused: the gateway keeps no cookies."""
        raise AttributeError("the upstream client keeps no cookies")


def transport_build(limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport under the shared client (tests put a fake upstream here)."""
    return AiohttpTransport(limits)


def client_build() -> UpstreamClient:
    """A client with the configured timeouts; no default headers of its own.

    Its pool has no total limit: each provider's requests in flight are limited by its own slots,
    so one provider's slow answers never hold up another's (proxy/slots.py).
    """
    timeout = httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT, pool=None)
    limits = httpx.Limits(max_connections=None, keepalive_expiry=30)
    return UpstreamClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False,
                          transport=transport_build(limits),
                          slots=ProviderSlots(settings.UPSTREAM_MAX_CONNECTIONS, settings.UPSTREAM_POOL_TIMEOUT))


def client_get() -> UpstreamClient:
    """The process's shared client (opened by the ASGI lifespan, or lazily)."""
    global _client
    if _client is None or _client.is_closed:
        _client = client_build()
    return _client


async def client_close() -> None:
    """Close the shared client and its connections."""
    global _client
    client, _client = _client, None
    if client is not None:
        await client.aclose()


def url_parse(url: str) -> httpx.URL:
    """An upstream URL as httpx.URL; parsed once per distinct URL when it has no query."""
    # URLs with a query are not cached: theirs may hold a credential (Gemini's ?key=).
    return httpx.URL(url) if "?" in url else _url_parse_cached(url)


@functools.lru_cache(maxsize=512)
def _url_parse_cached(url: str) -> httpx.URL:
    """httpx's URL parsing shows in a chat call's profile, and the same few paths repeat."""
    return httpx.URL(url)


def _connection_tokens(pairs: list[tuple[str, str]]) -> set[str]:
    """Header names listed in Connection, which are hop-by-hop too."""
    names = set()
    for k, v in pairs:
        if k.lower() == "connection":
            names.update(t.strip().lower() for t in v.split(",") if t.strip())
    return names


def headers_forward(pairs: list[tuple[str, str]], *, request: bool) -> list[tuple[str, str]]:
    """Headers to pass on: everything but hop-by-hop ones, and gateway-only ones: on requests those
    meant for the gateway, on answers any X-Gateway-* (the gateway's own, which an upstream could
    forge: a request id, a cache HIT)."""
    drop = HOP_BY_HOP | _connection_tokens(pairs)
    if request:
        drop = drop | GATEWAY_HEADERS
        return [(k, v) for k, v in pairs if k.lower() not in drop]
    drop = drop - {"content-length"}
    return [(k, v) for k, v in pairs if k.lower() not in drop and not k[:10].lower() == "x-gateway-"]


# What HTTP allows, and servers and clients check: a name is a token (RFC 9110), a value holds no control
# character but HTAB. The HTTP client reads other headers from an upstream (sent on, the server raised and
# the client got an empty reply); a hook could write them (a space in a name ended a lenient upstream's
# header block and broke the next request).
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_problem(name: str, value: str) -> str:
    """Why a header cannot be sent ("" when it can)."""
    if not HEADER_NAME.fullmatch(name):
        return f"header name {name!r} is not a token (letters, digits and !#$%&'*+-.^_`|~)"
    if _VALUE_FORBIDDEN.search(value):
        return f"header {name}'s value holds a control character (CR, LF, NUL...)"
    return ""


def headers_sendable(x: Exchange, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The answer's headers the server can send; any other is left out and the log says so (it keeps them all)."""
    bad = [k for k, v in pairs if header_problem(k, v)]
    if not bad:
        return pairs
    x.notes.append(f"upstream header(s) {', '.join(sorted(set(bad)))} not passed on: a character HTTP does not allow")
    return [(k, v) for k, v in pairs if k not in bad]


def _header_bytes(pair: tuple[str, str]) -> tuple[bytes, bytes]:
    """A header as it goes on the wire: latin-1, as it was read; UTF-8 for a value a hook set beyond it."""
    name, value = pair
    try:
        return name.encode("latin-1"), value.encode("latin-1")
    except UnicodeEncodeError:
        return name.encode("utf-8"), value.encode("utf-8")


def _body_framed(pairs: list[tuple[str, str]]) -> bool:
    """Whether the client framed a body (Content-Length or Transfer-Encoding), be it empty."""
    return any(k.lower() in ("content-length", "transfer-encoding") for k, _ in pairs)


def upstream_target(route: Route, query: str) -> bytes:
    """The request target upstream, byte for byte: the base URL's path, the path and query as sent.

    Carried in httpx's "target" extension because httpx.URL and yarl re-encode some characters
    (`{`, `"`, `%2A` and the like), which would change what the upstream reads.
    """
    base_path = url_parse(route.upstream_base).raw_path.rstrip(b"/")
    return base_path + route.upstream_path.encode("ascii") + (b"?" + query.encode("ascii") if query else b"")


async def upstream_call(x: Exchange) -> httpx.Response:
    """Send the request as the steps left it; the answer's body is still to be read. Raises httpx errors."""
    headers = list(x.forward_headers)
    if x.forward_body is not None:
        content, size = x.forward_body, len(x.forward_body)
    else:
        size = x.body.size
        content = (x.body.in_memory() if x.body.in_memory() is not None else x.body.chunks()) if size else b""
    framed = bool(size or x.forward_body is not None or _body_framed(x.headers))
    if framed:
        # Framing only when there is a body to frame: a bodiless request gets no Content-Length.
        headers.append(("Content-Length", str(size)))
    route = x.route
    url = route.upstream_base + route.upstream_path + (f"?{x.query}" if x.query else "")
    client = client_get()
    # A bare httpx.Request: client.build_request would add httpx's own default headers.
    # As bytes, each value as it came (latin-1): httpx would encode str values as ASCII, and a
    # header such as X-Title: Jürgen failed the exchange with a 500.
    request = httpx.Request(x.method, url_parse(url), headers=[_header_bytes(pair) for pair in headers],
                            content=content,
                            extensions={"timeout": client.timeout.as_dict(), "target": upstream_target(route, x.query),
                                        "unframed": not framed})
    try:
        give_back = await client.slots.take(x.provider.name)
        x.sent = True
        try:
            response = await client.send(request, stream=True)
        except BaseException:
            give_back()
            raise
    except asyncio.CancelledError:
        # The client went away (or shutdown): the upstream socket is closed by httpx.
        x.cancelled_mark("while waiting for the upstream" if x.sent else "while waiting for a free upstream connection")
        if not x.shutting_down:  # at shutdown the client is still there: proxy/forward.py answers and logs
            record = x.response_record(status=None, headers=[], content_type="")
            record.duration_ms = x.elapsed_ms()
            x.response_log(record)
        raise
    # The slot is held until the answer is closed: a streamed answer keeps its connection busy.
    response.stream = SlotReturningStream(response.stream, give_back)
    # Sent: httpx's copy of the request (its headers as bytes, its body) is not held while the answer streams.
    response.request = None
    return response


def _timeout_message(exc: httpx.TimeoutException, provider: str) -> str:
    """Name the timeout that fired and the setting behind it."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"Upstream connect timed out after {settings.UPSTREAM_CONNECT_TIMEOUT:g} s (UPSTREAM_CONNECT_TIMEOUT)"
    if isinstance(exc, SlotWaitTimeout):
        return (f"No free upstream connection for {provider} within {settings.UPSTREAM_POOL_TIMEOUT:g} s "
                "(UPSTREAM_MAX_CONNECTIONS per provider, UPSTREAM_POOL_TIMEOUT)")
    if isinstance(exc, httpx.ReadTimeout):
        return f"Upstream sent no answer within {settings.UPSTREAM_READ_TIMEOUT:g} s (UPSTREAM_READ_TIMEOUT)"
    return f"Upstream timed out: {type(exc).__name__}"


def upstream_failure_answer(x: Exchange, exc: Exception) -> HttpResponse:
    """The answer (and log entry) for an upstream that could not be reached or did not answer in time."""
    if isinstance(exc, httpx.TimeoutException):
        return x.gateway_answer(504, _timeout_message(exc, x.provider.name))
    if isinstance(exc, httpx.HTTPError):
        return x.gateway_answer(502, f"Upstream unreachable: {type(exc).__name__}: {exc}")
    log.exception("exchange %s failed before the upstream answered", x.request_id, exc_info=exc)
    return x.gateway_answer(500, f"Gateway failed to forward the request: {type(exc).__name__}: {exc}")
