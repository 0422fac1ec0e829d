"""The admin's static files (CSS/JS of installed apps), served by an async view.

Django's staticfiles `serve` answers with a FileResponse (a sync iterator), which under ASGI
Django must drain on a worker thread with a warning. These files are small (the largest admin
JS is ~100 KB), so the view reads one whole in a thread and answers with a plain HttpResponse.
"""

import asyncio
import mimetypes
import posixpath
from pathlib import Path

from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotModified
from django.utils.http import http_date
from django.views.static import was_modified_since


def static_file_find(path: str) -> Path | None:
    """The file an app ships under this static path, or None (also for paths escaping the roots)."""
    normalized = posixpath.normpath(path).lstrip("/")
    if not normalized or normalized.startswith(".."):
        return None
    try:
        found = finders.find(normalized)
    except SuspiciousFileOperation:
        return None
    return Path(found) if found and Path(found).is_file() else None


def _file_read(path: str, since: str | None) -> tuple[bytes | None, float] | None:
    """(bytes, mtime) of a static file; bytes None when unchanged since `since`; None if missing."""
    found = static_file_find(path)
    if found is None:
        return None
    mtime = found.stat().st_mtime
    if not was_modified_since(since, mtime):
        return None, mtime
    return found.read_bytes(), mtime


async def static_file_view(request: HttpRequest, path: str) -> HttpResponse:
    """One static file, read whole off the event loop; 304 when the browser's copy is current."""
    result = await asyncio.to_thread(_file_read, path, request.META.get("HTTP_IF_MODIFIED_SINCE"))
    if result is None:
        raise Http404("No such static file.")
    data, mtime = result
    if data is None:
        return HttpResponseNotModified()
    content_type, encoding = mimetypes.guess_type(path)
    response = HttpResponse(data, content_type=content_type or "application/octet-stream")
    response["Last-Modified"] = http_date(mtime)
    if encoding:
        response["Content-Encoding"] = encoding
    return response
