"""Reads of the log for the admin, the dashboard and the exports (no writes here)."""

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import HasKey, KeyTextTransform
from django.db.models.functions import Coalesce, Substr
from django.db.models.lookups import Exact, GreaterThanOrEqual, In, LessThan

from logs.models import BinaryFile, Landing, PendingRequest, Request, Response
from logs.outcomes import Outcome
from logs.textsearch import text_match_sql

# Columns the exchange list never needs: they can hold megabytes per row.
LIST_DEFERRED = (
    "body", "headers", "query_string", "metadata",
    "response__body", "response__headers", "response__stream_result", "response__event_offsets_ms",
    "response__error_message",
)
BODY_FIELDS = ("body", "response__body", "response__stream_result")

GATEWAY_OUTCOMES = (Outcome.GATEWAY_ERROR, Outcome.UPSTREAM_ERROR)
STATUS_CLASSES = {
    "error": "any error",
    "2xx": "2xx success",
    "3xx": "3xx redirect",
    "4xx": "4xx client error",
    "5xx": "5xx upstream error",
    "gateway_error": "gateway error",
    "upstream_error": "upstream failed mid-answer",
    "rate_limited": "rate limited (gateway key)",
    "aborted": "client aborted",
    "interrupted": "interrupted",
    "pending": "no response yet",
}


def pending_log_records() -> int:
    """Log records waiting for the database, over every gateway process's journal."""
    from logs.pipeline.writer import log_pending_count

    return log_pending_count()


# Fewer matching responses than this count as rare (see _answered).
RARE_ANSWERS = 2000


def _answered(q: Q | None = None, negate: bool = False) -> Q:
    """EXISTS (a response for this request matching q), or, when few responses match, IN (their requests).

    A correlated EXISTS instead of a join condition keeps the list's "newest first" walk on the
    created_at index: the database checks rows in order and stops after one page, rather than
    collecting every matching response and sorting them. That walk reads the whole log when the
    value is rare (an answering model seen a few times, "interrupted"), so a rare value is found
    the other way: its few responses from their index, then sorted. Which one is decided by
    counting at most RARE_ANSWERS matching responses (every q here is on an indexed column).
    """
    if q is not None and not negate:
        matching = Response.objects.filter(q).order_by()
        if matching[:RARE_ANSWERS].count() < RARE_ANSWERS:
            return Q(pk__in=matching.values("request_id"))
    answers = Response.objects.filter(request_id=OuterRef("pk"))
    exists = Exists(answers.filter(q) if q is not None else answers)
    return ~Q(exists) if negate else Q(exists)


def any_of_q(field: str, values: list[str]) -> Q:
    """Requests whose `field` (indexed with created_at) is one of `values`.

    One value's rows lie in time order on its (field, created_at) index; several values' do not,
    so the database collects every row of every value and sorts them (seconds for common ones).
    When the values hold at least RARE_ANSWERS rows (counted on the index), the condition is put
    on an expression of the column instead, which no index serves: the list then walks created_at
    newest first and stops after a page, as _answered does for common answers.
    """
    if len(values) < 2:
        return Q(**{field: values[0]}) if values else Q()
    matching = Request.objects.filter(**{f"{field}__in": values}).order_by()
    if matching[:RARE_ANSWERS].count() < RARE_ANSWERS:
        return Q(**{f"{field}__in": values})
    return Q(In(Coalesce(F(field), Value("")), values))


def status_q(value: str) -> Q:
    """A filter for a status: "200", a class such as "4xx", or "gateway_error"/"aborted"/...

    Raises ValueError for anything else, so commands and views can answer clearly.
    """
    value = value.strip().lower()
    if value.isdigit():
        return _answered(Q(status_code=int(value)))
    if len(value) == 3 and value[0] in "12345" and value[1:] == "xx":
        low = int(value[0]) * 100
        # Answers the gateway made itself (413, 502 unreachable, 504 timeout) or streams cut
        # by the upstream are "gateway error", not the provider's own status class.
        return _answered(Q(status_code__gte=low, status_code__lt=low + 100)
                         & ~Q(outcome__in=(*GATEWAY_OUTCOMES, Outcome.RATE_LIMITED)))
    outcomes = {"gateway_error": GATEWAY_OUTCOMES, "gateway-error": GATEWAY_OUTCOMES, "gateway": GATEWAY_OUTCOMES,
                "aborted": (Outcome.CLIENT_ABORTED,), "client_aborted": (Outcome.CLIENT_ABORTED,),
                "interrupted": (Outcome.INTERRUPTED,), "upstream_error": (Outcome.UPSTREAM_ERROR,),
                "rate_limited": (Outcome.RATE_LIMITED,), "rate-limited": (Outcome.RATE_LIMITED,)}
    if value in outcomes:
        return _answered(Q(outcome__in=outcomes[value]))
    if value == "pending":  # no response row: the small requests_pending table (migration 0009), then sorted
        return Q(pk__in=PendingRequest.objects.values("request_id"))
    if value == "error":
        return _answered(Q(is_error=True))
    raise ValueError(f"unknown status {value!r}: use e.g. 200, 4xx, 5xx, gateway_error, rate_limited, aborted")


