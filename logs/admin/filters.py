"""List filters of the exchange list: each maps a value to an index-friendly condition."""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from logs.models import Request, Response
from logs.selectors import (NO_GATEWAY_KEY, STATUS_CLASSES, answer_model_q, any_of_q, cache_q, cost_known_q,
                            distinct_values, gateway_key_q, has_files_annotate, metadata_q, session_q, status_q,
                            streamed_q, user_q)
from wire.commalist import commalist_read, commalist_write


CHOICE_SHOWN = 48  # characters of a value the sidebar shows


def choice_display(value: str, mark: str = "") -> str | SafeString:
    """A value as a sidebar choice: a long one (a model, user or session may be 255 characters, metadata more)
    shortened, whole on hover; 200 such models made the sidebar a wall of text eight lines a choice."""
    if len(value) <= CHOICE_SHOWN:
        return mark + value
    return format_html('{}<span title="{}">{}</span>', mark, value, Truncator(value).chars(CHOICE_SHOWN))


class _ChoiceFilter(admin.SimpleListFilter):
    """A list filter whose choices come from a cheap query and whose value maps to a Q."""

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Apply the chosen value."""
        value = self.value()
        return queryset.filter(self.q(value)) if value else queryset

    def q(self, value: str) -> Q:
        """The condition for a value."""
        raise NotImplementedError


# Each value of most filters is its own subquery, ORed: a URL naming a thousand made SQLite refuse the
# query ("Expression tree is too large", a 500). The choices offered are far fewer.
MULTI_VALUES_MAX = 50


class _MultiFilter(_ChoiceFilter):
    """Several values at once (?model=a,b: any of them; a value's own comma as "\\,", see wire.commalist). Clicking a
    choice adds it to the selection, or takes it out when it is in; "All" clears it. A list cell's link still
    chooses one value."""

    def _given(self) -> list[str]:
        """The values the URL names, each once."""
        return commalist_read(self.value() or "")

    def values(self) -> list[str]:
        """The chosen values (at most MULTI_VALUES_MAX)."""
        return self._given()[:MULTI_VALUES_MAX]

    column = ""  # a requests column indexed with created_at, when the filter is equality on it (see any_of_q)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """Any of the chosen values."""
        values = self.values()
        if len(given := self._given()) > MULTI_VALUES_MAX:
            messages.warning(request, f"The {self.title} filter takes at most {MULTI_VALUES_MAX} values: "
                                      f"the first {MULTI_VALUES_MAX} of the {len(given)} given were applied.")
        if self.column and len(values) > 1:
            return queryset.filter(any_of_q(self.column, values))
        q = Q()
        for value in values:
            q |= self.q(value)
        return queryset.filter(q) if q else queryset

    def choices(self, changelist):
        """All, then each choice toggling its value in the selection (ticked when chosen)."""
        chosen = self.values()
        yield {"selected": not chosen, "display": "All",
               "query_string": changelist.get_query_string(remove=[self.parameter_name])}
        for lookup, title in self.lookup_choices:
            lookup = str(lookup)
            on = lookup in chosen
            rest = [v for v in chosen if v != lookup] if on else [*chosen, lookup]
            query = (changelist.get_query_string({self.parameter_name: commalist_write(rest)}) if rest
                     else changelist.get_query_string(remove=[self.parameter_name]))
            yield {"selected": on, "query_string": query, "display": choice_display(str(title), "✓ " if on else "")}


class ProviderFilter(_MultiFilter):
    title, parameter_name, column = "provider", "provider", "provider"

    def lookups(self, request, model_admin):
        """Providers present in the log (DISTINCT over an index)."""
        return [(n, n) for n in distinct_values(Request.objects.all(), "provider")]

    def q(self, value: str) -> Q:
        """Exact provider."""
        return Q(provider=value)


class StatusFilter(_MultiFilter):
    title, parameter_name = "status", "status"

    def lookups(self, request, model_admin):
        """Status classes and ways an exchange can end; an exact code when one was chosen (a status cell's link)."""
        exact = [(v, v) for v in self.values() if v.isdigit() and len(v) == 3]
        return exact + list(STATUS_CLASSES.items())

    def q(self, value: str) -> Q:
        """See selectors.status_q (shared with export_logs --status)."""
        return status_q(value) if value in STATUS_CLASSES or (value.isdigit() and len(value) == 3) else Q()


class ModelFilter(_MultiFilter):
    title, parameter_name, column = "model", "model", "model"

    def lookups(self, request, model_admin):
        """Requested models present in the log (DISTINCT over an index)."""
        return [(n, n) for n in distinct_values(Request.objects.all(), "model")]

    def q(self, value: str) -> Q:
        """Requested model."""
        return Q(model=value)


class AnswerModelFilter(_MultiFilter):
    title, parameter_name = "answering model", "answered_by"

    def lookups(self, request, model_admin):
        """Models the providers reported (seeks on the partial responses_model_sort_idx)."""
        return [(n, n) for n in distinct_values(Response.objects.filter(model__isnull=False), "model")]

    def q(self, value: str) -> Q:
        """Answering model."""
        return answer_model_q(value)


# The parameters that name several values (wire.commalist); the others name one, whole.
MULTI_VALUE_PARAMS = frozenset(f.parameter_name for f in (ProviderFilter, StatusFilter, ModelFilter, AnswerModelFilter))


def filter_value(param: str, value: str) -> str:
    """How the list's URL names one value of the filter `param`: escaped when the filter takes several."""
    return commalist_write([value]) if param in MULTI_VALUE_PARAMS else value


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
        return [(fp, fp) for fp in distinct_values(Request.objects.all(), "key_fingerprint", after="")]

    def q(self, value: str) -> Q:
        """Requests made with this provider key."""
        return Q(key_fingerprint=value)


class GatewayKeyFilter(_ChoiceFilter):
    title, parameter_name = "gateway key", "gateway_key"

    def lookups(self, request, model_admin):
        """Gateway access keys present in the log (hidden when access keys were never used), and "none"."""
        keys = [(k, choice_display(k)) for k in distinct_values(Request.objects.all(), "gateway_key", after="")]
        return [*keys, (NO_GATEWAY_KEY, "none")] if keys else []

    def q(self, value: str) -> Q:
        """Requests that presented this gateway key (or none: the spend page's provider-key rows)."""
        return gateway_key_q(value)


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


# The time range picker: each is "since now minus this", applied with every other filter.
TIME_RANGES = {"15m": ("last 15 minutes", timedelta(minutes=15)), "1h": ("last hour", timedelta(hours=1)),
               "24h": ("last 24 hours", timedelta(hours=24)), "7d": ("last 7 days", timedelta(days=7))}
# A custom range: the created_at lookups Django's admin already takes from a URL, read (and checked) here.
RANGE_FROM, RANGE_TO = "created_at__gte", "created_at__lt"


@dataclass(frozen=True)
class TimeRange:
    """A time range read from a query: its bounds (UTC), or why it was refused."""

    start: datetime | None = None
    end: datetime | None = None
    error: str = ""


def _utc(text: str, name: str) -> datetime:
    """An ISO 8601 time (a date-time input's value); without an offset it is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
        return when.replace(tzinfo=dt_timezone.utc) if when.tzinfo is None else when.astimezone(dt_timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: year 1 with an offset east of UTC
        raise ValueError(f"“{text}” is not a date and time for {name} (use 2026-01-31 14:05, UTC)") from None


def time_range_read(params) -> TimeRange:
    """The range a query asks for: a preset (?since=1h) and/or a custom from/to, both bounds UTC.

    Shared by the list's filter and the live tail's feed, so both read a URL the same way."""
    preset = TIME_RANGES.get(params.get(TimeRangeFilter.parameter_name) or "")
    since = timezone.now() - preset[1] if preset else None
    start = end = None
    try:
        if params.get(RANGE_FROM):
            start = _utc(params[RANGE_FROM], "from")
        if params.get(RANGE_TO):
            end = _utc(params[RANGE_TO], "to")
    except ValueError as exc:
        return TimeRange(start=since, error=str(exc))
    if start and end and end <= start:
        return TimeRange(start=since, error=f"“to” ({end:%Y-%m-%d %H:%M:%S} UTC) is not after “from” "
                                            f"({start:%Y-%m-%d %H:%M:%S} UTC)")
    return TimeRange(max(start, since) if start and since else start or since, end)


DRILL_DOWN = ("created_at__year", "created_at__month", "created_at__day")  # the date hierarchy's parameters


class TimeRangeFilter(admin.SimpleListFilter):
    """The presets up to now, or a custom from/to (created_at__gte / created_at__lt, UTC): one filter, so
    each replaces the other and "All" clears both. A refused custom range is not applied; the list says why."""

    title, parameter_name = "time range", "since"
    template = "admin/logs/request/time_range_filter.html"

    def __init__(self, request, params, model, model_admin):
        # Taken from the params before Django reads them as field lookups (which would fail with a 500
        # on a bad value, and could not say which bound is wrong).
        given = {k: params.pop(k)[-1] for k in (RANGE_FROM, RANGE_TO) if k in params}
        self.custom = {k: v for k, v in given.items() if v.strip()}  # an empty input of the form is no bound
        super().__init__(request, params, model, model_admin)
        self.used_parameters.update(self.custom)
        self.range = time_range_read({**self.custom, self.parameter_name: self.value()})

    def expected_parameters(self) -> list[str]:
        """The preset and the custom bounds (so "clear all filters" clears them)."""
        return [self.parameter_name, RANGE_FROM, RANGE_TO]

    def has_output(self) -> bool:
        """Always shown: the custom range needs no choices."""
        return True

    def lookups(self, request, model_admin):
        """The ranges up to now."""
        return [(k, label) for k, (label, _) in TIME_RANGES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """created_at within the range (the created_at index, and every (x, created_at) one)."""
        q = Q()
        if self.range.start:
            q &= Q(created_at__gte=self.range.start)
        if self.range.end:
            q &= Q(created_at__lt=self.range.end)
        return queryset.filter(q)

    def choices(self, changelist):
        """All, the presets (each dropping a custom range), then the custom form's values and the
        query it keeps (every other filter, the search and the sort)."""
        # A range replaces the date drill-down's period, as the drill-down replaces a range (docs/log.md).
        custom = (RANGE_FROM, RANGE_TO, *DRILL_DOWN)
        yield {"selected": not self.value() and not self.custom, "display": "All",
               "query_string": changelist.get_query_string(remove=[self.parameter_name, *custom])}
        for lookup, title in self.lookup_choices:
            yield {"selected": self.value() == lookup, "display": title,
                   "query_string": changelist.get_query_string({self.parameter_name: lookup}, list(custom))}
        kept = [(k, v) for k, v in changelist.params.items() if k not in (self.parameter_name, *custom, "p")]
        yield {"custom": True, "selected": bool(self.custom), "from": _input_value(self.custom.get(RANGE_FROM, "")),
               "to": _input_value(self.custom.get(RANGE_TO, "")), "kept": kept, "error": self.range.error}


def _input_value(text: str) -> str:
    """A bound as a date-time input shows it (UTC, to the second); as typed when it does not read."""
    try:
        return _utc(text, "").strftime("%Y-%m-%dT%H:%M:%S") if text else ""
    except ValueError:
        return text


class _ValueFilter(_MultiFilter):
    """A filter on a value with many possible values: some known values as choices, plus the chosen one
    (so a link from a list cell or the session page shows, and can be cleared, here)."""

    field = ""

    def lookups(self, request, model_admin):
        """Up to 30 values in order (index seeks), the chosen one first when it is not among them."""
        values = distinct_values(Request.objects.all(), self.field, limit=30)
        values = [v for v in self.values() if v not in values] + values
        return [(v, v) for v in values]


class _OneValueFilter(_ValueFilter):
    """One value at a time: a free-form one (a user's name, a session's id) may hold a comma ("Smith, John")."""

    def values(self) -> list[str]:
        """The chosen value, whole."""
        return [self.value()] if self.value() else []

    def choices(self, changelist):
        """All, then each value, choosing it alone."""
        chosen = self.values()
        yield {"selected": not chosen, "display": "All",
               "query_string": changelist.get_query_string(remove=[self.parameter_name])}
        for lookup, title in self.lookup_choices:
            yield {"selected": str(lookup) in chosen, "display": choice_display(str(title)),
                   "query_string": changelist.get_query_string({self.parameter_name: str(lookup)})}


class UserFilter(_OneValueFilter):
    title, parameter_name, field, column = "user", "user", "end_user", "end_user"

    def q(self, value: str) -> Q:
        """Requests made for this end user (X-Gateway-User, or the provider's own user field)."""
        return user_q(value)


class SessionFilter(_OneValueFilter):
    title, parameter_name, field = "session", "session", "session_id"

    def q(self, value: str) -> Q:
        """Requests of this session (X-Gateway-Session-Id)."""
        return session_q(value)


class MetadataFilter(_ChoiceFilter):
    title, parameter_name = "metadata", "meta"

    def lookups(self, request, model_admin):
        """Only the chosen name=value (set from an exchange's page, a link or the search box's meta:)."""
        value = self.value()
        return [(value, choice_display(value))] if value else []

    def q(self, value: str) -> Q:
        """Metadata name=value, or the name alone."""
        return metadata_q(value)
