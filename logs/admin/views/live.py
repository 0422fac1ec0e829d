"""Live tail: a page whose table fills as exchanges arrive, fed by short polling of a JSON feed.

Short polling works behind any proxy and with several workers (each poll reads the database,
where every worker's exchanges land); an exchange shows as pending from the moment its request
row is written and is updated when its response row is.
"""

from datetime import datetime, timedelta, timezone

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from logs.admin.filters import MULTI_VALUE_PARAMS, RANGE_FROM, RANGE_TO, TimeRangeFilter, time_range_read
from logs.admin.formats import count_format, ms_format, usd_format
from logs.admin.views import page_context
from logs.models import Request
from logs.selectors import LIVE_FILTERS, live_exchanges
from wire.commalist import commalist_read

# Each poll re-reads this much of landing time before its cursor (logs.models.Landing): a batch commits a
# little after the time it notes. The page draws each exchange once, by id.
WINDOW = timedelta(seconds=30)
EARLIEST = datetime.min.replace(tzinfo=timezone.utc) + WINDOW  # a cursor before it would overflow the window
# The list's parameters the feed applies: the LIVE_FILTERS and the time range (preset or custom).
FEED_PARAMS = (*LIVE_FILTERS, TimeRangeFilter.parameter_name, RANGE_FROM, RANGE_TO)


def feed_params(params) -> dict[str, str]:
    """The parameters of a list or page query that the feed applies (empty ones dropped)."""
    return {k: v for k, v in params.items() if k in FEED_PARAMS and v}


def live_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """The page; its script polls live_feed with the same filters."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    filters = feed_params(request.GET)
    context = page_context(model_admin, request, "Live tail", filters=filters,
                           feed_url=reverse("admin:logs_request_live_feed"))
    return TemplateResponse(request, "admin/logs/request/live.html", context)


def _row(req: Request) -> dict:
    """One exchange as the page draws it (formatted here, so the script only places text)."""
    try:
        resp = req.response
    except Request.response.RelatedObjectDoesNotExist:
        resp = None
    row = {"id": req.pk.hex, "url": reverse("admin:logs_request_change", args=[req.pk.hex]),
           "time": req.created_at.strftime("%H:%M:%S"),
           "when": req.created_at.strftime("%m-%d %H:%M:%S"), "provider": req.provider, "model": req.model or "", "user": req.end_user or "",
           "session": req.session_id or "", "endpoint": req.endpoint, "pending": resp is None}
    if resp is not None:
        row.update(status=resp.status_code, outcome=resp.outcome, error=bool(resp.is_error),
                   error_text=(getattr(req, "error_short", "") or "") if resp.is_error else "",
                   latency=ms_format(resp.duration_ms), ttft=ms_format(resp.ttft_ms),
                   tokens=count_format(resp.total_tokens), cost=usd_format(resp.cost_usd))
    return row


def live_feed(model_admin, request: HttpRequest) -> JsonResponse:
    """{"rows": [...newest first], "cursor": "<ISO time>~<landing>"}: exchanges whose rows landed after
    ?cursor=, however long ago they started, within the list's filters and time range, and ?pending= again."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    now = datetime.now(timezone.utc)
    when, _, landing = request.GET.get("cursor", "").partition("~")
    try:
        cursor = datetime.fromisoformat(when) if when else now - WINDOW
        after = int(landing) if landing else None
    except ValueError:
        return JsonResponse({"error": "cursor is an ISO 8601 time, then ~ and a landing number"}, status=400)
    if cursor.tzinfo is None:
        cursor = cursor.replace(tzinfo=timezone.utc)
    # As the list reads them: several values (?model=a,b) where its filter takes several, else one, whole.
    filters = {k: commalist_read(v) if k in MULTI_VALUE_PARAMS else [v]
               for k, v in request.GET.items() if k in LIVE_FILTERS and v}
    span = time_range_read(request.GET)  # as the list reads it
    if span.error:
        return JsonResponse({"error": span.error}, status=400)
    since = max(min(cursor, now), EARLIEST) - WINDOW
    pending = [p for p in request.GET.get("pending", "").split(",") if p]
    try:
        rows, last = live_exchanges(after=after, landed=since, start=span.start, until=span.end, pending=pending,
                                    filters=filters)
    except ValueError as exc:  # an unknown status
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"rows": [_row(r) for r in rows],
                         "cursor": now.isoformat() + ("" if last is None else f"~{last}")})
