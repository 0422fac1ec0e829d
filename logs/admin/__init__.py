"""The log browser: a read-only, fast exchange list with filters, search, export and delete.

Pages beyond the list live in views/, one module each."""

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.urls import path
from django.utils.html import format_html
from django.utils.text import Truncator

from logs.admin.changelist import ExchangeChangeList, NoCountPaginator
from logs.admin.filters import (AnswerModelFilter, CacheFilter, CostFilter, FilesFilter, GatewayKeyFilter,
                                KeyFilter, ModelFilter, ProviderFilter, StatusFilter, StreamedFilter)
from logs.models import BinaryFile, Request
from logs.retention import queryset_delete
from logs.admin.views import header_context
from logs.admin.views.dashboard import dashboard_view
from logs.admin.views.exchange import exchange_view
from logs.admin.views.export import export_response
from logs.admin.views.files import file_view
from logs.selectors import exchange_list, search_q


def _ms(value: float | None) -> str:
    """Milliseconds for a column."""
    return "" if value is None else f"{value:,.0f} ms"


def _count(value: int | None) -> str:
    """A token count for a column; blank when unknown (unknown is not 0)."""
    return "" if value is None else f"{value:,}"


def _size(n: int) -> str:
    """Bytes, human sized."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


@admin.register(Request)
class RequestAdmin(admin.ModelAdmin):
    list_display = ("time", "provider", "method", "endpoint_short", "model_name", "answer_model", "status",
                    "duration", "ttfb", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
                    "total_tokens", "cost", "streamed", "body_size_total", "files_n", "ended", "key")
    list_display_links = ("time",)
    list_filter = (ProviderFilter, StatusFilter, ModelFilter, AnswerModelFilter, CostFilter, StreamedFilter,
                   CacheFilter, FilesFilter, KeyFilter, GatewayKeyFilter)
    date_hierarchy = "created_at"
    search_fields = ("=id", "endpoint", "model", "body")  # shown as help; get_search_results decides
    search_help_text = ("Request id or key fingerprint (exact; key:<fingerprint> forces it), "
                        "or text in the endpoint, model, request or response body.")
    ordering = ("-created_at",)
    # Time, models, tokens and cost sort on an index (see changelist.SORT_KNOWN_ONLY).
    # Duration and TTFB do not: ordering a million rows by an unindexed joined column takes
    # seconds (docs/benchmark.md).
    sortable_by = ("time", "model_name", "answer_model", "input_tokens", "output_tokens", "cached_tokens",
                   "reasoning_tokens", "total_tokens", "cost")
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

    @admin.display(description="model", ordering="model")
    def model_name(self, obj: Request) -> str:
        """The model the client asked for."""
        return obj.model or ""

    @admin.display(description="answered by", ordering="response__model")
    def answer_model(self, obj: Request) -> str:
        """The model the provider reported (often a dated version of the requested one)."""
        resp = _resp(obj)
        return (resp.model if resp else "") or ""

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

    @admin.display(description="input", ordering="response__input_tokens")
    def input_tokens(self, obj: Request) -> str:
        """Input tokens (including cached ones)."""
        return _count(getattr(_resp(obj), "input_tokens", None))

    @admin.display(description="output", ordering="response__output_tokens")
    def output_tokens(self, obj: Request) -> str:
        """Output tokens (including reasoning ones)."""
        return _count(getattr(_resp(obj), "output_tokens", None))

    @admin.display(description="cached", ordering="response__cached_tokens")
    def cached_tokens(self, obj: Request) -> str:
        """Input tokens served from the provider's prompt cache."""
        return _count(getattr(_resp(obj), "cached_tokens", None))

    @admin.display(description="reasoning", ordering="response__reasoning_tokens")
    def reasoning_tokens(self, obj: Request) -> str:
        """Reasoning (thinking) tokens."""
        return _count(getattr(_resp(obj), "reasoning_tokens", None))

    @admin.display(description="total", ordering="response__total_tokens")
    def total_tokens(self, obj: Request) -> str:
        """Total tokens."""
        return _count(getattr(_resp(obj), "total_tokens", None))

    @admin.display(description="cost (USD)", ordering="response__cost_usd")
    def cost(self, obj: Request) -> str:
        """Cost from the price table, at its stored precision (cents are rare); blank when unknown."""
        value = getattr(_resp(obj), "cost_usd", None)
        return "" if value is None else f"${value.normalize():f}"

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

    @admin.display(description="key")
    def key(self, obj: Request):
        """Provider key fingerprint, and the gateway access key's name when one was presented."""
        name = obj.gateway_key.rsplit(" (fp ", 1)[0] if obj.gateway_key else ""
        return format_html('<code title="provider key fingerprint">{}</code>{}', obj.key_fingerprint or "",
                           format_html('<br><small title="{}">{}</small>', obj.gateway_key, name) if name else "")

    def get_changelist(self, request: HttpRequest, **kwargs):
        """A ChangeList that reuses the paginator's rows instead of querying again."""
        return ExchangeChangeList

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """Add the pending log records count."""
        return super().changelist_view(request, {**(extra_context or {}), **header_context()})

    # --- detail, dashboard, files
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        """The exchange page (request, response, conversation, events, files) instead of a form."""
        return exchange_view(self, request, object_id)

    def get_urls(self):
        """Dashboard and file download, under this model's admin URLs (so admin login applies)."""
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(lambda r: dashboard_view(self, r)), name="logs_request_dashboard"),
            path("file/<str:file_id>/", wrap(lambda r, file_id: file_view(self, r, file_id)),
                 name="logs_binaryfile_download"),
        ] + super().get_urls()

    # --- actions and deletion
    @admin.action(description="Export selected exchanges as JSONL", permissions=["view"])
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet):
        """Stream the selection as JSON Lines."""
        return export_response(request, queryset, "jsonl")

    @admin.action(description="Export selected exchanges as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet):
        """Stream the selection as CSV."""
        return export_response(request, queryset, "csv")

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
