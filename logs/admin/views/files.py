"""Stored files, for staff who may view the log: images, audio and video inline, the rest as downloads."""

import mimetypes
from pathlib import PurePosixPath
from urllib.parse import quote

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, StreamingHttpResponse

from logs.admin.views import streaming
from logs.selectors import binary_file_get
from logs.storage import payload_chunks, payload_size

# Served inline (shown in <img>/<audio>/<video>); anything else is a download, so a stored
# HTML or SVG answer can never run script in the admin's origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/", "video/")


def file_view(model_admin, request: HttpRequest, file_id: str) -> StreamingHttpResponse:
    """One stored file, streamed from the payload store."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    row = binary_file_get(file_id)
    if row is None:
        raise Http404("No such file.")
    name = row.file.name
    size = payload_size(name)
    if size is None:
        raise Http404("The file is missing from the file store.")
    ctype = row.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = ctype.lower().startswith(INLINE_TYPES) and "download" not in request.GET
    response = streaming(request, payload_chunks(name), ctype if inline else "application/octet-stream",
                         thread_sensitive=False)
    response["Content-Length"] = str(size)
    disposition = "inline" if inline else "attachment"
    shown = row.filename or PurePosixPath(name).name
    response["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quote(shown, safe='')}"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
    return response
