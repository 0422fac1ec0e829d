"""Reads: a key by its secret (cached for at most a second), and a key's tokens and spend from the log.

Tokens and spend are read from sums the log's triggers keep as the ingest process writes answers
(logs.TokenSecond per key and second, logs.SpendDay per day): the log is the one record of usage,
nothing on the request path has to count tokens, and a read costs a few rows whatever the
traffic. Each process keeps what it read for USAGE_TTL seconds.
"""

import functools
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Max, OuterRef, Subquery, Sum

from keys.models import GatewayKey
from keys.periods import period_start
from keys.tokens import secret_hash
from logs.models import DeletedSpend, Request, Response, SpendDay, TokenSecond
from logs.stats import E8

# How long a process trusts what it read. Key lookups: a revoked or changed key is refused on
# every worker and host within this (plus the lookup itself). Usage: an exchange's tokens and
# cost count within this after the ingest process has written them.
KEY_TTL = 1.0
USAGE_TTL = 1.0
TOKENS_WINDOW = 60.0
# A read (key or usage) is re-read in the background once it is half its TTL old, so that under
# steady traffic no request waits for the database; a read a TTL old is never used (the request
# waits for a new one), whatever the traffic was since.
REFRESH_AHEAD = KEY_TTL / 2
USAGE_REFRESH_AHEAD = USAGE_TTL / 2
_NEVER = float("-inf")

_keys: dict[str, tuple[float, GatewayKey | None]] = {}  # secret's hash -> (monotonic time of the read, key)
_any: list[float | bool] = [_NEVER, False]  # (monotonic time of the read, whether any key exists)


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """What a key used: tokens in the last minute and spend in its budget period."""

    tokens: int
    spend: Decimal


_usage: dict[int, tuple[float, KeyUsage]] = {}  # key's pk -> (monotonic time of the read, usage)


# The reads every worker repeats each second while its keys are in use (keys_exist, key_find,
# key_usage), as SQL built once: the ORM built each again on every read, five to ten times the
# query itself (key_usage 0.77 ms, key_find 0.46 ms on SQLite), in a reader thread that holds the
# GIL meanwhile, so a request arriving then waited for it (docs/benchmark.md, "The reads compiled
# once"). key_find keeps the ORM's own column list and converters.
_EXIST_SQL = f"SELECT 1 FROM {GatewayKey._meta.db_table} LIMIT 1"
_TOKENS_SQL = f'SELECT SUM(tokens) FROM {TokenSecond._meta.db_table} WHERE "key" = %s AND second >= %s'
# Spend is read from logs.SpendDay, the per-day sums the log's triggers keep as answers are
# written: a few rows per period, where summing the exchanges themselves read every one of them;
# plus logs.DeletedSpend, what deleted (pruned) exchanges cost, which a budget keeps counting.
_SPEND_SQL = (f'SELECT SUM(cost_e8) FROM (SELECT cost_e8 FROM {SpendDay._meta.db_table} WHERE "key" = %s AND day >= %s '
              f'UNION ALL SELECT cost_e8 FROM {DeletedSpend._meta.db_table} WHERE "key" = %s AND day >= %s) AS spent')
_by_hash: list[tuple[str, list[str], list[tuple[int, list, object]]]] = []  # (sql, attnames, converters)


def _key_by_hash(digest: str) -> GatewayKey | None:
    """GatewayKey.objects.filter(secret_hash=digest).first(), with the query compiled once per process."""
    if not _by_hash:
        compiler = GatewayKey.objects.filter(secret_hash=digest).order_by("pk")[:1].query.get_compiler(
            connection=connection)
        sql, _ = compiler.as_sql()
        columns = [col for col, _, _ in compiler.select]
        converters = compiler.get_converters(columns)
        _by_hash.append((sql, [col.target.attname for col in columns],
                         [(i, funcs, expression) for i, (funcs, expression) in converters.items()]))
    sql, names, converters = _by_hash[0]
    with connection.cursor() as cur:
        cur.execute(sql, [digest])
        row = cur.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, funcs, expression in converters:
        for func in funcs:
            values[i] = func(values[i], expression, connection)
    return GatewayKey.from_db(connection.alias, names, values)


def keys_exist() -> bool:
    """Whether any gateway key exists in the database, read now (keys_exist_cached says when it is due)."""
    at = time.monotonic()  # before the query: the age counts the read's own time
    with connection.cursor() as cur:  # GatewayKey.objects.exists(), without building the query each second
        cur.execute(_EXIST_SQL)
        value = cur.fetchone() is not None
    _any[:] = [at, value]
    return value


def keys_exist_cached() -> tuple[bool | None, bool]:
    """(keys_exist() as last read, None when that is KEY_TTL old; whether a re-read is due). No database."""
    age = time.monotonic() - _any[0]
    return (bool(_any[1]) if age < KEY_TTL else None), age >= REFRESH_AHEAD


