"""The dashboard: requests, errors, cost, latency and tokens over the last 24 h, 7 d or 30 d; every bar and point links to the list."""

from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from logs.admin import charts
from logs.admin.filters import filter_value
from logs.admin.views import page_context
from logs.stats import WINDOWS, dashboard_build


def _list_url(start, end, **filters: str) -> str:
    """The exchange list for a bucket (or from a time on) and filters: where a chart's bar or point leads."""
    query = {"created_at__gte": start.isoformat(), **({"created_at__lt": end.isoformat()} if end else {}), **filters}
    return f"{reverse('admin:logs_request_changelist')}?{urlencode(query)}"


def dashboard_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """Charts of one window (read from the hour rollups: no window reads the log itself)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    window = request.GET.get("window", "24h")
    window = window if window in WINDOWS else "24h"
    dash = dashboard_build(window)
    rate = "per hour" if window == "24h" else "per hour (average over each bucket)"
    buckets = [_list_url(s, s + dash.width) for s in dash.starts]
    errors = [_list_url(s, s + dash.width, status="error") for s in dash.starts]
    window_start = dash.starts[0] if dash.starts else None
    figures = [
        charts.bar_chart(f"Requests {rate}", dash.labels, dash.per_hour, links=buckets),
        charts.line_chart("Error rate", dash.labels, {"errors": dash.error_rate}, "%", links=errors),
        charts.bar_chart("Cost (USD)", dash.labels, [round(c, 4) for c in dash.cost], links=buckets),
        charts.line_chart("Latency (total duration)", dash.labels, dash.latency, " ms", links=buckets),
        charts.line_chart("Time to first byte", dash.labels, dash.ttfb, " ms", links=buckets),
        charts.hbar_chart("Tokens by model", [(m["model"] or "(unknown)", [m["input"] or 0, m["output"] or 0])
                                              for m in dash.models], ["input", "output"],
                          links=[_list_url(window_start, None, answered_by=filter_value("answered_by", m["model"]))
                                 if m["model"] and window_start
                                 else None for m in dash.models]),
    ]
    window_end = dash.starts[-1] + dash.width if dash.starts else None
    context = page_context(model_admin, request, "Log dashboard", dash=dash, figures=figures,
                           windows=list(WINDOWS), window=window, window_start=window_start, window_end=window_end,
                           unpriced_url=_list_url(window_start, window_end, cost="unknown") if window_start else None)
    return TemplateResponse(request, "admin/logs/request/dashboard.html", context)
