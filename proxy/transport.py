"""The upstream transport: the httpx API on aiohttp's connection pool.

httpx's own pool (httpcore) checks every pooled connection's socket on each request, which
costs more than the request itself at 64 concurrent calls (see docs/benchmark.md).
aiohttp's pool does not. The gateway keeps the httpx API (requests, responses, exceptions);
only the wire layer changes. Built on the `httpx-aiohttp` package's response stream, with our
own session so that nothing is added to what the client sent (no User-Agent, Accept,
Accept-Encoding or Content-Type of aiohttp's own, no Content-Length on a bodiless request, no
cookie jar), header names, order and repeats go upstream exactly as received, and so does the
request target (httpx's "target" extension, never re-encoded).
"""

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Iterator

import aiohttp
import httpx
import yarl
from aiohttp import hdrs
from httpx_aiohttp.transport import AiohttpResponseStream
from multidict import CIMultiDict

# Headers aiohttp would add by itself; the gateway forwards only what the client sent.
AUTO_HEADERS_SKIPPED = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def _error_mapped(exc: BaseException) -> Exception | None:
    """aiohttp's failure as the httpx exception the proxy already handles (None: not one of them)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(str(exc) or "connect timed out")
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(str(exc) or "read timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):  # its text says "ssl:default" of a plain http:// upstream too
        return httpx.ConnectError(str(exc).replace(" ssl:default", ""))
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientResponseError):  # malformed answer (bad status line, headers)
        return httpx.RemoteProtocolError(str(exc))
    if isinstance(exc, (aiohttp.ClientError, OSError)):  # reset, broken pipe, ...
        return httpx.ReadError(str(exc) or type(exc).__name__)
    return None


@contextlib.contextmanager
def errors_map() -> Iterator[None]:
    """Raise aiohttp's failures as the httpx exceptions the proxy already handles."""
    try:
        yield
    except Exception as exc:
        mapped = _error_mapped(exc)
        if mapped is None:
            raise
        raise mapped from exc


class _ResponseStream(AiohttpResponseStream):
    """httpx-aiohttp's body stream, with aiohttp errors mapped like ours.

    Its own iterator, not an async generator inside errors_map(): every stream in flight held the two
    generators' frames (0.5 KiB a stream less measured, within that probe's spread: docs/benchmark.md).
    """

    def __aiter__(self) -> "_ResponseStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._aiohttp_response.content.readany()
        except Exception as exc:
            mapped = _error_mapped(exc)
            if mapped is None:
                raise
            raise mapped from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk


def _header_text(value: bytes) -> str:
    """A header value as aiohttp's writer takes it (it encodes UTF-8): bytes that are no UTF-8 (a
    latin-1 é) cannot go out as they came, and are sent as their latin-1 reading."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _ExactRequest(aiohttp.ClientRequest):
    """aiohttp's request, without the `Content-Length: 0` it gives a bodiless DELETE, POST, PUT or PATCH."""

    def update_body_from_data(self, body, *args, **kwargs) -> None:
        """As aiohttp's, except that no body means no framing header (one the client sent stays)."""
        framed = hdrs.CONTENT_LENGTH in self.headers
        super().update_body_from_data(body, *args, **kwargs)
        if body is None and not framed:
            self.headers.popall(hdrs.CONTENT_LENGTH, None)


def _url(request: httpx.Request) -> yarl.URL:
    """The URL aiohttp requests, its target exactly as given (yarl would re-encode it otherwise)."""
    target = request.extensions.get("target")
    if target is None:
        return yarl.URL(str(request.url), encoded=True)
    origin = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}"
    return yarl.URL(origin + target.decode("ascii"), encoded=True)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp ClientSession (created on the running loop)."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        self._session: aiohttp.ClientSession | None = None

    def _session_get(self) -> aiohttp.ClientSession:
        """The session, made on first use because aiohttp binds it to the running loop."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.limits.max_connections or 0, limit_per_host=0,
                keepalive_timeout=self.limits.keepalive_expiry or 30, ssl=self.ssl_context,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=AUTO_HEADERS_SKIPPED, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False, request_class=_ExactRequest,
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the body streams back through httpx's Response."""
        # Raw pairs keep the client's header names, order and repeats.
        # Names interned (the connection's request keeps them while the answer streams; see proxy/exchange.py).
        # aiohttp writes header values as UTF-8: a value read as UTF-8 goes out as the same bytes.
        headers = CIMultiDict((sys.intern(k.decode("latin-1")), _header_text(v)) for k, v in request.headers.raw)
        if request.extensions.get("unframed"):  # httpx gives a bodiless POST, PUT or PATCH a Content-Length: 0
            headers.popall("Content-Length", None)
        try:
            data = request.content or None
        except httpx.RequestNotRead:  # a streamed body (large uploads)
            data = request.stream
            headers.popall("Transfer-Encoding", None)  # aiohttp frames it itself
        timeout = request.extensions.get("timeout", {})
        with errors_map():
            response = await self._session_get().request(
                request.method, _url(request), headers=headers, data=data, allow_redirects=False,
                compress=None, auto_decompress=False,
                # No pool wait left to time (the gateway limits requests per provider, proxy/slots.py):
                # "connect" covers the name lookup and the connection.
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout.get("connect"),
                                              sock_connect=timeout.get("connect"),
                                              sock_read=timeout.get("read")),
            ).__aenter__()
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(status_code=response.status, headers=response.raw_headers,
                              stream=_ResponseStream(response), request=request, extensions=extensions)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
