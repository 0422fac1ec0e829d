"""One exchange on one page: request and response, conversation, stream events, files, Copy as cURL."""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from logs.admin.curl import curl_command
from logs.admin.present import TREE_MAX_DEPTH, body_render, events_shown, json_pretty
from logs.admin.views import page_context
from logs.models import BinaryFile, Request
from logs.redaction.redact import headers_safe, query_mask
from logs.selectors import exchange_detail
from logs.storage import PayloadStoreUnavailable, payload_size
from providers import registry
from wire.jsonutil import json_depth, json_or_none

FRAMES_SHOWN = 1000  # a realtime session's first frames on the page (all are in the frames table)
# A stream's first events in the page's table (all are in its raw body): a 50,000-event answer made a 13 MB page.
EVENTS_SHOWN = 2000
# Shown in <img>/<audio>/<video> on the page; see files.INLINE_TYPES for what the file view serves inline.
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


def file_url(file_id: str) -> str | None:
    """Admin URL of a stored file."""
    return reverse("admin:logs_binaryfile_download", args=[file_id]) if file_id else None


def _file_kind(content_type: str) -> str:
    """How a file is shown: image, audio, video or a plain download."""
    ct = content_type.split(";")[0].strip().lower()
    if ct.startswith(IMAGE_TYPES):
        return "image"
    return ct.split("/")[0] if ct.startswith(("audio/", "video/")) else "download"


def _file_shown(row: BinaryFile) -> dict:
    """A stored file as the page lists it. One shown inline (image, audio, video) is looked up in the store first:
    a file gone from it was a broken image or a silent player with no word why (its download link says it)."""
    kind, missing = _file_kind(row.content_type), ""
    if kind != "download":
        try:
            if payload_size(row.file.name) is None:
                missing = "missing from the file store (deleted outside the gateway, or the store moved)"
        except PayloadStoreUnavailable as exc:
            missing = f"not shown: the file store cannot be reached now ({exc})"
    return {"row": row, "url": file_url(row.id.hex), "kind": kind, "missing": missing}


def _conversation(provider, req: Request, answer) -> list:
    """The provider's conversation view; none for payloads too deep to walk."""
    sent = json_or_none(req.body)
    if json_depth(sent, TREE_MAX_DEPTH) > TREE_MAX_DEPTH or json_depth(answer, TREE_MAX_DEPTH) > TREE_MAX_DEPTH:
        return []
    return provider.conversation(req.endpoint, sent, answer)


def exchange_context(req: Request, request: HttpRequest) -> dict:
    """Everything the exchange page shows, ready for the template."""
    resp = getattr(req, "response", None) if hasattr(req, "response") else None
    stream_result = resp.stream_result if resp and isinstance(resp.stream_result, dict) else None
    answer = stream_result.get("result") if stream_result else (json_or_none(resp.body) if resp else None)
    events, events_total = events_shown(resp.body, resp.event_offsets_ms, EVENTS_SHOWN) if resp and resp.is_stream \
        else ([], 0)
    files = [_file_shown(f) for f in sorted(req.files.all(), key=lambda f: (f.role, f.created_at))]
    provider = registry(settings.GATEWAY_PROVIDERS).get(req.provider)
    return {
        "req": req,
        "resp": resp,
        "url": req.endpoint + (f"?{query_mask(req.query_string, logged=True)}" if req.query_string else ""),
        "request_headers": headers_safe(req.headers, labels=(req.gateway_key,) if req.gateway_key else ()),
        "response_headers": headers_safe(resp.headers) if resp else [],
        "request_body": body_render(req.body, file_url),
        "response_body": body_render(resp.body, file_url) if resp else None,
        "stream_result": json_pretty(stream_result["result"]) if stream_result and "result" in stream_result else None,
        "session_usage": json_pretty(stream_result["session_usage"]) if stream_result and "session_usage" in (
            stream_result) else None,
        "events": events,
        "events_total": events_total,
        "conversation": _conversation(provider, req, answer),
        "files": files,
        "output_files": [f for f in files if f["row"].role == BinaryFile.Role.RESPONSE_OUTPUT],
        "curl": curl_command(req, request.build_absolute_uri("/")),
        "frames": list(req.frames.order_by("seq")[:FRAMES_SHOWN]),
        "frames_total": req.frames.count(),
        "steps": [{"entry": s, "text": json_pretty(s)} for s in (resp.steps or [])] if resp else [],
        "forwarded": _forwarded(resp.forwarded, files) if resp and isinstance(resp.forwarded, dict) else None,
    }


def _forwarded(forwarded: dict, files: list) -> dict:
    """What went upstream when a policy step changed the request, for the page."""
    body = forwarded.get("body")
    kept = next((f for f in files if f["row"].role == BinaryFile.Role.FORWARDED_BODY), None)
    return {"line": f"{forwarded.get('method', '')} {forwarded.get('path', '')}"
                    + (f"?{query_mask(str(forwarded['query']), logged=True)}" if forwarded.get("query") else ""),
            "headers": headers_safe(forwarded.get("headers")),
            "body": json_pretty(json_or_none(body)) if isinstance(body, str) and json_or_none(body) is not None else body,
            "unchanged": bool(forwarded.get("body_unchanged")), "file": kept}


def exchange_view(model_admin, request: HttpRequest, object_id: str) -> TemplateResponse:
    """One exchange: request and response together."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    req = exchange_detail(object_id)
    if req is None:
        raise Http404("No exchange with this id.")
    context = page_context(model_admin, request, f"{req.method} {req.endpoint}", subtitle=req.id.hex,
                           x=exchange_context(req, request),
                           has_delete_permission=model_admin.has_delete_permission(request, req))
    return TemplateResponse(request, "admin/logs/request/exchange.html", context)
