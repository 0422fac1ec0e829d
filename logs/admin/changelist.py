"""The exchange list's paging and sorting: no COUNT(*), index-friendly sorts, date range applied last."""

from datetime import datetime

from django.conf import settings
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import build_q_object_from_lookup_parameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property

from logs.selectors import period_next, period_q

# Sortable columns whose value can be unknown: sorting by one lists the exchanges where it is
# known, so the database walks that column's index (both directions, SQLite and PostgreSQL)
# instead of sorting every row (seconds at a million, docs/benchmark.md). Value: how the note names it.
SORT_KNOWN_ONLY = {
    "model": "requested model", "response__model": "answering model", "response__input_tokens": "input tokens",
    "response__output_tokens": "output tokens", "response__cached_tokens": "cached input tokens",
    "response__reasoning_tokens": "reasoning tokens", "response__total_tokens": "total tokens",
    "response__cost_usd": "cost",
}


OFFSET_MAX = 2**53  # rows: SQLite and PostgreSQL take a 64-bit OFFSET


class NoCountPaginator(Paginator):
    """Pages without COUNT(*): it fetches one row beyond the page to know whether more exist."""

    def __init__(self, object_list, per_page, page_number: int = 1, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def rows(self) -> list:
        """The current page's rows plus, when there is one, the first row of the next page."""
        offset = (self.page_number - 1) * self.per_page
        if offset > OFFSET_MAX:  # past any log, and past what the database's OFFSET takes (an error, not a page)
            return []
        return list(self.object_list[offset:offset + self.per_page + 1])

    @cached_property
    def count(self) -> int:
        """Rows up to the current page, plus one when a next page exists (a lower bound)."""
        return (self.page_number - 1) * self.per_page + len(self.rows)

    @property
    def has_next(self) -> bool:
        """True when a further page exists."""
        return len(self.rows) > self.per_page

    def page(self, number):
        """The current page from the rows already fetched; others the usual way."""
        number = self.validate_number(number)
        if number == self.page_number:
            return self._get_page(self.rows[:self.per_page], number, self)
        return super().page(number)


def drill_down_range(field: str, year: str, month: str | None, day: str | None) -> dict:
    """The lookups of field (in Django's list form) of the drill-down's year, month or day."""
    try:
        start = datetime(int(year), int(month or 1), int(day or 1))
    except (TypeError, ValueError) as exc:  # as Django's own bad values: the list says so
        raise IncorrectLookupParameters(exc) from exc
    start = timezone.make_aware(start) if settings.USE_TZ else start
    level = "day" if day else "month" if month else "year"
    return {k: [v] for k, v in period_q(field, start, period_next(start, level)).items()}


class ExchangeChangeList(ChangeList):
    """ChangeList that reuses the paginator's rows and keeps the date range apart for probes."""

    date_range: dict = {}

    def get_filters(self, request: HttpRequest, *args, **kwargs):
        """As Django's, with the date drill-down's period held back as a created_at range (applied last).

        The period is ours, not Django's: Django ends a period at the next one's start, which past the
        calendar's last (year 9999, its December, its 31st) overflows, so the list of a row dated then could
        not be opened. Hidden from Django's code, the drill-down's parameters stay plain lookups, taken out here."""
        field, self.date_hierarchy = self.date_hierarchy, None
        try:
            specs, has_filters, lookups, duplicates, active = super().get_filters(request, *args, **kwargs)
        finally:
            self.date_hierarchy = field
        if field and f"{field}__year" in lookups:  # a month or day without a year stays a plain lookup, as in Django
            drill = [lookups.pop(f"{field}__{k}", [None])[-1] for k in ("year", "month", "day")]
            self.date_range = drill_down_range(field, *drill)
        return specs, has_filters, lookups, duplicates, active

    def get_ordering(self, request: HttpRequest, queryset: QuerySet) -> list:
        """As Django's, except that a sort on one SORT_KNOWN_ONLY column leaves ties in the
        order of that column's index (SQLite: rowid; PostgreSQL 12+: heap position), stable
        from page to page. Django's added "-pk" tie-breaker would make the database sort every
        tie: most rows, for cached tokens = 0."""
        ordering = super().get_ordering(request, queryset)
        first = str(ordering[0]) if ordering else ""
        rest = {str(o).lstrip("-") for o in ordering[1:]}  # the admin's default -created_at, -pk
        if first.lstrip("-") in SORT_KNOWN_ONLY and rest <= {"created_at", "pk"}:
            same = "-created_at" if first.startswith("-") else "created_at"  # (model, created_at) index
            return [first, same] if first.lstrip("-") == "model" else [first]
        return ordering

    def get_queryset(self, request: HttpRequest, *args, **kwargs) -> QuerySet:
        """Keep the queryset without the date range, so the date drill-down can probe single days
        (two ranges on one column make SQLite seek on the wider one and scan the rest)."""
        qs = super().get_queryset(request, *args, **kwargs)
        self.undated_queryset = qs  # before the sort's condition: date probes stay on created_at alone
        first = next((str(f).lstrip("-") for f in qs.query.order_by), "")
        # An action over every matching exchange (select across, then export or delete) takes them all: the
        # sort, and the rows it leaves out, only shape the page (the export took 728 of 882 sorted by cost).
        acting = request.method == "POST" and "action" in request.POST
        self.sorted_known_only = None if acting else SORT_KNOWN_ONLY.get(first)
        if self.sorted_known_only:  # see SORT_KNOWN_ONLY: the index holds only known values
            qs = qs.filter(**{f"{first}__isnull": False})
        return qs.filter(build_q_object_from_lookup_parameters(self.date_range)) if self.date_range else qs

    def get_results(self, request: HttpRequest) -> None:
        """As Django's, without the second query for a short list."""
        super().get_results(request)
        if not self.multi_page and isinstance(self.paginator, NoCountPaginator):
            self.result_list = self.paginator.rows

    @property
    def rows_complete(self) -> list | None:
        """Every exchange the filters, search and date range match, when they all fit on the first page; else None.

        The date drill-down reads its bounds and periods from these rather than probing the database
        (a probe for a rare set walks the created_at index until it meets one of its rows)."""
        paginator = self.paginator
        if self.sorted_known_only or not isinstance(paginator, NoCountPaginator):
            return None  # a sort on a known-only column left out the rows without that value
        return paginator.rows if paginator.page_number == 1 and not paginator.has_next else None

    @property
    def newest(self):
        """The newest matching exchange's time when this page shows it (the first page, newest first), else None.

        The date drill-down's upper bound, without a query: its seek walks created_at newest first until it meets
        a match, as far back as the newest one of a rare value."""
        paginator = self.paginator
        if self.sorted_known_only or self.date_range or not isinstance(paginator, NoCountPaginator):
            return None
        if paginator.page_number != 1 or not paginator.rows:
            return None
        order = [str(o) for o in self.queryset.query.order_by[:1]]
        return paginator.rows[0].created_at if order == ["-created_at"] else None

    @property
    def newer_url(self) -> str | None:
        """Link to the previous (newer) page."""
        return self.get_query_string({"p": self.page_num - 1}) if self.page_num > 1 else None

    @property
    def older_url(self) -> str | None:
        """Link to the next (older) page, when there is one."""
        has_next = isinstance(self.paginator, NoCountPaginator) and self.paginator.has_next
        return self.get_query_string({"p": self.page_num + 1}) if has_next else None