def streamed_q(streamed: bool) -> Q:
    """Exchanges whose answer was (or was not) an event stream."""
    return _answered(Q(is_stream=streamed))


def cache_q(value: str) -> Q:
    """Exchanges served from the response cache ("hit"), or whose answer was stored into it ("stored")."""
    return _answered(Q(cache_hit=(value == "hit")))


def answer_model_q(model: str) -> Q:
    """Exchanges answered by a model (the model the provider reported, not the one asked for)."""
    return _answered(Q(model=model))


def cost_known_q(known: bool) -> Q:
    """Exchanges whose cost is known (or unknown: unpriced model, no usage, or no answer yet)."""
    return _answered(Q(cost_usd__isnull=False), negate=not known)


def has_files_annotate(qs: QuerySet) -> QuerySet:
    """Add has_files (EXISTS on binary_files, an index probe per row)."""
    return qs.annotate(has_files=Exists(BinaryFile.objects.filter(request_id=OuterRef("pk"))))


def exchange_list(qs: QuerySet | None = None) -> QuerySet:
    """Exchanges for a list: response joined, body columns left out."""
    qs = Request.objects.all() if qs is None else qs
    return qs.select_related("response").defer(*LIST_DEFERRED)


# A key fingerprint as typed in the search box: "key:1a2b3c4d5e6f", or the 12 hex digits alone.
FINGERPRINT_TERM = re.compile(r"(?i)(key:|fp:)?([0-9a-f]{4,32})")


def fingerprint_term(term: str) -> str | None:
    """The key fingerprint a search term names: any "key:<hex>", or 12 bare hex digits that some
    request's key has (one index probe); None when the term is ordinary text."""
    match = FINGERPRINT_TERM.fullmatch(term)
    if match is None:
        return None
    fp = match.group(2).lower()
    if match.group(1):
        return fp
    if len(fp) == 12 and Request.objects.filter(key_fingerprint=fp).exists():
        return fp
    return None


def user_q(user: str) -> Q:
    """Exchanges made for an end user (the (end_user, created_at) index)."""
    return Q(end_user=user)


def session_q(session: str) -> Q:
    """Exchanges of a session (the (session_id, created_at) index)."""
    return Q(session_id=session)


def metadata_q(pair: str) -> Q:
    """Exchanges whose metadata has name=value ("team=search"), or the name at all ("team").

    A JSON lookup: not indexed, so it narrows what the other filters and the time range found.
    """
    name, sep, value = (part.strip() for part in pair.partition("="))
    if not name:  # "meta:=x" names no metadata: nothing has it (an empty Q matched every exchange)
        return Q(pk__in=[])
    # Expressions rather than metadata__<name>: a name may hold "__" or any character.
    return Q(Exact(KeyTextTransform(name, "metadata"), value)) if sep else Q(HasKey(F("metadata"), name))


# Search terms that name a tag: "user:alice", "session:abc", "meta:team=search".
_TAG_TERMS = {"user:": user_q, "session:": session_q, "meta:": metadata_q}


def tag_term_q(term: str) -> Q | None:
    """The condition a user:/session:/meta: search term names, or None for other terms."""
    for prefix, make in _TAG_TERMS.items():
        if term.lower().startswith(prefix) and len(term) > len(prefix):
            return make(term[len(prefix):])
    return None


def session_exchanges(session: str) -> QuerySet:
    """A session's exchanges in the order they were made, response joined, bodies left out."""
    return exchange_list(Request.objects.filter(session_q(session))).order_by("created_at", "pk")


