"""A session's page: its exchanges in order as one timeline, with tokens, cost and latency summed."""

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse

from logs.admin.views import page_context
from logs.models import Request
from logs.selectors import exchanges_totals, session_exchanges, session_q

SESSION_PAGE_MAX = 1000  # exchanges drawn on one page; the list (filtered by the session) has them all


def session_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """The session named by ?id= (session ids are free text: a query parameter, not a path part)."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    session = request.GET.get("id", "")
    rows = list(session_exchanges(session)[:SESSION_PAGE_MAX]) if session else []
    totals = exchanges_totals(Request.objects.filter(session_q(session))) if session else {}
    steps = _timeline(rows)
    context = page_context(model_admin, request, f"Session {session}" if session else "Session", session=session,
                           steps=steps, totals=totals, truncated=len(rows) == SESSION_PAGE_MAX)
    return TemplateResponse(request, "admin/logs/request/session.html", context)


def _timeline(rows: list[Request]) -> list[dict]:
    """Each exchange with where it starts and how long it lasts on the session's time axis (percent)."""
    if not rows:
        return []
    start = rows[0].created_at
    spans = []
    for r in rows:
        resp = getattr(r, "response", None) if _answered(r) else None
        offset_ms = (r.created_at - start).total_seconds() * 1000
        spans.append((r, resp, offset_ms, (resp.duration_ms or 0) if resp else 0))
    total = max((o + d for _, _, o, d in spans), default=0) or 1
    return [{"req": r, "resp": resp, "offset_ms": o, "duration_ms": d if resp else None,
             "left": round(o * 100 / total, 2), "width": max(round(d * 100 / total, 2), 0.3)}
            for r, resp, o, d in spans]


def _answered(req: Request) -> bool:
    try:
        req.response
    except Request.response.RelatedObjectDoesNotExist:
        return False
    return True
