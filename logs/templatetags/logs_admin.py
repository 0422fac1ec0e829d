"""Template tags of the log browser."""

import calendar
from datetime import datetime
from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.text import capfirst

from logs.admin.formats import count_format, ms_format, usd_exact, usd_format
from logs.admin.filters import RANGE_FROM, RANGE_TO, TimeRangeFilter, time_range_read
from logs.admin.views.live import FEED_PARAMS, feed_params
from logs.selectors import date_bounds, date_choices, period_next, search_is_text

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

    def link(filters: dict) -> str:  # a period replaces the time range, preset or custom (docs/log.md)
        return cl.get_query_string(filters, [f"{field}__", "since"])

    ykey, mkey, dkey = f"{field}__year", f"{field}__month", f"{field}__day"
    qs = getattr(cl, "undated_queryset", cl.queryset).order_by()
    grouped = search_is_text(cl.query or "")  # a word search: periods found by grouping, not a probe each
    # The list's own rows, when they are every match: of the undated set when no date range applies, and of
    # the drilled-down period, whose sub-periods are the choices, when one does.
    rows = getattr(cl, "rows_complete", None)
    dated = bool(getattr(cl, "date_range", None))
    known = [getattr(r, field) for r in rows] if rows is not None and (year or not dated) else None
    first = last = None  # the bounds, when known: periods outside them hold nothing (no probe)
    if not year:
        # `first` may be a lower bound only (see date_bounds): a level with one period holding rows is skipped,
        # as it is when both bounds fall in that period.
        first, last = date_bounds(qs, field, known, getattr(cl, "newest", None))
        if first is None or last is None:
            return {"show": False}
        first, last = timezone.localtime(first), timezone.localtime(last)
        year = last.year
        if first.year != last.year:
            years = date_choices(qs, field, [_start(y) for y in range(first.year, last.year + 1)],
                                 lambda s: period_next(s, "year"), known, "year" if grouped else "")
            if len(years) > 1:
                return {"show": True, "choices": [{"link": link({ykey: s.year}), "title": str(s.year)}
                                                  for s in years]}
            first = max(first, _start(year))
        if first.month == last.month:
            month = first.month
        else:
            months = date_choices(qs, field, [_start(year, m) for m in range(first.month, last.month + 1)],
                                  lambda s: period_next(s, "month"), known, "month" if grouped else "")
            if len(months) > 1:
                return _months_shown(link, ykey, mkey, year, months)
            month, first = last.month, max(first, _start(year, last.month))
    if year and month and day:
        when = datetime(year, month, day)
        return {"show": True, "back": {"link": link({ykey: year, mkey: month}),
                                       "title": capfirst(formats.date_format(when, "YEAR_MONTH_FORMAT"))},
                "choices": [{"title": capfirst(formats.date_format(when, "MONTH_DAY_FORMAT"))}]}
    if year and month:
        span = (first.day, last.day) if first and (first.year, first.month) == (last.year, last.month) \
            else (1, calendar.monthrange(year, month)[1])
        days = date_choices(qs, field, [_start(year, month, d) for d in range(span[0], span[1] + 1)],
                            lambda s: period_next(s, "day"), known, "day" if grouped else "")
        return {"show": True, "back": {"link": link({ykey: year}), "title": str(year)},
                "choices": [{"link": link({ykey: year, mkey: month, dkey: s.day}),
                             "title": capfirst(formats.date_format(s, "MONTH_DAY_FORMAT"))} for s in days]}
    months = date_choices(qs, field, [_start(year, m) for m in range(1, 13)], lambda s: period_next(s, "month"), known,
                          "month" if grouped else "")
    return _months_shown(link, ykey, mkey, year, months)


def _months_shown(link, ykey: str, mkey: str, year: int, months: list[datetime]) -> dict:
    """The drill-down at a year's level: its months holding rows, and the way back to all dates."""
    return {"show": True, "back": {"link": link({}), "title": "All dates"},
            "choices": [{"link": link({ykey: year, mkey: s.month}),
                         "title": capfirst(formats.date_format(s, "YEAR_MONTH_FORMAT"))} for s in months]}


@register.filter
def ms(value) -> str:
    """Milliseconds, readable (logs/admin/formats.py)."""
    return ms_format(value)


@register.filter
def usd_stored(value) -> str:
    """Dollars as stored (a hover's exact value)."""
    return usd_exact(value)


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
    kept = feed_params(cl.params)
    return f"?{urlencode(kept)}" if kept else ""


# Parameters that change which rows the list shows but not which exchanges match; and those of Django's list
# that are no filter at all.
_LIST_ONLY = {"o", "p", "e", "_to_field", "_popup"}
_PARAM_NAMES = {"q": "search", "created_at__year": "the date drill-down", "created_at__month": "the date drill-down",
                "created_at__day": "the date drill-down", "answered_by": "answering model", "meta": "metadata",
                "cache": "response cache"}


@register.simple_tag
def list_live(cl) -> dict:
    """What the list's Live switch needs: the feed, the list's filters it applies, and why it cannot go live
    on this list ("" when it can): new rows go on top of the first page of the newest-first list only."""
    other = sorted({_PARAM_NAMES.get(k, k) for k, v in cl.params.items()
                    if v and k not in FEED_PARAMS and k not in _LIST_ONLY})
    blocked = ""
    if other:
        names = ", ".join(other)
        blocked = f"live rows cannot apply {names}: clear it to go live"
    elif time_range_read(cl.params).error:  # the feed would refuse it (400) on every poll
        blocked = "the time range is not applied: correct it to go live"
    elif (cl.params.get("o") or "-1") != "-1" or cl.page_num > 1:  # "-1": time, newest first (the default)
        blocked = "live rows go on the first page of the newest-first list: sort by time, newest first"
    return {"feed": reverse("admin:logs_request_live_feed"), "params": feed_params(cl.params), "blocked": blocked}


@register.simple_tag
def time_range_clear(cl) -> str:
    """The list's query without its time range (preset or custom), every other filter kept."""
    return cl.get_query_string(remove=[TimeRangeFilter.parameter_name, RANGE_FROM, RANGE_TO])
