"""Dashboard and spend reads: per-hour counts, error rate, latency percentiles, tokens and cost, computed in SQL."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache

from django.db.models import BigIntegerField, Case, CharField, Count, F, Func, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Cast, Round

from logs.models import Response, SpendDay

WINDOWS = {  # name: (span, bucket width)
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
# Latency histogram bins: (lower bound ms, bin width ms). Width grows with the decade, so a
# percentile read from a bin is within about 5% of the exact value, whatever the scale.
BINS = [(0, 1), (10, 2), (100, 10), (1_000, 100), (10_000, 1_000), (100_000, 10_000)]


class HourBucket(Func):
    """'YYYY-MM-DD HH' of a UTC datetime, without a per-row Python function on SQLite."""

    output_field = CharField()
    template = "SUBSTR(%(expressions)s, 1, 13)"  # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC
    pg_format = "YYYY-MM-DD HH24"

    def as_postgresql(self, compiler, connection, **extra):
        """PostgreSQL: format the timestamp in UTC."""
        return self.as_sql(compiler, connection,
                           template=f"TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', '{self.pg_format}')", **extra)


class DayBucket(HourBucket):
    """'YYYY-MM-DD' of a UTC datetime."""

    template = "SUBSTR(%(expressions)s, 1, 10)"
    pg_format = "YYYY-MM-DD"


class IntPart(Func):
    """Integer part of a non-negative number (CAST truncates on SQLite, rounds on PostgreSQL)."""

    output_field = IntegerField()
    template = "CAST(%(expressions)s AS INTEGER)"

    def as_postgresql(self, compiler, connection, **extra):
        """PostgreSQL: floor first, since its cast rounds."""
        return self.as_sql(compiler, connection, template="CAST(FLOOR(%(expressions)s) AS INTEGER)", **extra)


def _bin_offsets() -> list[tuple[float, float, int]]:
    """(lower bound, width, index of the first bin) for each bin range."""
    out, index = [], 0
    for i, (low, width) in enumerate(BINS):
        out.append((low, width, index))
        if i + 1 < len(BINS):
            index += int((BINS[i + 1][0] - low) / width)
    return out


def bin_expression(column: str) -> Case:
    """SQL giving each value its histogram bin index."""
    whens = []
    ranges = _bin_offsets()
    for i, (low, width, first) in enumerate(ranges[:-1]):
        upper = ranges[i + 1][0]
        whens.append(When(**{f"{column}__lt": upper},
                          then=IntPart((F(column) - Value(float(low))) / Value(float(width))) + Value(first)))
    low, width, first = ranges[-1]
    return Case(*whens, default=IntPart((F(column) - Value(float(low))) / Value(float(width))) + Value(first),
                output_field=IntegerField())


def bin_value(index: int) -> float:
    """The middle of a bin, in ms."""
    for low, width, first in reversed(_bin_offsets()):
        if index >= first:
            return low + (index - first + 0.5) * width
    return 0.0


def percentile(hist: dict[int, int], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram {bin: count}."""
    total = sum(hist.values())
    if not total:
        return None
    rank, seen = q * total, 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return round(bin_value(index), 1)
    return None


@dataclass
class Dashboard:
    """Everything the dashboard draws, one entry per bucket."""

    window: str
    labels: list[str] = field(default_factory=list)
    per_hour: list[float] = field(default_factory=list)
    error_rate: list[float | None] = field(default_factory=list)
    latency: dict[str, list[float | None]] = field(default_factory=dict)
    ttfb: dict[str, list[float | None]] = field(default_factory=dict)
    models: list[dict] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)  # USD per bucket (priced exchanges only)
    starts: list[datetime] = field(default_factory=list)  # each bucket's start, for links to the list
    width: timedelta = timedelta(hours=1)
    total: int = 0
    errors: int = 0
    # The response cache: answers served from it, answers stored into it, what the hits did not cost.
    cache_hits: int = 0
    cache_fills: int = 0
    cache_saved_usd: Decimal | None = None

    @property
    def cache_hit_rate(self) -> float | None:
        """Hits among the requests the cache answered or filled, in percent."""
        asked = self.cache_hits + self.cache_fills
        return round(100 * self.cache_hits / asked, 1) if asked else None


