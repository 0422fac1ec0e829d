"""The shared upstream client and the header rules for what crosses the gateway."""

import functools

import httpx
from django.conf import settings

# RFC 9110 §7.6.1 hop-by-hop headers, plus framing the gateway recomputes.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
GATEWAY_HEADERS = frozenset({"x-gateway-key"})

_client: httpx.AsyncClient | None = None


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: httpx.Response) -> None:
        """Ignore the answer's Set-Cookie: it is relayed to the client, never kept."""


_NO_COOKIES = _NoCookies()


class UpstreamClient(httpx.AsyncClient):
    """httpx.AsyncClient without a cookie jar.

    The client is shared by every caller of the gateway: a jar would collect each upstream's
    Set-Cookie values from all of them (never sent, since redirects are not followed), and
    filling it cost ~5% of the proxy's CPU per request.
    """

    @property
    def cookies(self) -> httpx.Cookies:
        """Always empty."""
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        """Refused: the gateway keeps no cookies."""
        raise AttributeError("the upstream client keeps no cookies")


def client_build() -> UpstreamClient:
    """A client with the configured timeouts, pool and transport; no default headers of its own."""
    timeout = httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT,
                            pool=settings.UPSTREAM_CONNECT_TIMEOUT)
    limits = httpx.Limits(max_connections=settings.UPSTREAM_MAX_CONNECTIONS,
                          max_keepalive_connections=settings.UPSTREAM_MAX_KEEPALIVE, keepalive_expiry=30)
    transport = None
    if settings.UPSTREAM_TRANSPORT == "aiohttp":
        from proxy.aiohttp_transport import AiohttpTransport

        transport = AiohttpTransport(limits)
    return UpstreamClient(timeout=timeout, limits=limits, follow_redirects=False, trust_env=False,
                          transport=transport)


def client_get() -> httpx.AsyncClient:
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
    """httpx's URL parsing was ~4% of a chat call's CPU, and the same few paths repeat."""
    return httpx.URL(url)


def _connection_tokens(pairs: list[tuple[str, str]]) -> set[str]:
    """Header names listed in Connection, which are hop-by-hop too."""
    names = set()
    for k, v in pairs:
        if k.lower() == "connection":
            names.update(t.strip().lower() for t in v.split(",") if t.strip())
    return names


def headers_forward(pairs: list[tuple[str, str]], *, request: bool) -> list[tuple[str, str]]:
    """Headers to pass on: everything but hop-by-hop ones (and gateway-only ones on requests)."""
    drop = HOP_BY_HOP | _connection_tokens(pairs)
    if request:
        drop = drop | GATEWAY_HEADERS
    else:
        drop = drop - {"content-length"}
    return [(k, v) for k, v in pairs if k.lower() not in drop]
