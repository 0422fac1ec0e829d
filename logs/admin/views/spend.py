"""The spend page: spend and tokens per day, model, key and user for a chosen range, each row a link to the list."""

from datetime import date, datetime, time, timedelta, timezone
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse

from logs.admin.filters import filter_value
from logs.admin.views import page_context
from logs.selectors import NO_GATEWAY_KEY
from logs.stats import SpendRow, spend_build

RANGES = {"today": "today", "24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days",
          "month": "this month"}
CUSTOM_DAYS_MAX = 92  # a custom range reads every exchange in it


def spend_range(params, now: datetime) -> tuple[str, datetime, datetime, str]:
    """(range name, start, end, error) from ?range= or ?from=YYYY-MM-DD&to=YYYY-MM-DD (UTC days, `to` included)."""
    if params.get("from"):
        try:
            first = date.fromisoformat(params["from"])
            last = date.fromisoformat(params.get("to") or now.date().isoformat())
        except ValueError:
            return _rolling("7d", now) + ("Dates are written YYYY-MM-DD: showing the last 7 days.",)
        if last < first or (last - first).days >= CUSTOM_DAYS_MAX or last == date.max:
            return _rolling("7d", now) + (f"A range is 1 to {CUSTOM_DAYS_MAX} days, the first day first, "
                                          "ending before 9999-12-31: showing the last 7 days.",)
        return ("custom", datetime.combine(first, time(), timezone.utc),
                datetime.combine(last + timedelta(days=1), time(), timezone.utc), "")
    name = params.get("range", "7d")
    return _rolling(name if name in RANGES else "7d", now) + ("",)


def _rolling(name: str, now: datetime) -> tuple[str, datetime, datetime]:
    today = datetime.combine(now.date(), time(), timezone.utc)
    start = {"today": today, "24h": now - timedelta(hours=24), "7d": now - timedelta(days=7),
             "30d": now - timedelta(days=30), "month": today.replace(day=1)}[name]
    return name, start, now + timedelta(seconds=1)  # the end is excluded: keep this second's exchanges


def _list_url(start: datetime, end: datetime, **filters: str) -> str:
    """The exchange list for a time span and filters."""
    query = {"created_at__gte": start.isoformat(), "created_at__lt": end.isoformat(), **filters}
    return f"{reverse('admin:logs_request_changelist')}?{urlencode(query)}"


def _rows(rows: list[SpendRow], link) -> list[dict]:
    """Rows with their link to the list and their share of the range's cost (for the bar)."""
    top = max((r.cost or 0 for r in rows), default=0) or 1
    return [{"row": r, "url": link(r), "share": round(float(r.cost or 0) * 100 / float(top), 1)} for r in rows]


def _key_filter(key: str) -> dict:
    """A key group's filter: gateway key labels read "name (fp 0123456789ab)"; others are provider key
    fingerprints, of the exchanges that presented no gateway key (those are grouped by theirs)."""
    return {"gateway_key": key} if " (fp " in key else {"key": key, "gateway_key": NO_GATEWAY_KEY}


def spend_view(model_admin, request: HttpRequest) -> TemplateResponse:
    """Spend for the chosen range."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    name, start, end, error = spend_range(request.GET, datetime.now(timezone.utc))
    spend = spend_build(start, end)

    def day_link(r: SpendRow) -> str:
        day = datetime.fromisoformat(r.key).replace(tzinfo=timezone.utc)
        return _list_url(max(day, start), min(day + timedelta(days=1), end))

    tables = [(*table, count) for table, count in zip([
        ("Per day (UTC)", "day", _rows(spend.days, day_link)),
        ("Per model (requested)", "model", _rows(spend.models, lambda r: _list_url(start, end, model=filter_value("model", r.key))
                                                  if r.key else None)),
        ("Per key", "key", _rows(spend.keys, lambda r: _list_url(start, end, **_key_filter(r.key))
                                 if r.key else None)),
        ("Per user", "user", _rows(spend.users, lambda r: _list_url(start, end, user=r.key) if r.key else None)),
    ], spend.counts)]
    context = page_context(model_admin, request, "Spend", spend=spend, tables=tables, ranges=RANGES.items(),
                           range_name=name, error=error, all_url=_list_url(start, end),
                           unpriced_url=_list_url(start, end, cost="unknown"),
                           first_day=start.date().isoformat(), last_day=(end - timedelta(seconds=1)).date().isoformat())
    return TemplateResponse(request, "admin/logs/request/spend.html", context)
