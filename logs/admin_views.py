"""Admin pages beyond the list: one exchange, the dashboard, file downloads, export downloads."""

import mimetypes
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, SuspiciousFileOperation
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils._os import safe_join

from logs import charts
from logs.conversation import conversation_build
from logs.curl import curl_command
from logs.export import CONTENT_TYPES, export_chunks
from logs.models import BinaryFile, Request
from logs.present import body_render, headers_safe, json_pretty, sse_events
from logs.streams import json_or_none
from logs.selectors import ExportFilters, binary_file_get, exchange_detail, exchanges_for_export, pending_log_records
from logs.stats import WINDOWS, dashboard_build

# Served inline (shown in <img>/<audio>/<video>); anything else is a download, so a stored
# HTML or SVG answer can never run script in the admin's origin.
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "audio/", "video/")
FILE_CHUNK = 256 * 1024
DASHBOARD_CACHE_SECONDS = {"7d": 60, "30d": 60}


def header_context() -> dict:
    """What every log page shows in its header: log records not yet in the database."""
    return {"pending_log_records": pending_log_records()}


def _file_url(file_id: str) -> str | None:
    """Admin URL of a stored file."""
    return reverse("admin:logs_binaryfile_download", args=[file_id]) if file_id else None


def _file_kind(content_type: str) -> str:
    """How a file is shown: image, audio, video or a plain download."""
    ct = content_type.split(";")[0].strip().lower()
    if ct.startswith(INLINE_TYPES[:4]):
        return "image"
    return ct.split("/")[0] if ct.startswith(("audio/", "video/")) else "download"


def exchange_context(req: Request, request: HttpRequest) -> dict:
    """Everything the exchange page shows, ready for the template."""
    resp = getattr(req, "response", None) if hasattr(req, "response") else None
    stream_result = resp.stream_result if resp and isinstance(resp.stream_result, dict) else None
    answer = stream_result.get("result") if stream_result else (json_or_none(resp.body) if resp else None)
    files = [{"row": f, "url": _file_url(f.id.hex), "kind": _file_kind(f.content_type)}
             for f in sorted(req.files.all(), key=lambda f: (f.role, f.created_at))]
    return {
        "req": req,
        "resp": resp,
        "url": req.endpoint + (f"?{req.query_string}" if req.query_string else ""),
        "request_headers": headers_safe(req.headers),
        "response_headers": headers_safe(resp.headers) if resp else [],
        "request_body": body_render(req.body, _file_url),
        "response_body": body_render(resp.body, _file_url) if resp else None,
        "stream_result": json_pretty(stream_result.get("result")) if stream_result else None,
        "events": sse_events(resp.body, resp.event_offsets_ms) if resp and resp.is_stream else [],
        "conversation": conversation_build(req.endpoint, json_or_none(req.body), answer),
        "files": files,
        "output_files": [f for f in files if f["row"].role == BinaryFile.Role.RESPONSE_OUTPUT],
        "curl": curl_command(req, request.build_absolute_uri("/")),
    }


def exchange_view(model_admin, request: HttpRequest, object_id: str) -> TemplateResponse:
    """One exchange: request and response together."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    req = exchange_detail(object_id)
    if req is None:
        raise Http404("No exchange with this id.")
    context = {
        **model_admin.admin_site.each_context(request), **header_context(),
        "opts": model_admin.model._meta, "title": f"{req.method} {req.endpoint}",
        "subtitle": req.id.hex, "x": exchange_context(req, request),
        "has_delete_permission": model_admin.has_delete_permission(request, req),
    }
    return TemplateResponse(request, "admin/logs/request/exchange.html", context)


def dashboard_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """Charts of the last 24 h / 7 d / 30 d."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    window = request.GET.get("window", "24h")
    window = window if window in WINDOWS else "24h"
    # The long windows read every exchange of up to 30 days (seconds at a million rows on
    # SQLite): keep each result for a minute, per process.
    ttl = DASHBOARD_CACHE_SECONDS.get(window, 0)
    dash = cache.get_or_set(f"logs-dashboard-{window}", lambda: dashboard_build(window), ttl) if ttl \
        else dashboard_build(window)
    rate = "per hour" if window == "24h" else "per hour (average over each bucket)"
    figures = [
        charts.bar_chart(f"Requests {rate}", dash.labels, dash.per_hour),
        charts.line_chart("Error rate", dash.labels, {"errors": dash.error_rate}, "%"),
        charts.line_chart("Latency (total duration)", dash.labels, dash.latency, " ms"),
        charts.line_chart("Time to first byte", dash.labels, dash.ttfb, " ms"),
        charts.hbar_chart("Tokens by model", [(m["model"] or "(unknown)", [m["input"] or 0, m["output"] or 0])
                                              for m in dash.models], ["input", "output"]),
    ]
    context = {
        **model_admin.admin_site.each_context(request), **header_context(),
        "opts": model_admin.model._meta, "title": "Log dashboard", "dash": dash, "figures": figures,
        "windows": list(WINDOWS), "window": window,
    }
    return TemplateResponse(request, "admin/logs/request/dashboard.html", context)


def _async_chunks(chunks: Iterator, thread_sensitive: bool) -> AsyncIterator:
    """Pull a sync iterator from a worker thread piece by piece, so an ASGI server never buffers it whole."""
    done = object()
    pull = sync_to_async(lambda: next(chunks, done), thread_sensitive=thread_sensitive)

    async def gen():
        while (piece := await pull()) is not done:
            yield piece
    return gen()


def _streaming(request: HttpRequest, chunks: Iterator, content_type: str, thread_sensitive: bool
               ) -> StreamingHttpResponse:
    """A streaming response that stays flat in memory under ASGI (async body) and WSGI (sync)."""
    content = _async_chunks(chunks, thread_sensitive) if isinstance(request, ASGIRequest) else chunks
    return StreamingHttpResponse(content, content_type=content_type)


def _file_iter(path: Path) -> Iterator[bytes]:
    """A file's bytes in chunks, closed at the end."""
    with open(path, "rb") as f:
        while chunk := f.read(FILE_CHUNK):
            yield chunk


def file_view(model_admin, request: HttpRequest, file_id: str) -> StreamingHttpResponse:
    """A stored file, for staff who may view the log; inline only for images, audio and video."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    row: BinaryFile | None = binary_file_get(file_id)
    if row is None:
        raise Http404("No such file.")
    try:
        path = Path(safe_join(str(settings.FILE_STORAGE_PATH), row.file.name))
    except SuspiciousFileOperation:
        raise Http404("No such file.") from None
    if not path.is_file():
        raise Http404("The file is missing from the file store.")
    ctype = row.content_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    inline = ctype.lower().startswith(INLINE_TYPES) and "download" not in request.GET
    name = row.filename or path.name
    response = _streaming(request, _file_iter(path), ctype if inline else "application/octet-stream", False)
    response["Content-Length"] = str(path.stat().st_size)
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{_quote(name)}"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; media-src 'self'; sandbox"
    return response


def _quote(name: str) -> str:
    """RFC 5987 encoding of a file name."""
    from urllib.parse import quote

    return quote(name, safe="")


def export_response(request: HttpRequest, queryset, fmt: str) -> StreamingHttpResponse:
    """The admin action's download: the selected exchanges, through the export service."""
    qs = exchanges_for_export(ExportFilters(), qs=Request.objects.filter(pk__in=queryset.values("pk")))
    response = _streaming(request, export_chunks(qs, fmt), CONTENT_TYPES[fmt], True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="exchanges-{stamp}.{fmt}"'
    return response