def exchanges_totals(qs: QuerySet) -> dict:
    """Count, tokens, cost and latency summed over exchanges (one aggregate query), and how many exchanges the cost
    leaves out (unpriced: no known cost)."""
    totals = qs.order_by().aggregate(
        exchanges=Count("pk"), errors=Count("pk", filter=Q(response__is_error=True)),
        input_tokens=Sum("response__input_tokens"), output_tokens=Sum("response__output_tokens"),
        total_tokens=Sum("response__total_tokens"), cost_usd=Sum("response__cost_usd"),
        priced=Count("response__cost_usd"), duration_ms=Sum("response__duration_ms"))
    return {**totals, "unpriced": totals["exchanges"] - totals["priced"]}


NO_GATEWAY_KEY = "-"  # the gateway_key filter's "none": never a key's label (those read "name (fp 0123456789ab)")


def gateway_key_q(label: str) -> Q:
    """Exchanges that presented this gateway key, or (NO_GATEWAY_KEY) none."""
    return Q(gateway_key="" if label == NO_GATEWAY_KEY else label)


# The live tail's filters: URL parameter -> condition (the list's parameters, so a list's filters carry over).
LIVE_FILTERS = {"model": lambda v: Q(model=v), "provider": lambda v: Q(provider=v), "user": user_q,
                "session": session_q, "status": status_q, "gateway_key": gateway_key_q,
                "key": lambda v: Q(key_fingerprint=v)}
LIVE_ROWS_MAX = 200


def live_exchanges(*, after: int | None, landed: datetime, pending: list[str], filters: dict[str, list[str]],
                   start: datetime | None = None, until: datetime | None = None) -> tuple[list[Request], int | None]:
    """Exchanges whose request or response row reached the database after landing `after` (the first
    LIVE_ROWS_MAX of them, in landing order: the next call goes on from the last one returned, also given
    back), or since `landed` (the newest LIVE_ROWS_MAX) when there is no `after` yet; started between `start`
    and `until` when given; plus the `pending` ones asked again. Newest start first.

    By landing (logs.models.Landing), not by start: a stream that began minutes ago, or the rows a
    restart replayed from a dead worker's journal, land now with an old start. Landings up to `after`
    since `landed` are read again: on PostgreSQL two ingest processes can commit their batches out of
    the order of their ids (the page draws each exchange once, by id).
    """
    q = Q()
    for name, values in filters.items():
        if name in LIVE_FILTERS and values:
            any_of = Q()
            for one in values:  # any of them, as the list's ?model=a,b
                any_of |= LIVE_FILTERS[name](one)  # status_q raises ValueError for an unknown status
            q &= any_of
    if until is not None:
        q &= Q(created_at__lt=until)
    if start is not None:
        q &= Q(created_at__gte=start)
    pairs = Landing.objects.values_list("id", "request_id")
    if after is None:
        new = list(pairs.filter(at__gte=landed).order_by("-id")[:LIVE_ROWS_MAX])
        # From here on, in landing order: the next call misses nothing that lands meanwhile.
        last = max((i for i, _ in new), default=None) or pairs.order_by("-id").values_list("id", flat=True).first() or 0
    else:
        new = list(pairs.filter(id__gt=after).order_by("id")[:LIVE_ROWS_MAX])
        last = new[-1][0] if new else after
        new += pairs.filter(id__lte=after, at__gte=landed).order_by("-id")[:LIVE_ROWS_MAX]
    landed_ids = {rid for _, rid in new}
    recent = list(exchange_list(Request.objects.filter(q, pk__in=landed_ids))
                  .annotate(error_short=Substr("response__error_message", 1, 200))
                  .order_by("-created_at")) if landed_ids else []
    ids = []
    for value in pending[:LIVE_ROWS_MAX]:
        try:
            ids.append(uuid.UUID(value))
        except ValueError:
            continue
    seen = {r.pk for r in recent}
    again = [r for r in exchange_list(Request.objects.filter(pk__in=ids))
             .annotate(error_short=Substr("response__error_message", 1, 200)) if r.pk not in seen] if ids else []
    return recent + again, last


def _search_exact(term: str) -> Q | None:
    """An exact request id, a user:/session:/meta: tag or a key fingerprint's condition; None for text."""
    try:
        return Q(pk=uuid.UUID(term))
    except ValueError:
        pass
    tagged = tag_term_q(term)
    if tagged is not None:
        return tagged
    fp = fingerprint_term(term)
    if fp is not None:  # exact, on the (key_fingerprint, created_at) index: no body scan
        return Q(key_fingerprint=fp)
    return None


def search_is_text(term: str) -> bool:
    """Whether search_q answers the term through the text index (a set the database finds whole, not by seeks)."""
    term = term.strip()
    return bool(term) and _search_exact(term) is None


