"""The log browser: a read-only, fast exchange list with filters, search, export and delete.

Pages beyond the list live in views/, one module each."""

import uuid

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import transaction
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce, Substr
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

from logs.admin.changelist import ExchangeChangeList, NoCountPaginator
from logs.admin.columns import DEFAULT_COLUMNS, OPTIONAL_COLUMNS, ListColumns
from logs.admin.filters import (AnswerModelFilter, CacheFilter, CostFilter, FilesFilter, GatewayKeyFilter,
                                KeyFilter, MetadataFilter, ModelFilter, ProviderFilter, SessionFilter,
                                StatusFilter, StreamedFilter, TimeRangeFilter, UserFilter)
from logs.models import BinaryFile, Request
from logs.retention import Deleted, queryset_delete
from logs.textsearch import term_words
from logs.admin.views import header_context
from logs.admin.views.dashboard import dashboard_view
from logs.admin.views.exchange import exchange_view
from logs.admin.views.export import export_response
from logs.admin.views.files import file_view
from logs.admin.views.live import live_feed, live_view
from logs.admin.views.replay import replay_view
from logs.admin.views.session import session_view
from logs.admin.views.spend import spend_view
from logs.selectors import exchange_list, search_q


COLUMNS_SESSION_KEY = "logs_list_columns"
# Each search term is its own index lookup and model-name scan, ANDed: a pasted paragraph of a few hundred
# words kept PostgreSQL busy for minutes, and a thousand made SQLite refuse the query (a 500).
SEARCH_TERMS_MAX = 32


