"""The log browser: a read-only, fast exchange list with filters, search, export and delete."""

from django.contrib import admin
from django.contrib.admin.utils import build_q_object_from_lookup_parameters
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from logs import admin_views
from logs.models import BinaryFile, Request
from logs.retention import queryset_delete
from logs.selectors import (STATUS_CLASSES, distinct_values, exchange_list, has_files_annotate, search_q,
                            status_q, streamed_q)


class NoCountPaginator(Paginator):
    """Pages without COUNT(*): it fetches one row beyond the page to know whether more exist."""

    def __init__(self, object_list, per_page, page_number: int = 1, **kwargs) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.page_number = max(page_number, 1)

    @cached_property
    def rows(self) -> list:
        """The current page's rows plus, when there is one, the first row of the next page."""
        offset = (self.page_number - 1) * self.per_page
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


class _ChoiceFilter(admin.SimpleListFilter):
    """A list filter whose choices come from a cheap query and whose value maps to a Q."""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Apply the chosen value."""
        value = self.value()
        return queryset.filter(self.q(value)) if value else queryset

    def q(self, value: str) -> Q:
        """The condition for a value."""
        raise NotImplementedError


class ProviderFilter(_ChoiceFilter):
    title, parameter_name = "provider", "provider"

    def lookups(self, request, model_admin):
        """Providers present in the log (DISTINCT over an index)."""
        return [(n, n) for n in distinct_values(Request.objects.all(), "provider")]

    def q(self, value: str) -> Q:
        """Exact provider."""
        return Q(provider=value)


class StatusFilter(_ChoiceFilter):
    title, parameter_name = "status", "status"

    def lookups(self, request, model_admin):
        """Status classes and ways an exchange can end."""
        return list(STATUS_CLASSES.items())

    def q(self, value: str) -> Q:
        """See selectors.status_q (shared with export_logs --status)."""
        return status_q(value) if value in STATUS_CLASSES else Q()


class ModelFilter(_ChoiceFilter):
    title, parameter_name = "model", "model"

    def lookups(self, request, model_admin):
        """Requested models present in the log (DISTINCT over an index)."""
        return [(n, n) for n in distinct_values(Request.objects.all(), "model")]

    def q(self, value: str) -> Q:
        """Requested model."""
        return Q(model=value)


class StreamedFilter(_ChoiceFilter):
    title, parameter_name = "streamed", "streamed"

    def lookups(self, request, model_admin):
        """Yes or no."""
        return [("yes", "streamed"), ("no", "not streamed")]

    def q(self, value: str) -> Q:
        """Response was an event stream."""
        return streamed_q(value == "yes")


class FilesFilter(_ChoiceFilter):
    title, parameter_name = "files", "files"

    def lookups(self, request, model_admin):
        """Yes or no."""
        return [("yes", "has files"), ("no", "no files")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """EXISTS on binary_files (index probe per row)."""
        value = self.value()
        if value not in ("yes", "no"):
            return queryset
        return has_files_annotate(queryset).filter(has_files=(value == "yes"))


def _ms(value: float | None) -> str:
    """Milliseconds for a column."""
    return "" if value is None else f"{value:,.0f} ms"


def _size(n: int) -> str:
    """Bytes, human sized."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