def search_q(term: str) -> Q:
    """What a search term matches: an exact request id or key fingerprint, a user:/session:/meta: tag, else a
    model whose name contains it, or its words in an endpoint or a request or response body."""
    term = term.strip()
    exact = _search_exact(term)
    if exact is not None:
        return exact
    # One id set, the union of: models whose name contains the term (the few distinct names, by index
    # seeks, then equality on the model indexes) and the term's words in endpoints and bodies (the text
    # index, logs/textsearch.py). One IN (... UNION ...) rather than ORs: PostgreSQL turns an OR of
    # subqueries into a check per row.
    needle = term.lower()
    asked = [m for m in distinct_values(Request.objects.all(), "model", limit=1000) if needle in m.lower()]
    answered = [m for m in distinct_values(Response.objects.filter(model__isnull=False), "model", limit=1000)
                if needle in m.lower()]
    parts = [text_match_sql(term)]
    if asked:
        parts.append(Request.objects.filter(model__in=asked).order_by().values("pk").query.sql_with_params())
    if answered:
        parts.append(Response.objects.filter(model__in=answered).order_by().values("request_id")
                     .query.sql_with_params())
    parts = [p for p in parts if p is not None]
    if not parts:
        return Q(pk__in=[])
    return Q(pk__in=RawSQL(" UNION ".join(sql for sql, _ in parts), [v for _, params in parts for v in params]))


def exchange_detail(request_id: str) -> Request | None:
    """One exchange with its response and files, or None."""
    try:
        rid = uuid.UUID(str(request_id))
    except ValueError:
        return None
    return (Request.objects.select_related("response").prefetch_related("files")
            .filter(pk=rid).first())


def binary_file_get(file_id: str) -> BinaryFile | None:
    """A stored file's row, or None."""
    try:
        fid = uuid.UUID(str(file_id))
    except ValueError:
        return None
    return BinaryFile.objects.filter(pk=fid).first()


@dataclass
class ExportFilters:
    """What export_logs and the export action select."""

    since: datetime | None = None
    until: datetime | None = None
    provider: str | None = None
    endpoint: str | None = None
    status: str | None = None
    model: str | None = None
    gateway_key: str | None = None  # a gateway key's name or label, or NO_GATEWAY_KEY
    key: str | None = None  # a provider key's fingerprint


def export_filters_check(filters: ExportFilters) -> None:
    """Raise ValueError naming a filter that selects nothing in the whole log, whatever the other filters say.

    An empty value (`--gateway-key "$KEY"` with KEY unset) was no filter at all: everything was exported. A
    gateway key, provider, model or provider key that no exchange ever carried is most often a typo, and an
    empty export with success told the operator there were no such exchanges. A range that ends where or
    before it begins is the same mistake. Each check is one index seek.
    """
    named = {"provider": filters.provider, "model": filters.model, "gateway key": filters.gateway_key,
             "provider key": filters.key, "endpoint": filters.endpoint}
    for what, value in named.items():
        if value is not None and not value.strip():
            raise ValueError(f"the {what} filter is empty (an unset variable?): it would select every exchange")
    if filters.since and filters.until and filters.since >= filters.until:
        raise ValueError(f"the range is empty: since {filters.since.isoformat()} is not before until "
                         f"{filters.until.isoformat()}")
    logged = Request.objects.all()
    if filters.provider and not logged.filter(provider=filters.provider.strip().lower()).exists():
        seen = ", ".join(distinct_values(logged, "provider", limit=50)) or "none yet"
        raise ValueError(f"no exchange in the log is from provider {filters.provider.strip()!r} "
                         f"(providers in the log: {seen})")
    if filters.model and not (logged.filter(model=filters.model).exists()
                              or Response.objects.filter(model=filters.model).exists()):
        raise ValueError(f"no exchange in the log names model {filters.model!r} (requested or answering)")
    name = (filters.gateway_key or "").strip()
    if name and name != NO_GATEWAY_KEY and not logged.filter(
            gateway_key_q(name) | Q(gateway_key__startswith=f"{name} (fp ")).exists():
        raise ValueError(f"no exchange in the log presented a gateway key named {name!r} "
                         "(`manage.py gateway_key list` names the keys)")
    fingerprint = (filters.key or "").strip().lower()
    if fingerprint and not re.fullmatch(r"[0-9a-f]{12}", fingerprint):
        raise ValueError(f"a provider key is named by its fingerprint as logged, 12 hex digits, not {filters.key!r}")
    if fingerprint and not logged.filter(key_fingerprint=fingerprint).exists():
        raise ValueError(f"no exchange in the log used the provider key with fingerprint {fingerprint!r}")


