"""HTTP views: the proxy view (called by proxy/asgi.py), health, and JSON error handlers."""

import json

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import server_error

from logs.pipeline.writer import log_kept_aside_count, log_pending_count, log_write_error
from proxy.forward import exchange_forward
from proxy.health import db_problem


@csrf_exempt
async def proxy_view(request: HttpRequest) -> HttpResponseBase:
    """Forward any method on a provider path; the stages are in proxy/forward.py."""
    return await exchange_forward(request)


@csrf_exempt  # a probe with another method gets the 405 below, not the CSRF page
async def health_view(request: HttpRequest) -> JsonResponse:
    """200 when the log database answers and is migrated, 503 with a fixed reason when not (GET and HEAD only)."""
    if request.method not in ("GET", "HEAD"):
        response = JsonResponse({"status": "error", "detail": f"Method {request.method} is not allowed: use GET or HEAD."},
                                status=405)
        response["Allow"] = "GET, HEAD"
        return response
    pending, kept = await sync_to_async(_journal_counts)()
    # Lines kept aside are named only when there are some: what an operator must look at.
    extra = {"log_lines_kept_aside": kept} if kept else {}
    if problem := await sync_to_async(db_problem)():
        return JsonResponse({"status": "error", "detail": problem, "pending_log_records": pending, **extra},
                            status=503)
    answer = {"status": "ok", "pending_log_records": pending, **extra}
    # Still 200: the gateway answers its clients, and its records wait to be written (restarting it
    # would not help). The field says why they wait, as this worker last saw it.
    if failing := log_write_error():
        answer["log_write_error"] = failing
    return JsonResponse(answer)


def _journal_counts() -> tuple[int, int]:
    """Every worker's journal, not just ours: records waiting, and lines kept aside."""
    return log_pending_count(), log_kept_aside_count()


def not_found_json(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """JSON 404 instead of Django's HTML page."""
    body = {"error": {"message": f"Not found: {request.path}", "type": "not_found"}}
    return HttpResponse(json.dumps(body), status=404, content_type="application/json")


def server_error_json(request: HttpRequest) -> HttpResponse:
    """JSON 500 without a stack trace; the admin's pages get Django's HTML one (a person reads those)."""
    if request.path.startswith("/admin/"):
        return server_error(request)
    body = {"error": {"message": "Internal gateway error", "type": "gateway_error"}}
    return HttpResponse(json.dumps(body), status=500, content_type="application/json")