@admin.register(Request)
class RequestAdmin(admin.ModelAdmin):
    list_display = ("time", "provider", "method", "endpoint_short", "model_name", "status", "duration",
                    "ttfb", "tokens", "streamed", "body_size_total", "files_n", "ended")
    list_display_links = ("time",)
    list_filter = (ProviderFilter, StatusFilter, ModelFilter, StreamedFilter, FilesFilter)
    date_hierarchy = "created_at"
    search_fields = ("=id", "endpoint", "model", "body")  # shown as help; get_search_results decides
    search_help_text = "Request id (exact), or text in the endpoint, model, request or response body."
    ordering = ("-created_at",)
    # Only time sorts: ordering a million rows by a joined column takes seconds (measured ~4 s on
    # SQLite); filter first, or export, to rank by duration or tokens.
    sortable_by = ("time",)
    list_per_page = 100
    list_max_show_all = 0  # "show all" of a million rows is never what anyone wants
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["export_jsonl", "export_csv", "delete_selected"]
    actions_selection_counter = False  # it would print the paginator's lower bound as a total

    # --- permissions: the log is evidence, so it is read-only; superusers may delete.
    def has_add_permission(self, request: HttpRequest) -> bool:
        """Nobody adds log rows by hand."""
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        """Nobody edits log rows."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        """Only superusers delete (and deleting removes the files too)."""
        return request.user.is_active and request.user.is_superuser

    # --- list
    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """Response joined, bodies left out, file count per row as a correlated subquery."""
        files = (BinaryFile.objects.filter(request_id=OuterRef("pk")).order_by().values("request_id")
                 .annotate(n=Count("pk")).values("n")[:1])
        return exchange_list(super().get_queryset(request)).annotate(
            files_n=Coalesce(Subquery(files, output_field=IntegerField()), 0))

    def get_paginator(self, request: HttpRequest, queryset, per_page, orphans=0, allow_empty_first_page=True):
        """The no-COUNT paginator, told which page is being asked for."""
        try:
            page = int(request.GET.get("p", 1))
        except ValueError:
            page = 1
        return NoCountPaginator(queryset, per_page, page, orphans=0, allow_empty_first_page=True)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        """An exact id when the term is one, else endpoint/model/body text; never duplicates."""
        terms = search_term.split()
        for term in terms:
            queryset = queryset.filter(search_q(term))
        return queryset, False

    @admin.display(description="time", ordering="created_at")
    def time(self, obj: Request) -> str:
        """When the request arrived (UTC)."""
        return obj.created_at.strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="endpoint")
    def endpoint_short(self, obj: Request):
        """The endpoint, shortened for the table."""
        return format_html('<span title="{}">{}</span>', obj.endpoint, Truncator(obj.endpoint).chars(48))

    @admin.display(description="model")
    def model_name(self, obj: Request) -> str:
        """Requested model, else the answering one."""
        resp = _resp(obj)
        return obj.model or (resp.model if resp else "") or ""

    @admin.display(description="status", ordering="response__status_code")
    def status(self, obj: Request):
        """HTTP status, coloured by class."""
        resp = _resp(obj)
        if resp is None:
            return format_html('<span class="st st-pending">{}</span>', "…")
        code = resp.status_code
        cls = "none" if code is None else f"{code // 100}xx"
        return format_html('<span class="st st-{}">{}</span>', cls, code if code is not None else "—")

    @admin.display(description="duration", ordering="response__duration_ms")
    def duration(self, obj: Request) -> str:
        """Total time."""
        resp = _resp(obj)
        return _ms(resp.duration_ms) if resp else ""

    @admin.display(description="TTFB", ordering="response__ttfb_ms")
    def ttfb(self, obj: Request) -> str:
        """Time to first byte of the answer."""
        resp = _resp(obj)
        return _ms(resp.ttfb_ms) if resp else ""

    @admin.display(description="tokens in/out", ordering="response__total_tokens")
    def tokens(self, obj: Request) -> str:
        """Input/output tokens where the answer said."""
        resp = _resp(obj)
        if resp is None or (resp.input_tokens is None and resp.output_tokens is None):
            return ""
        return f"{resp.input_tokens if resp.input_tokens is not None else '?'} / " \
               f"{resp.output_tokens if resp.output_tokens is not None else '?'}"

    @admin.display(description="stream", boolean=True)
    def streamed(self, obj: Request) -> bool | None:
        """Answered as an event stream."""
        resp = _resp(obj)
        return resp.is_stream if resp else None

    @admin.display(description="bodies")
    def body_size_total(self, obj: Request) -> str:
        """Request + response body sizes."""
        resp = _resp(obj)
        return f"{_size(obj.body_size)} / {_size(resp.body_size)}" if resp else _size(obj.body_size)

    @admin.display(description="files")
    def files_n(self, obj: Request) -> str:
        """Number of stored files."""
        return str(obj.files_n) if getattr(obj, "files_n", 0) else ""

    @admin.display(description="ended")
    def ended(self, obj: Request):
        """How the exchange ended."""
        resp = _resp(obj)
        outcome = resp.outcome if resp else "pending"
        return format_html('<span class="oc oc-{}">{}</span>', outcome, outcome.replace("_", " "))

    def get_changelist(self, request: HttpRequest, **kwargs):
        """A ChangeList that reuses the paginator's rows instead of querying again."""
        return ExchangeChangeList

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """Add the pending log records count."""
        return super().changelist_view(request, {**(extra_context or {}), **admin_views.header_context()})

    # --- detail, dashboard, files
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        """The exchange page (request, response, conversation, events, files) instead of a form."""
        return admin_views.exchange_view(self, request, object_id)

    def get_urls(self):
        """Dashboard and file download, under this model's admin URLs (so admin login applies)."""
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(lambda r: admin_views.dashboard_view(self, r)), name="logs_request_dashboard"),
            path("file/<str:file_id>/", wrap(lambda r, file_id: admin_views.file_view(self, r, file_id)),
                 name="logs_binaryfile_download"),
        ] + super().get_urls()

    # --- actions and deletion
    @admin.action(description="Export selected exchanges as JSONL", permissions=["view"])
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet):
        """Stream the selection as JSON Lines."""
        return admin_views.export_response(request, queryset, "jsonl")

    @admin.action(description="Export selected exchanges as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet):
        """Stream the selection as CSV."""
        return admin_views.export_response(request, queryset, "csv")

    def get_deleted_objects(self, objs, request: HttpRequest):
        """A summary for the confirmation page, instead of listing every related row."""
        ids = objs.values("pk") if isinstance(objs, QuerySet) else [o.pk for o in objs]
        n = Request.objects.filter(pk__in=ids).count()
        files = BinaryFile.objects.filter(request_id__in=ids).count()
        summary = [f"{n} exchange(s): request, response and {files} stored file(s), removed from disk too"]
        return summary, {"exchanges": n, "files": files}, set(), []

    def delete_model(self, request: HttpRequest, obj: Request) -> None:
        """Delete one exchange and its files."""
        queryset_delete(Request.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Delete the selected exchanges and their files, in batches."""
        queryset_delete(Request.objects.filter(pk__in=queryset.values("pk")))


def _resp(obj: Request):
    """The joined response, or None while the exchange is open."""
    try:
        return obj.response
    except Request.response.RelatedObjectDoesNotExist:
        return None


class ExchangeChangeList(ChangeList):
    """ChangeList that reuses the paginator's rows and keeps the date range apart for probes."""

    date_range: dict = {}

    def get_filters(self, request: HttpRequest, *args, **kwargs):
        """As Django's, with the date hierarchy's created_at range held back (applied last)."""
        specs, has_filters, lookups, duplicates, active = super().get_filters(request, *args, **kwargs)
        field = self.date_hierarchy
        keys = (f"{field}__gte", f"{field}__lt") if field else ()
        self.date_range = {k: lookups.pop(k) for k in keys if k in lookups}
        return specs, has_filters, lookups, duplicates, active

    def get_queryset(self, request: HttpRequest, *args, **kwargs) -> QuerySet:
        """Keep the queryset without the date range, so the date drill-down can probe single days
        (two ranges on one column make SQLite seek on the wider one and scan the rest)."""
        qs = super().get_queryset(request, *args, **kwargs)
        self.undated_queryset = qs
        return qs.filter(build_q_object_from_lookup_parameters(self.date_range)) if self.date_range else qs

    def get_results(self, request: HttpRequest) -> None:
        """As Django's, without the second query for a short list."""
        super().get_results(request)
        if not self.multi_page and isinstance(self.paginator, NoCountPaginator):
            self.result_list = self.paginator.rows

    @property
    def newer_url(self) -> str | None:
        """Link to the previous (newer) page."""
        return self.get_query_string({"p": self.page_num - 1}) if self.page_num > 1 else None

    @property
    def older_url(self) -> str | None:
        """Link to the next (older) page, when there is one."""
        has_next = isinstance(self.paginator, NoCountPaginator) and self.paginator.has_next
        return self.get_query_string({"p": self.page_num + 1}) if has_next else None