def _is_id(value: str) -> bool:
    """Whether a selected row's value is an exchange id (a UUID, as the checkboxes send it)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@admin.register(Request)
class RequestAdmin(ListColumns, admin.ModelAdmin):
    list_display = DEFAULT_COLUMNS  # and what the column chooser adds (get_list_display)
    list_display_links = ("time",)
    list_filter = (TimeRangeFilter, StatusFilter, ModelFilter, ProviderFilter, UserFilter, SessionFilter,
                   MetadataFilter, AnswerModelFilter, CostFilter, StreamedFilter, CacheFilter, FilesFilter,
                   KeyFilter, GatewayKeyFilter)
    date_hierarchy = "created_at"
    search_fields = ("=id", "endpoint", "model", "body")  # shown as help; get_search_results decides
    search_help_text = ("Request id or key fingerprint (exact; key:<fingerprint> forces it), user:<name>, "
                        "session:<id>, meta:<name>=<value>, or text in the endpoint, model, request or response body.")
    ordering = ("-created_at",)
    # Time, models, tokens and cost sort on an index (see changelist.SORT_KNOWN_ONLY).
    # Duration and TTFB do not: ordering a million rows by an unindexed joined column takes
    # seconds (docs/benchmark.md).
    sortable_by = ("time", "model_name", "answer_model", "tokens", "input_tokens", "output_tokens", "cached_tokens",
                   "reasoning_tokens", "total_tokens", "cost")
    list_per_page = 100
    list_max_show_all = 0  # "show all" of a million rows is never what anyone wants
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["export_jsonl", "export_csv", "delete_selected"]
    # The counter counts ticked rows of the page; "select all" takes every exchange the filters match
    # (templates/admin/logs/request/actions.html: the list never counts them).
    actions_selection_counter = True

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
            files_n=Coalesce(Subquery(files, output_field=IntegerField()), 0),
            error_short=Substr("response__error_message", 1, 200))  # the status cell's error, not the whole notes

    def action_checkbox(self, obj: Request) -> SafeString:
        """The row's selection box, as Django's, written directly: Django renders a form widget through the
        template engine for each row, a tenth of the list's rendering."""
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, str(obj.pk),
                           format_html(_("Select this object for an action - {}"), str(obj)))

    def get_list_display(self, request: HttpRequest):
        """The default columns and those the user added with the column chooser (kept in their session)."""
        extra = [c for c in request.session.get(COLUMNS_SESSION_KEY, []) if c in OPTIONAL_COLUMNS]
        return (*DEFAULT_COLUMNS, *extra)

    def get_changelist_instance(self, request: HttpRequest):
        """As Django's; each row learns its list, so its cells can link to the list narrowed by their value."""
        cl = super().get_changelist_instance(request)
        for obj in cl.result_list:
            obj.list_view = cl
        return cl

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
        # A piece without a letter or digit (an emoji, "&", "-") separates words, as in the text the index
        # read: it is dropped beside pieces that have words, not ANDed as a model name none has.
        worded = [t for t in terms if term_words(t)] or terms
        if len(worded) > SEARCH_TERMS_MAX:
            self.message_user(request, f"The search has {len(worded)} terms; it takes at most {SEARCH_TERMS_MAX} "
                                       "(a few distinctive words find an exchange): nothing was searched.",
                              messages.ERROR)
            return queryset.none(), False
        for term in worded:
            queryset = queryset.filter(search_q(term))
        return queryset, False

    def get_changelist(self, request: HttpRequest, **kwargs):
        """A ChangeList that reuses the paginator's rows instead of querying again."""
        return ExchangeChangeList

    def changelist_view(self, request: HttpRequest, extra_context=None):
        """Add the pending log records count and the column chooser; a chooser submission is saved, then
        the same list is shown without it."""
        if "cols" in request.GET:
            request.session[COLUMNS_SESSION_KEY] = [c for c in request.GET.getlist("cols") if c in OPTIONAL_COLUMNS]
            query = request.GET.copy()
            query.pop("cols")
            return HttpResponseRedirect(f"{request.path}?{query.urlencode()}" if query else request.path)
        if request.method == "POST" and not all(_is_id(v) for v in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)):
            # An action on a selection that names no exchange (a hand-made POST): Django's filter raised, a 500.
            self.message_user(request, "The selection names no exchange: nothing was done.", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        chosen = request.session.get(COLUMNS_SESSION_KEY, [])
        chooser = [(name, label, name in chosen) for name, label in OPTIONAL_COLUMNS.items()]
        # No app sidebar on the list: its 276 px are what lets the eight columns and the filters fit 1440 px
        # (the breadcrumbs and the header still lead everywhere).
        return super().changelist_view(request, {**(extra_context or {}), **header_context(),
                                                 "column_chooser": chooser, "is_nav_sidebar_enabled": False})

    # --- detail, dashboard, files
    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        """The exchange page (request, response, conversation, events, files) instead of a form."""
        return exchange_view(self, request, object_id)

    def get_urls(self):
        """Dashboard and file download, under this model's admin URLs (so admin login applies)."""
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(lambda r: dashboard_view(self, r)), name="logs_request_dashboard"),
            path("session/", wrap(lambda r: session_view(self, r)), name="logs_request_session"),
            path("spend/", wrap(lambda r: spend_view(self, r)), name="logs_request_spend"),
            path("live/", wrap(lambda r: live_view(self, r)), name="logs_request_live"),
            path("<str:object_id>/replay/", wrap(lambda r, object_id: replay_view(self, r, object_id)),
                 name="logs_request_replay"),
            path("live/feed/", wrap(lambda r: live_feed(self, r)), name="logs_request_live_feed"),
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
        self._files_left_say(request, queryset_delete(Request.objects.filter(pk=obj.pk)))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Delete the selected exchanges and their files, in batches."""
        self._files_left_say(request, queryset_delete(Request.objects.filter(pk__in=queryset.values("pk"))))

    def _files_left_say(self, request: HttpRequest, deleted: Deleted) -> None:
        def say() -> None:  # the delete view's transaction commits, then the files go, then this
            if deleted.files_left:
                self.message_user(request, f"{deleted.files_left} stored file(s) could not be deleted (the file "
                                           "store failed); the next prune_logs deletes them.", messages.WARNING)
        transaction.on_commit(say)