def keys_exist_seen() -> None:
    """A key was just read by its secret: keys exist, whatever the last keys_exist() said."""
    _any[:] = [time.monotonic(), True]


def keys_exist_known() -> bool:
    """keys_exist() as last read, however long ago (False before the first read). No database."""
    return bool(_any[1])


@functools.lru_cache(maxsize=4096)
def secret_digest(secret: str) -> str:
    """secret_hash(secret), once per secret a process sees: every request of a key looks it up."""
    return secret_hash(secret)


def key_cached(digest: str) -> tuple[bool, GatewayKey | None, bool]:
    """(True, key or None, whether a re-read is due) when this process read the key of the secret with this
    hash (secret_digest) less than KEY_TTL ago, else (False, None, True). No database."""
    hit = _keys.get(digest)
    if hit is not None:
        age = time.monotonic() - hit[0]
        if age < KEY_TTL:
            return True, hit[1], age >= REFRESH_AHEAD
    return False, None, True


def key_find(digest: str) -> GatewayKey | None:
    """The key of the secret with this hash (secret_digest), active or not, read now (key_cached says when it
    is due). By the hash: a realtime session re-reads its key as it runs, and keeps no secret."""
    at = time.monotonic()
    key = _key_by_hash(digest)
    if len(_keys) > 10_000:  # unknown secrets are cached too: do not let a flood of them grow this
        _keys.clear()
    _keys[digest] = (at, key)
    return key


def caches_clear() -> None:
    """Forget every cached read (tests; a command that changed a key in this process)."""
    _keys.clear()
    _usage.clear()
    _by_hash.clear()  # compiled for the database of the time (tests switch it)
    _any[:] = [_NEVER, False]


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def _token_seconds(key: GatewayKey, now: float):
    """The key's per-second token sums (logs.TokenSecond) of the last minute: at most 61 rows.

    A second's bucket counts whole: the window holds the answers that ended since the start of the
    second TOKENS_WINDOW ago, so an answer counts for up to a second longer than a minute.
    """
    return TokenSecond.objects.filter(key=key.label, second__gte=int(now - TOKENS_WINDOW))


def key_spend(key: GatewayKey, since: datetime | None) -> tuple[Decimal, Decimal]:
    """USD spent by a key's exchanges that started since `since` (ever when None): (by those in the log, by those
    deleted from it). A budget counts both.

    `since` is a period's start (a UTC midnight): deleted exchanges are kept per day.
    """
    logged, deleted = _spends([key.label], since)
    return logged.get(key.label, Decimal(0)), deleted.get(key.label, Decimal(0))


def _spends(labels: list[str], since: datetime | None) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """key_spend of several keys, by label, in two queries (a key that spent nothing is left out)."""
    rows = Response.objects.filter(request__gateway_key__in=labels, cost_usd__isnull=False)
    deleted = DeletedSpend.objects.filter(key__in=labels)
    if since is not None:
        rows = rows.filter(request__created_at__gte=since)
        deleted = deleted.filter(day__gte=since.astimezone(timezone.utc).date())
    logged = rows.order_by().values("request__gateway_key").annotate(s=Sum("cost_usd"))
    pruned = deleted.order_by().values("key").annotate(s=Sum("cost_e8"))
    return ({r["request__gateway_key"]: r["s"] or Decimal(0) for r in logged},
            {r["key"]: Decimal(r["s"] or 0) / E8 for r in pruned})


def key_usage_cached(key: GatewayKey) -> tuple[KeyUsage | None, bool]:
    """(key_usage() as this process last read it, None when that is USAGE_TTL old; whether a re-read is due).
    No database."""
    hit = _usage.get(key.pk)
    if hit is None:
        return None, True
    age = time.monotonic() - hit[0]
    return (hit[1] if age < USAGE_TTL else None), age >= USAGE_REFRESH_AHEAD


def _sum(sql: str, params: list) -> int:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return int(cur.fetchone()[0] or 0)


def key_usage(key: GatewayKey) -> KeyUsage:
    """A key's tokens in the last minute and spend this period, read now (key_usage_cached says when it is due)."""
    at = time.monotonic()  # before the query: the age counts the read's own time
    now = time.time()
    tokens = 0
    if key.tpm is not None:  # the rows of _token_seconds
        tokens = _sum(_TOKENS_SQL, [key.label, int(now - TOKENS_WINDOW)])
    spend = Decimal(0)
    if key.budget_usd is not None:  # since the period's start, a UTC midnight (ever for a total budget)
        since = period_start(key.budget_period, _dt(now))
        first = since.date().isoformat() if since is not None else "0001-01-01"  # a total budget: every day
        spend = Decimal(_sum(_SPEND_SQL, [key.label, first, key.label, first])) / E8
    usage = KeyUsage(int(tokens), spend)
    _usage[key.pk] = (at, usage)
    return usage