def exchanges_for_export(filters: ExportFilters, qs: QuerySet | None = None,
                         bodies: bool = True) -> QuerySet:
    """Exchanges matching export filters, oldest first, with response and files prefetched."""
    qs = Request.objects.all() if qs is None else qs
    if filters.since:
        qs = qs.filter(created_at__gte=filters.since)
    if filters.until:
        qs = qs.filter(created_at__lt=filters.until)
    if filters.provider:
        qs = qs.filter(provider=filters.provider.strip().lower())  # provider names are lowercase
    if filters.endpoint:
        # icontains: Django's contains ignores case on SQLite (LIKE) but not on PostgreSQL, so the same
        # export selected Gemini's /…:generateContent for "generatecontent" on one database only.
        qs = qs.filter(endpoint__icontains=filters.endpoint)
    if filters.model:
        qs = qs.filter(Q(model=filters.model) | Q(response__model=filters.model))
    if filters.status:
        qs = qs.filter(status_q(filters.status))
    if filters.gateway_key:  # the log holds a key's label, "name (fp 0123456789ab)": its name alone names it too
        name = filters.gateway_key.strip()
        qs = qs.filter(gateway_key_q(name) | Q(gateway_key__startswith=f"{name} (fp "))
    if filters.key:
        qs = qs.filter(key_fingerprint=filters.key.strip().lower())
    qs = qs.select_related("response").prefetch_related("files").order_by("created_at", "pk")
    return qs if bodies else qs.defer(*BODY_FIELDS)


def distinct_values(qs: QuerySet, field: str, limit: int = 200, after: str | None = None) -> list[str]:
    """Distinct non-null values of an indexed column (those above `after`, when given) by index seeks
    (one per value), not a scan.

    SQLite answers SELECT DISTINCT by walking the whole index; asking "smallest value above
    the last one" repeatedly costs one seek per value instead (a loose index scan). The bound is
    `after`, not a condition of qs: given two lower bounds on one column, SQLite seeks to one and
    reads on from there, so every seek would start at the first value. The two statements are
    compiled once and run with each value: the list's filters ask ~80 of these per page, and
    building a queryset for each cost more than the seeks.
    """
    # IS NOT NULL (not NOT (... IS NULL)): SQLite seeks past the NULLs only for that form.
    base = qs.filter(**{f"{field}__isnull": False}).order_by(field).values_list(field, flat=True)
    next_sql, next_params = base.filter(**{f"{field}__gt": _AFTER})[:1].query.sql_with_params()
    at = next_params.index(_AFTER)

    def above(value: str) -> list:
        return [*next_params[:at], value, *next_params[at + 1:]]

    values: list[str] = []
    with connections[qs.db].cursor() as cursor:
        if after is None:
            cursor.execute(*base[:1].query.sql_with_params())
        else:
            cursor.execute(next_sql, above(after))
        while len(values) < limit and (row := cursor.fetchone()) is not None:
            values.append(row[0])
            cursor.execute(next_sql, above(row[0]))
    return values


_AFTER = "distinct_values: the last value found"  # a placeholder, replaced before the statement runs


def date_bounds(qs: QuerySet, field: str, known: list[datetime] | None = None,
                newest: datetime | None = None) -> tuple[datetime | None, datetime | None]:
    """Oldest and newest value of an indexed datetime: two index seeks (MIN and MAX together scan).

    `known`: every matching row's value, when the caller already holds them all (a list that fit on
    one page); then no query. `newest`: the newest value, when the caller holds it (the first row of a
    newest-first list). A seek over a filter that matches little walks the index until it meets a match:
    the whole log for a search that matches nothing, a day of a 10-million-exchange log back to a rare
    status's oldest. So for a filter (not an id set) whose newest value is given, the oldest returned is
    the log's own (one seek): a lower bound only, which the date drill-down narrows by its probes.
    """
    if known is not None:
        return (min(known), max(known)) if known else (None, None)
    kind = _conditions(qs, field)
    if kind == "ids":
        # A seek walks the index until it meets one of the set's rows, the whole log when they are all
        # at one end (the open exchanges are the newest): MIN and MAX over the set read only its rows.
        bounds = qs.order_by().aggregate(first=Min(field), last=Max(field))
        return bounds["first"], bounds["last"]
    values = qs.order_by().values_list(field, flat=True)
    if kind == "other" and newest is not None:
        oldest = qs.model._default_manager.order_by(field).values_list(field, flat=True).first()
        return max([oldest, *_range_bounds(qs, field)]), newest
    return values.order_by(field).first(), newest or values.order_by(f"-{field}").first()


