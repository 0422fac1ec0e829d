"""List filters of the exchange list: each maps a value to an index-friendly condition."""

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest

from logs.models import Request, Response
from logs.selectors import (STATUS_CLASSES, answer_model_q, cache_q, cost_known_q, distinct_values, has_files_annotate,
                            status_q, streamed_q)


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


class AnswerModelFilter(_ChoiceFilter):
    title, parameter_name = "answering model", "answered_by"

    def lookups(self, request, model_admin):
        """Models the providers reported (seeks on the partial responses_model_sort_idx)."""
        return [(n, n) for n in distinct_values(Response.objects.filter(model__isnull=False), "model")]

    def q(self, value: str) -> Q:
        """Answering model."""
        return answer_model_q(value)


class CostFilter(_ChoiceFilter):
    title, parameter_name = "cost", "cost"

    def lookups(self, request, model_admin):
        """Known or unknown."""
        return [("known", "has a cost"), ("unknown", "unknown cost")]

    def q(self, value: str) -> Q:
        """Cost known (priced model and usage reported) or not."""
        return cost_known_q(value == "known") if value in ("known", "unknown") else Q()


class KeyFilter(_ChoiceFilter):
    title, parameter_name = "API key (fingerprint)", "key"

    def lookups(self, request, model_admin):
        """Key fingerprints present in the log (seeks on the (key_fingerprint, created_at) index)."""
        return [(fp, fp) for fp in distinct_values(Request.objects.filter(key_fingerprint__gt=""), "key_fingerprint")]

    def q(self, value: str) -> Q:
        """Requests made with this provider key."""
        return Q(key_fingerprint=value)


class GatewayKeyFilter(_ChoiceFilter):
    title, parameter_name = "gateway key", "gateway_key"

    def lookups(self, request, model_admin):
        """Gateway access keys present in the log (hidden when access keys were never used)."""
        return [(k, k) for k in distinct_values(Request.objects.filter(gateway_key__gt=""), "gateway_key")]

    def q(self, value: str) -> Q:
        """Requests that presented this gateway key."""
        return Q(gateway_key=value)


class StreamedFilter(_ChoiceFilter):
    title, parameter_name = "streamed", "streamed"

    def lookups(self, request, model_admin):
        """Yes or no."""
        return [("yes", "streamed"), ("no", "not streamed")]

    def q(self, value: str) -> Q:
        """Response was an event stream."""
        return streamed_q(value == "yes")


class CacheFilter(_ChoiceFilter):
    title, parameter_name = "response cache", "cache"

    def lookups(self, request, model_admin):
        """Hits and the misses that filled the cache (responses.cache_hit is indexed)."""
        return [("hit", "served from the cache"), ("stored", "stored into the cache")]

    def q(self, value: str) -> Q:
        """See selectors.cache_q."""
        return cache_q(value) if value in ("hit", "stored") else Q()


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