def tokens_free_in(key: GatewayKey, limit: int) -> tuple[int, float | None]:
    """The key's tokens in the last minute, read now, and the seconds until enough of them leave the window
    to bring it under `limit` (None: it is under it now).

    Read whole rather than trusting the caller's count: that one may be a second old, missing the answers
    logged since (a Retry-After too short, the client refused again when it came back) or still counting
    tokens that have left the window since (a refusal with nothing left in the window)."""
    now = time.time()
    rows = list(_token_seconds(key, now).order_by("second").values_list("second", "tokens"))
    used = sum(tokens for _, tokens in rows)
    if used < limit:
        return used, None
    over_by = used - limit + 1  # tokens that must leave before the key is under its limit
    freed = 0
    for second, tokens in rows:
        freed += tokens
        if freed >= over_by:
            return used, max(second + 1 + TOKENS_WINDOW - now, 0.0)
    return used, TOKENS_WINDOW  # a limit of 0: never under it


@dataclass(frozen=True, slots=True)
class KeyActivity:
    """A key's activity for the admin: this period's requests and spend, last use."""

    requests: int  # this period's exchanges in the log (deleted ones are gone: only their spend is kept)
    spend: Decimal  # this period's, deleted exchanges' included (what the budget counts)
    last_used: datetime | None  # the newest exchange in the log
    since: datetime | None = None  # the period's start (None: a total budget, the key's whole life)
    unpriced: int = 0  # this period's exchanges without a known cost: not in `spend`, nor against the budget
    pruned_spend: Decimal = Decimal(0)  # of `spend`, what exchanges deleted from the log (prune_logs) cost
    pruned_last_day: date | None = None  # the last day a deleted exchange of the key cost something


def key_activity(key: GatewayKey, now: datetime | None = None) -> KeyActivity:
    """Requests and spend in the key's current budget period, and when it was last used.

    After prune_logs the period's exchanges may be gone from the log while their spend still counts: the
    list read "0 requests, $9.50 this month, last used never". `pruned_spend` and `pruned_last_day` say so.
    """
    return keys_activity([key], now)[key.pk]


def keys_activity(keys: list[GatewayKey], now: datetime | None = None) -> dict[int, KeyActivity]:
    """key_activity of each key (by pk) in a number of queries that does not grow with the keys: read one key at a
    time, a page of 50 keys ran 250 queries."""
    now = now or datetime.now(timezone.utc)
    if not keys:
        return {}
    # The newest exchange of each key: one seek down the (gateway_key, created_at) index per key, in one query.
    newest = Request.objects.filter(gateway_key=OuterRef("log_label")).order_by("-created_at").values("created_at")[:1]
    last = dict(GatewayKey.objects.filter(pk__in=[k.pk for k in keys]).annotate(log_label=GatewayKey.label_sql())
                .annotate(last=Subquery(newest)).values_list("pk", "last"))
    labels = [k.label for k in keys]
    pruned_last = dict(DeletedSpend.objects.filter(key__in=labels).order_by().values("key").annotate(d=Max("day"))
                       .values_list("key", "d"))
    periods: dict[datetime | None, list[GatewayKey]] = {}
    for key in keys:  # keys alike in their period's start are read together
        periods.setdefault(period_start(key.budget_period, now), []).append(key)
    out = {}
    for since, alike in periods.items():
        requests = Request.objects.filter(gateway_key__in=[k.label for k in alike])
        if since is not None:
            requests = requests.filter(created_at__gte=since)
        counts = {r["gateway_key"]: r for r in requests.order_by().values("gateway_key")
                  .annotate(n=Count("id"), priced=Count("response__cost_usd"))}
        logged, pruned = _spends([k.label for k in alike], since)
        for key in alike:
            count = counts.get(key.label, {"n": 0, "priced": 0})
            spent_pruned = pruned.get(key.label, Decimal(0))
            out[key.pk] = KeyActivity(count["n"], logged.get(key.label, Decimal(0)) + spent_pruned, last.get(key.pk),
                                      since, count["n"] - count["priced"], spent_pruned, pruned_last.get(key.label))
    return out


def key_history(key: GatewayKey, days: int = 30, now: datetime | None = None) -> list[dict]:
    """Requests, tokens, spend and the exchanges priced (the others are not in spend) per UTC day over the last `days`
    days, oldest first (days without use included)."""
    now = now or datetime.now(timezone.utc)
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    out = {(first + timedelta(days=i)).date(): {"day": (first + timedelta(days=i)).date(), "requests": 0,
                                                "tokens": 0, "spend": Decimal(0), "priced": 0} for i in range(days)}
    rows = (Request.objects.filter(gateway_key=key.label, created_at__gte=first)
            .values_list("created_at", "response__total_tokens", "response__cost_usd"))
    for created, tokens, cost in rows.iterator():
        day = out.get(created.astimezone(timezone.utc).date())
        if day is not None:
            day["requests"] += 1
            day["tokens"] += tokens or 0
            day["spend"] += cost or 0
            day["priced"] += cost is not None
    return list(out.values())