def _conditions(qs: QuerySet, field: str) -> str:
    """What qs's conditions are: "ids" (an id set, pk IN (...): "no response yet", a search, a rare answer, within
    a range of field at most), "range" (a range of field or nothing), or "other"."""
    where = qs.query.where
    if where.connector != "AND" or where.negated:
        return "other"
    ids = False
    for cond in where.children:
        target = getattr(getattr(cond, "lhs", None), "target", None)
        if isinstance(cond, In) and target is qs.model._meta.pk:
            ids = True
        elif not (isinstance(cond, (GreaterThanOrEqual, LessThan)) and target is not None and target.name == field):
            return "other"
    return "ids" if ids else "range"


def _range_bounds(qs: QuerySet, field: str, lookup: type = GreaterThanOrEqual) -> list[datetime]:
    """The lower bounds qs puts on field (a time range's start), or with lookup=LessThan its upper bounds."""
    where = qs.query.where
    if where.connector != "AND" or where.negated:
        return []
    return [cond.rhs for cond in where.children if isinstance(cond, lookup)
            and getattr(getattr(cond.lhs, "target", None), "name", None) == field and isinstance(cond.rhs, datetime)]


def date_choices(qs: QuerySet, field: str, starts: list[datetime], width: "callable",
                 known: list[datetime] | None = None, grouped: str = "") -> list[datetime]:
    """The period starts that hold at least one row: a probe per period, or, with `known` (every matching row's
    value, see date_bounds), the periods those values fall in.

    A time range alone (no other filter) is probed by ordered seeks: the first value from a period's start on
    (ORDER BY field LIMIT 1) says which period holds a row, and that the ones before it are empty. Ordered, the
    database walks the field's own index; an unordered EXISTS let PostgreSQL read another index that holds the
    column, (provider, created_at), from its start (docs/benchmark.md, issue 18). A filtered set keeps an EXISTS
    per period: the database picks the filter's index, and an ordered seek would walk created_at until a match,
    far for a rare value."""
    if known is not None:
        return [s for s in starts if any(s <= v and _before(v, width(s)) for v in known)]
    if grouped and starts:
        # A word search (grouped: the periods' kind, "day"...): the text index finds the set whole, once per
        # query, so an EXISTS per period re-ran it (31 for a month: 3.7 s at 49,000 exchanges); one query
        # groups the set's rows by period instead.
        within = qs.filter(**period_q(field, starts[0], width(starts[-1])))
        present = set(within.datetimes(field, grouped, tzinfo=starts[0].tzinfo))
        return [s for s in starts if s in present]
    if _conditions(qs, field) != "range":
        return [s for s in starts if qs.filter(**period_q(field, s, width(s))).exists()]
    if not starts:
        return []
    # The range's bounds and the period's as one pair: given two lower bounds on one column, SQLite seeks to
    # one and reads on from there (see distinct_values).
    lower, upper = _range_bounds(qs, field), _range_bounds(qs, field, LessThan)
    values = qs.model._default_manager.order_by(field).values_list(field, flat=True)
    end = min([e for e in (width(starts[-1]), *upper) if e is not None], default=None)
    found, i = [], 0
    while i < len(starts):
        value = values.filter(**period_q(field, max([starts[i], *lower]), end)).first()
        if value is None:
            break
        while not _before(value, width(starts[i])):  # periods before the value's hold nothing
            i += 1
        found.append(starts[i])
        i += 1
    return found


def period_next(start: datetime, level: str) -> datetime | None:
    """Start of the following year, month or day; None after the calendar's last (year 9999), whose period has
    no end a datetime can hold: it runs on to the end of time."""
    try:
        if level == "year":
            return start.replace(year=start.year + 1)
        if level == "month":
            return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        return start + timedelta(days=1)
    except (OverflowError, ValueError):  # year 10000: replace says ValueError, adding says OverflowError
        return None


def period_q(field: str, start: datetime, end: datetime | None) -> dict:
    """The lookups of field's values from start up to end (None: no end, see period_next)."""
    return {f"{field}__gte": start, **({f"{field}__lt": end} if end is not None else {})}


def _before(value: datetime, end: datetime | None) -> bool:
    """True when value lies before end (None: no end, see period_next)."""
    return end is None or value < end
