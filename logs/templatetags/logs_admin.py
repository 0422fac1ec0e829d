"""Template tags of the log browser."""

import calendar
from datetime import datetime

from django import template
from django.utils import formats, timezone
from django.utils.text import capfirst

from logs.admin.formats import count_format, ms_format, usd_format
from logs.selectors import date_bounds, date_choices, period_next

register = template.Library()


def _start(year: int, month: int = 1, day: int = 1) -> datetime:
    """An aware datetime in the current time zone."""
    return timezone.make_aware(datetime(year, month, day))


@register.inclusion_tag("admin/date_hierarchy.html")
def logs_date_hierarchy(cl) -> dict:
    """Django's date drill-down, with choices found by indexed EXISTS probes, never a DISTINCT scan."""
    field = cl.date_hierarchy
    params = {k: cl.params.get(f"{field}__{k}") for k in ("year", "month", "day")}
    try:
        year, month, day = (int(params[k]) if params[k] else None for k in ("year", "month", "day"))
    except (TypeError, ValueError):
        return {"show": False}

    def link(filters: dict) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    ykey, mkey, dkey = f"{field}__year", f"{field}__month", f"{field}__day"
    qs = getattr(cl, "undated_queryset", cl.queryset).order_by()
    # The list's own rows, when they are every match: of the undated set when no date range applies, and of
    # the drilled-down period, whose sub-periods are the choices, when one does.
    rows = getattr(cl, "rows_complete", None)
    dated = bool(getattr(cl, "date_range", None))
    known = [getattr(r, field) for r in rows] if rows is not None and (year or not dated) else None
    first = last = None  # the bounds, when known: periods outside them hold nothing (no probe)
    if not year:
        first, last = date_bounds(qs, field, known)
        if first is None or last is None:
            return {"show": False}
        first, last = timezone.localtime(first), timezone.localtime(last)
        if first.year != last.year:
            years = date_choices(qs, field, [_start(y) for y in range(first.year, last.year + 1)],
                                 lambda s: period_next(s, "year"), known)
            return {"show": True, "choices": [{"link": link({ykey: s.year}), "title": str(s.year)} for s in years]}
        year = first.year
        if first.month == last.month:
            month = first.month
    if year and month and day:
        when = datetime(year, month, day)
        return {"show": True, "back": {"link": link({ykey: year, mkey: month}),
                                       "title": capfirst(formats.date_format(when, "YEAR_MONTH_FORMAT"))},
                "choices": [{"title": capfirst(formats.date_format(when, "MONTH_DAY_FORMAT"))}]}
    if year and month:
        span = (first.day, last.day) if first and (first.year, first.month) == (last.year, last.month) \
            else (1, calendar.monthrange(year, month)[1])
        days = date_choices(qs, field, [_start(year, month, d) for d in range(span[0], span[1] + 1)],
                            lambda s: period_next(s, "day"), known)
        return {"show": True, "back": {"link": link({ykey: year}), "title": str(year)},
                "choices": [{"link": link({ykey: year, mkey: month, dkey: s.day}),
                             "title": capfirst(formats.date_format(s, "MONTH_DAY_FORMAT"))} for s in days]}
    span = (first.month, last.month) if first else (1, 12)  # no year chosen: first and last are in `year`
    months = date_choices(qs, field, [_start(year, m) for m in range(span[0], span[1] + 1)],
                          lambda s: period_next(s, "month"), known)
    return {"show": True, "back": {"link": link({}), "title": "All dates"},
            "choices": [{"link": link({ykey: year, mkey: s.month}),
                         "title": capfirst(formats.date_format(s, "YEAR_MONTH_FORMAT"))} for s in months]}


@register.filter
def ms(value) -> str:
    """Milliseconds, readable (logs/admin/formats.py)."""
    return ms_format(value)


@register.filter
def count(value) -> str:
    """A token count, readable."""
    return count_format(value)


@register.filter
def usd(value) -> str:
    """Dollars, readable."""
    return usd_format(value)


@register.simple_tag
def live_query(cl) -> str:
    """The list's filters the live tail understands, as a query string ("" when none)."""
    from urllib.parse import urlencode

    from logs.selectors import LIVE_FILTERS

    kept = {k: v for k, v in cl.params.items() if k in LIVE_FILTERS and v}
    return f"?{urlencode(kept)}" if kept else ""
