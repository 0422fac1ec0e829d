"""The dashboard: requests, errors, latency and tokens over the last 24 h, 7 d or 30 d."""

from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from logs.admin import charts
from logs.admin.views import page_context
from logs.stats import WINDOWS, dashboard_build

# The long windows read every exchange of up to 30 days (seconds at a million rows on SQLite).
CACHE_SECONDS = {"7d": 60, "30d": 60}


def dashboard_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """Charts of one window, the long ones kept for a minute."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    window = request.GET.get("window", "24h")
    window = window if window in WINDOWS else "24h"
    ttl = CACHE_SECONDS.get(window, 0)
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
    context = page_context(model_admin, request, "Log dashboard", dash=dash, figures=figures,
                           windows=list(WINDOWS), window=window)
    return TemplateResponse(request, "admin/logs/request/dashboard.html", context)
