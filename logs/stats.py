"""Dashboard and spend reads: per-hour counts, error rate, latency percentiles, tokens and cost, computed in SQL."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache

from django.db.models import BigIntegerField, Case, CharField, Count, F, Func, Q, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Round

from logs.models import AnswerHour, LatencyHour, Response, SpendDay, SpendHour

WINDOWS = {  # name: (span, bucket width)
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
# Latency histogram bins: (lower bound ms, bin width ms). Width grows with the decade, so a
# percentile read from a bin is within about 5% of the exact value, whatever the scale. The triggers
# of migration 0012 sort answers into these bins (latency_hours): changing them needs a migration
# that refills that table.
BINS = [(0, 1), (10, 2), (100, 10), (1_000, 100), (10_000, 1_000), (100_000, 10_000)]


class DayBucket(Func):
    """'YYYY-MM-DD' of a UTC datetime, without a per-row Python function on SQLite."""

    output_field = CharField()
    template = "SUBSTR(%(expressions)s, 1, 10)"  # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC

    def as_postgresql(self, compiler, connection, **extra):
        """PostgreSQL: format the timestamp in UTC."""
        return self.as_sql(compiler, connection,
                           template="TO_CHAR(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD')", **extra)


def _bin_offsets() -> list[tuple[float, float, int]]:
    """(lower bound, width, index of the first bin) for each bin range."""
    out, index = [], 0
    for i, (low, width) in enumerate(BINS):
        out.append((low, width, index))
        if i + 1 < len(BINS):
            index += int((BINS[i + 1][0] - low) / width)
    return out


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
    # The window's whole figures: its cost (None when no exchange of it was priced), how many exchanges that
    # cost leaves out (no price, no usage, errors, refusals), and the percentiles over all its answers.
    cost_total: Decimal | None = None
    unpriced: int = 0
    latency_window: dict[str, float | None] = field(default_factory=dict)
    ttfb_window: dict[str, float | None] = field(default_factory=dict)

    @property
    def cache_hit_rate(self) -> float | None:
        """Hits among the requests the cache answered or filled, in percent."""
        asked = self.cache_hits + self.cache_fills
        return round(100 * self.cache_hits / asked, 1) if asked else None


@lru_cache(maxsize=4096)
def _parse_day(text: str) -> datetime:
    """'YYYY-MM-DD' as an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)


