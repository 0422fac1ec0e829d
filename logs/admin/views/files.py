"""Stored files, for staff who may view the log: images, audio and video inline, the rest as downloads.

Range requests are answered (206, only the asked-for bytes read from the store), so an audio or
video answer can be scrubbed in the browser without downloading it whole. HEAD answers the same
status and headers from the file's size (one HEAD request to a bucket) and reads no byte of it.
"""

import mimetypes
from pathlib import PurePosixPath
from urllib.parse import quote

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse

from logs.admin.views import streaming
from logs.selectors import binary_file_get
from logs.storage import PayloadStoreUnavailable, payload_chunks, payload_size
from wire.ranges import RangeNotSatisfiable, byte_range

# Served inline (shown in <img>/<audio>/<video>); anything else is a download, so a stored
# HTML or SVG answer can never run script in the admin's origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/", "video/")


def _wanted(request: HttpRequest, size: int, etag: str) -> tuple[int, int] | None:
    """The byte range to send, None for the whole file (RangeNotSatisfiable: none of it exists).

    If-Range names the version the client holds part of: the range only if it is still this file.
    """
    if_range = request.headers.get("If-Range")
    if request.method not in ("GET", "HEAD") or (if_range is not None and (not etag or if_range != etag)):
        return None
    return byte_range(request.headers.get("Range", ""), size)


def file_view(model_admin, request: HttpRequest, file_id: str) -> HttpResponse:
    """One stored file (or the byte range asked for), streamed from the payload store."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    row = binary_file_get(file_id)
    if row is None:
        raise Http404("No such file.")
    name = row.file.name
    try:
        size = payload_size(name)
    except PayloadStoreUnavailable as exc:  # the file may well be there: not a 404
        return HttpResponse(f"The file store cannot be reached now: {exc}", status=503, content_type="text/plain")
    if size is None:  # said in words: raised as Http404, the operator read only the gateway's JSON "Not found"
        return HttpResponse(f"The file {name} is missing from the file store (deleted outside the gateway, or the "
                            "store moved): its exchange is logged without it.", status=404, content_type="text/plain")
    ctype = row.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = ctype.lower().startswith(INLINE_TYPES) and "download" not in request.GET
    etag = f'"{row.sha256}"' if row.sha256 else ""  # stored files never change: their hash is their version
    try:
        wanted = _wanted(request, size, etag)
    except RangeNotSatisfiable:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
    else:
        sent_type = ctype if inline else "application/octet-stream"
        if request.method == "HEAD":
            # The headers a GET gets, from the size alone: Django's ASGI and WSGI handlers iterate a
            # HEAD's streamed body too (the server only drops it), which would read the whole file.
            response = HttpResponse(content_type=sent_type)
        else:
            response = streaming(request, payload_chunks(name, wanted), sent_type, thread_sensitive=False)
        start, end = wanted or (0, size)
        response["Content-Length"] = str(end - start)
        if wanted:
            response.status_code = 206
            response["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response["Accept-Ranges"] = "bytes"
    if etag:
        response["ETag"] = etag
    disposition = "inline" if inline else "attachment"
    shown = row.filename or PurePosixPath(name).name
    response["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(shown, safe='')}"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
    return response
