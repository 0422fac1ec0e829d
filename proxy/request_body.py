"""The received request body: Django's spooled file, read back for the upstream and the log."""

import hashlib
import io
from collections.abc import AsyncIterator

from django.http import HttpRequest

from logs.capture import payload_open

BODY_CHUNK = 64 * 1024


def body_file(request: HttpRequest):
    """The received body as a seekable file at its start (Django's spool under ASGI)."""
    f = request._stream  # ASGIRequest keeps its spooled body file here
    if not getattr(f, "seekable", lambda: False)():
        # Only the test client's payload is not seekable; its bodies are small.
        f = request._stream = io.BytesIO(request.read())
    f.seek(0)
    return f


def body_size(request: HttpRequest) -> int:
    """Size of the received body (measured: Content-Length may be absent or wrong)."""
    f = body_file(request)
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    return size


async def body_chunks(request: HttpRequest) -> AsyncIterator[bytes]:
    """Stream the request body to the upstream from Django's own spool, never held whole in memory."""
    src = body_file(request)
    while chunk := src.read(BODY_CHUNK):
        yield chunk


def body_copy(request: HttpRequest, name: str) -> str:
    """Copy the spooled request body into the payload store; returns its sha256."""
    digest = hashlib.sha256()
    src = body_file(request)
    with payload_open(name) as dest:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dest.write(chunk)
    return digest.hexdigest()