@lru_cache(maxsize=4096)
def _parse_bucket(text: str) -> datetime:
    """'YYYY-MM-DD HH' or 'YYYY-MM-DD' as an aware UTC datetime."""
    fmt = "%Y-%m-%d %H" if len(text) > 10 else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def _bucket_index(text: str, start: datetime, width: timedelta) -> int:
    """Index of the bucket an SQL-made hour or day label falls in."""
    return int((_parse_bucket(text) - start) // width)


def _histograms(qs, column: str, start: datetime, width: timedelta, n: int,
                counts: list[int] | None = None, errors: list[int] | None = None) -> list[dict[int, int]]:
    """Per-bucket histograms of a timing column, grouped in SQL by (bucket, bin).

    When counts/errors are given they are filled too (rows without a timing land in bin NULL),
    which saves the separate scan a count query would need.
    """
    hists: list[dict[int, int]] = [defaultdict(int) for _ in range(n)]
    bucket = DayBucket("created_at") if width >= timedelta(days=1) else HourBucket("created_at")
    if counts is None:
        qs = qs.filter(**{f"{column}__isnull": False})
    rows = (qs.annotate(h=bucket, b=bin_expression(column)).values("h", "b")
            .annotate(n=Count("pk"), e=Count("pk", filter=Q(is_error=True))).order_by())
    for row in rows:
        idx = _bucket_index(row["h"], start, width)
        if not 0 <= idx < n:
            continue
        if counts is not None and errors is not None:
            counts[idx] += row["n"]
            errors[idx] += row["e"]
        if row["b"] is not None:
            hists[idx][row["b"]] += row["n"]
    return hists


def dashboard_build(window: str, now: datetime | None = None) -> Dashboard:
    """The dashboard's numbers for a window ('24h', '7d' or '30d')."""
    span, width = WINDOWS[window]
    now = now or datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if width >= timedelta(days=1):  # day buckets come from SQL as dates: align on midnight
        end = end.replace(hour=0) + timedelta(days=1) if end.hour else end
    start = end - span
    n = int(span // width)
    dash = Dashboard(window=window)
    dash.labels = [(start + width * i).strftime("%m-%d %H:00" if width < timedelta(days=1) else "%Y-%m-%d")
                   for i in range(n)]
    qs = Response.objects.filter(created_at__gte=start)
    counts, errors = [0] * n, [0] * n
    latency = _histograms(qs, "duration_ms", start, width, n, counts, errors)
    ttfb = _histograms(qs, "ttfb_ms", start, width, n)
    hours = width / timedelta(hours=1)
    dash.per_hour = [round(c / hours, 1) for c in counts]
    dash.error_rate = [round(100 * e / c, 2) if c else None for c, e in zip(counts, errors)]
    dash.total, dash.errors = sum(counts), sum(errors)
    for hists, target in ((latency, dash.latency), (ttfb, dash.ttfb)):
        target["p50"] = [percentile(h, 0.5) for h in hists]
        target["p95"] = [percentile(h, 0.95) for h in hists]
    dash.starts, dash.width = [start + width * i for i in range(n)], width
    dash.cost = [0.0] * n
    bucket = DayBucket("created_at") if width >= timedelta(days=1) else HourBucket("created_at")
    for row in (qs.filter(cost_usd__isnull=False).annotate(h=bucket).values("h").annotate(c=Sum("cost_usd"))
                .order_by()):
        idx = _bucket_index(row["h"], start, width)
        if 0 <= idx < n:
            dash.cost[idx] += float(row["c"])
    cache = qs.aggregate(hits=Count("pk", filter=Q(cache_hit=True)), fills=Count("pk", filter=Q(cache_hit=False)),
                         saved=Sum("cost_saved_usd"))
    dash.cache_hits, dash.cache_fills, dash.cache_saved_usd = cache["hits"], cache["fills"], cache["saved"]
    dash.models = list(
        qs.exclude(total_tokens__isnull=True).values("model")
        .annotate(input=Sum("input_tokens"), output=Sum("output_tokens"), total=Sum("total_tokens"),
                  calls=Count("pk"))
        .order_by("-total")[:12])
    return dash


@dataclass
class SpendRow:
    """Spend and tokens of one group (a day, a model, a key or a user)."""

    key: str  # the group's value ("" when unknown)
    exchanges: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost: object = None  # Decimal, None when no exchange of the group was priced


@dataclass
class Spend:
    """Spend for a range [start, end): per day, model, key and user, and the totals."""

    start: datetime
    end: datetime
    total: SpendRow
    days: list[SpendRow] = field(default_factory=list)
    models: list[SpendRow] = field(default_factory=list)
    keys: list[SpendRow] = field(default_factory=list)
    users: list[SpendRow] = field(default_factory=list)


SPEND_GROUPS_MAX = 100  # rows per table (the biggest spenders first)
# One group of the spend page's figures: (UTC day "YYYY-MM-DD", requested model, key, user); "" when unknown.
SpendGroup = tuple[str, str, str, str]
E8 = Decimal(100_000_000)
# Cost in units of 1e-8 dollars (its stored precision), as spend_days keeps it: integer sums are exact (SQLite
# stores cost_usd as a float, and a float sum over many answers is not).
COST_E8 = Cast(Round(F("cost_usd") * Value(100_000_000)), BigIntegerField())


@dataclass
class _Sums:
    exchanges: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    priced: int = 0
    cost: Decimal = Decimal(0)

    def add(self, other: "_Sums") -> None:
        self.exchanges += other.exchanges
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.total_tokens += other.total_tokens
        self.priced += other.priced
        self.cost += other.cost

    def row(self, key: str) -> SpendRow:
        return SpendRow(key=key, exchanges=self.exchanges, input_tokens=self.input_tokens,
                        output_tokens=self.output_tokens, total_tokens=self.total_tokens,
                        cost=self.cost if self.priced else None)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _log_groups(start: datetime, end: datetime) -> dict[SpendGroup, _Sums]:
    """The figures of the answers in [start, end), read from the log itself (one grouped pass)."""
    key = Case(When(~Q(request__gateway_key=""), then=F("request__gateway_key")),
               default=F("request__key_fingerprint"), output_field=CharField())
    rows = (Response.objects.filter(created_at__gte=start, created_at__lt=end).order_by()
            .annotate(d=DayBucket("created_at"), m=F("request__model"), k=key, u=F("request__end_user"))
            .values("d", "m", "k", "u")
            .annotate(exchanges=Count("pk"), input=Sum("input_tokens"), output=Sum("output_tokens"),
                      total=Sum("total_tokens"), priced=Count("cost_usd"), cost_e8=Sum(COST_E8)))
    return {(r["d"], r["m"] or "", r["k"] or "", r["u"] or ""):
            _Sums(r["exchanges"], r["input"] or 0, r["output"] or 0, r["total"] or 0, r["priced"],
                  Decimal(r["cost_e8"] or 0) / E8)
            for r in rows}


def _day_groups(first: date, last: date) -> dict[SpendGroup, _Sums]:
    """The figures of whole UTC days first..last-1, from spend_days (kept by triggers, see SpendDay)."""
    rows = SpendDay.objects.filter(day__gte=first, day__lt=last, exchanges__gt=0).values_list(
        "day", "model", "key", "end_user", "exchanges", "input_tokens", "output_tokens", "total_tokens", "priced",
        "cost_e8")
    return {(d.isoformat(), m, k, u): _Sums(n, i, o, t, p, Decimal(c) / E8) for d, m, k, u, n, i, o, t, p, c in rows}


def spend_groups(start: datetime, end: datetime) -> dict[SpendGroup, _Sums]:
    """The figures of the answers in [start, end) per (day, model, key, user): the whole days from spend_days,
    the partial days at the ends from the log (a rolling range starts mid-day; today is still being written)."""
    first, last = _day_start(start), _day_start(end)
    if first < start:
        first += timedelta(days=1)
    if last <= first:
        return _log_groups(start, end)
    groups = _day_groups(first.date(), last.date())
    for lo, hi in ((start, first), (last, end)):
        if lo < hi:
            for group, sums in _log_groups(lo, hi).items():
                groups.setdefault(group, _Sums()).add(sums)
    return groups


def spend_build(start: datetime, end: datetime) -> Spend:
    """Spend and tokens of the answers given in [start, end) (by the response's time), grouped four ways.

    A key is the gateway key's label when one was presented, else the provider key's fingerprint.
    """
    groups = spend_groups(start, end)
    total = _Sums()
    ways: list[dict[str, _Sums]] = [defaultdict(_Sums) for _ in range(4)]  # day, model, key, user
    for group, sums in groups.items():
        total.add(sums)
        for way, value in zip(ways, group):
            way[value].add(sums)

    def top(way: dict[str, _Sums]) -> list[SpendRow]:
        rows = [sums.row(key) for key, sums in way.items() if sums.exchanges]
        rows.sort(key=lambda r: (r.cost is None, -(r.cost or 0), -r.total_tokens, r.key))
        return rows[:SPEND_GROUPS_MAX]

    days, models, keys, users = (top(w) for w in ways)
    return Spend(start=start, end=end, total=total.row(""), days=sorted(days, key=lambda r: r.key),
                 models=models, keys=keys, users=users)