def _by_bucket(qs: QuerySet, start: datetime, width: timedelta, n: int, group: tuple[str, ...],
               sums: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(bucket index, row) of an hour rollup's rows from `start` on, summed per bucket and `group` in SQL.

    Day-wide buckets are added up by the database (a month of hours is many rows); hour-wide ones
    are the rows themselves (6-hour buckets start at any hour). Rows past the last bucket are left out."""
    day = width >= timedelta(days=1)
    rows = (qs.filter(hour__gte=start).annotate(b=DayBucket("hour") if day else F("hour")).values("b", *group)
            .annotate(**{f"sum_{c}": Sum(c) for c in sums}).order_by())
    out = []
    for row in rows:
        idx = int(((_parse_day(row["b"]) if day else row["b"]) - start) // width)
        if 0 <= idx < n:
            out.append((idx, row))
    return out


def _histograms(metric: int, start: datetime, width: timedelta, n: int) -> list[dict[int, int]]:
    """Per-bucket histograms {bin: answers} of a timing (LatencyHour.DURATION or TTFB), from latency_hours."""
    hists: list[dict[int, int]] = [defaultdict(int) for _ in range(n)]
    for idx, row in _by_bucket(LatencyHour.objects.filter(metric=metric), start, width, n, ("bin",), ("answers",)):
        hists[idx][row["bin"]] += row["sum_answers"]
    return hists


def dashboard_build(window: str, now: datetime | None = None) -> Dashboard:
    """The dashboard's numbers for a window ('24h', '7d' or '30d'), by the answers' time (responses.created_at).

    The window is whole UTC hours (the last one still being written), so every figure comes from the
    hour rollups the log's triggers keep (answer_hours, latency_hours; migration 0012), never from the
    log itself. Answers timed after the window's end (a clock ahead) count in the cache figures and the
    tokens by model, not in the buckets nor in the totals summed from them.
    """
    span, width = WINDOWS[window]
    now = now or datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    if width >= timedelta(days=1):  # day buckets: align on midnight
        end = end.replace(hour=0) + timedelta(days=1) if end.hour else end
    start = end - span
    n = int(span // width)
    dash = Dashboard(window=window)
    dash.labels = [(start + width * i).strftime("%m-%d %H:00" if width < timedelta(days=1) else "%Y-%m-%d")
                   for i in range(n)]
    counts, errors, cost_e8, priced = [0] * n, [0] * n, [0] * n, 0
    for idx, row in _by_bucket(AnswerHour.objects.all(), start, width, n, (),
                               ("exchanges", "errors", "cost_e8", "priced")):
        counts[idx] += row["sum_exchanges"]
        errors[idx] += row["sum_errors"]
        cost_e8[idx] += row["sum_cost_e8"]
        priced += row["sum_priced"]
    latency = _histograms(LatencyHour.DURATION, start, width, n)
    ttfb = _histograms(LatencyHour.TTFB, start, width, n)
    hours = width / timedelta(hours=1)
    dash.per_hour = [round(c / hours, 1) for c in counts]
    dash.error_rate = [round(100 * e / c, 2) if c else None for c, e in zip(counts, errors)]
    dash.total, dash.errors = sum(counts), sum(errors)
    for hists, target, whole in ((latency, dash.latency, dash.latency_window), (ttfb, dash.ttfb, dash.ttfb_window)):
        merged: dict[int, int] = defaultdict(int)
        for h in hists:
            for index, answers in h.items():
                merged[index] += answers
        for name, q in (("p50", 0.5), ("p95", 0.95)):
            target[name] = [percentile(h, q) for h in hists]
            whole[name] = percentile(merged, q)
    dash.cost_total = (Decimal(sum(cost_e8)) / E8).quantize(E8_PLACES) if priced else None
    dash.unpriced = dash.total - priced
    dash.starts, dash.width = [start + width * i for i in range(n)], width
    dash.cost = [float(Decimal(c) / E8) for c in cost_e8]
    answers = AnswerHour.objects.filter(hour__gte=start)
    cache = answers.aggregate(hits=Sum("cache_hits"), fills=Sum("cache_fills"), saved=Sum("saved"),
                              saved_e8=Sum("saved_e8"))
    dash.cache_hits, dash.cache_fills = cache["hits"] or 0, cache["fills"] or 0
    dash.cache_saved_usd = (Decimal(cache["saved_e8"]) / E8).quantize(E8_PLACES) if cache["saved"] else None
    dash.models = [
        {**m, "model": m["model"] or None} for m in
        answers.values("model").annotate(input=Sum("input_tokens"), output=Sum("output_tokens"),
                                         total=Sum("total_tokens"), calls=Sum("tokened"))
        .filter(calls__gt=0).order_by("-total", "model")[:12]]
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
    unpriced: int = 0  # exchanges without a known cost (not priced, no usage, errors and refusals): not in `cost`


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
    # How many groups each way has (days, models, keys, users): a table shows at most SPEND_GROUPS_MAX of them.
    counts: tuple[int, int, int, int] = (0, 0, 0, 0)


SPEND_GROUPS_MAX = 100  # rows per table (the biggest spenders first)
# One group of the spend page's figures: (UTC day "YYYY-MM-DD", requested model, key, user); "" when unknown.
SpendGroup = tuple[str, str, str, str]
E8 = Decimal(100_000_000)
E8_PLACES = Decimal("1e-8")  # what a sum of cost_usd (8 decimal places) reads as
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

    def add(self, other: "_Sums", sign: int = 1) -> None:
        self.exchanges += sign * other.exchanges
        self.input_tokens += sign * other.input_tokens
        self.output_tokens += sign * other.output_tokens
        self.total_tokens += sign * other.total_tokens
        self.priced += sign * other.priced
        self.cost += sign * other.cost

    def row(self, key: str) -> SpendRow:
        return SpendRow(key=key, exchanges=self.exchanges, input_tokens=self.input_tokens,
                        output_tokens=self.output_tokens, total_tokens=self.total_tokens,
                        cost=self.cost if self.priced else None, unpriced=self.exchanges - self.priced)


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def _hour_start(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


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


def _hour_groups(start: datetime, end: datetime) -> dict[SpendGroup, _Sums]:
    """The figures of the answers in [start, end) per (day, model, key, user): the hours it touches from spend_hours
    (kept by triggers, see SpendHour), less what the log holds in those hours before `start` and from `end` on.

    Less rather than plus: a range ending now leaves out only the rest of this hour, which holds no answers
    yet, so the log is read for the minutes before a range's start at most (under an hour of answers)."""
    first, last = _hour_start(start), _hour_start(end)
    if last < end:
        last += timedelta(hours=1)
    rows = (SpendHour.objects.filter(hour__gte=first, hour__lt=last).annotate(d=DayBucket("hour"))
            .values("d", "model", "key", "end_user")
            .annotate(n=Sum("exchanges"), i=Sum("input_tokens"), o=Sum("output_tokens"), t=Sum("total_tokens"),
                      p=Sum("priced"), c=Sum("cost_e8")).order_by())
    groups = {(r["d"], r["model"], r["key"], r["end_user"]): _Sums(r["n"], r["i"], r["o"], r["t"], r["p"],
                                                                   Decimal(r["c"]) / E8) for r in rows}
    for lo, hi in ((first, start), (end, last)):
        if lo < hi:
            for group, sums in _log_groups(lo, hi).items():
                groups.setdefault(group, _Sums()).add(sums, -1)
    return groups


def spend_groups(start: datetime, end: datetime) -> dict[SpendGroup, _Sums]:
    """The figures of the answers in [start, end) per (day, model, key, user): the whole days from spend_days,
    the partial days at the ends from spend_hours (a rolling range starts mid-day; today is still being written)."""
    first, last = _day_start(start), _day_start(end)
    if first < start:
        first += timedelta(days=1)
    if last <= first:
        return _hour_groups(start, end)
    groups = _day_groups(first.date(), last.date())
    for lo, hi in ((start, first), (last, end)):
        if lo < hi:
            for group, sums in _hour_groups(lo, hi).items():
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
    counts = tuple(sum(1 for sums in way.values() if sums.exchanges) for way in ways)
    return Spend(start=start, end=end, total=total.row(""), days=sorted(days, key=lambda r: r.key),
                 models=models, keys=keys, users=users, counts=counts)
