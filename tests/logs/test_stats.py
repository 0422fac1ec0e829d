"""Dashboard and spend figures, read from the rollups the log's triggers keep (spend_days, spend_hours, answer_hours,
latency_hours), equal to the same figures added up in Python from every row, whatever wrote or deleted the rows."""

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from logs.models import AnswerHour, LatencyHour, Request, Response, SpendDay, SpendHour
from logs.pipeline.bulk import row_new, rows_insert
from logs.ids import uuid7
from logs.retention import exchanges_delete
from logs.stats import _bin_offsets, dashboard_build, percentile, spend_build
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
NOW = datetime.now(timezone.utc).replace(microsecond=0)
MODELS, KEYS, USERS = ["gpt-4o", "o4-mini", None], ["", "team-a (fp 0123456789ab)"], [None, "alice", "bob"]


def _made(n: int, seed: int = 1) -> list[Request]:
    """n exchanges over the last 10 days, at any time of day: varied models, keys, users, tokens and costs."""
    rng = random.Random(seed)
    made = []
    for _ in range(n):
        tokens = None if rng.random() < 0.1 else (rng.randint(1, 900), rng.randint(1, 90))
        cost = None if rng.random() < 0.3 else Decimal(rng.randint(1, 10**6)) / 10**8
        made.append(exchange_make(when=NOW - timedelta(seconds=rng.randint(0, 10 * 86400)), model=rng.choice(MODELS),
                                  gateway_key=rng.choice(KEYS), key_fp=f"{rng.randint(0, 2):012x}",
                                  end_user=rng.choice(USERS), tokens=tokens, cost_usd=cost))
    return made


def _expected(start: datetime, end: datetime) -> dict:
    """The spend of [start, end) added up in Python from every response row, per way of grouping."""
    ways = {w: defaultdict(lambda: [0, 0, 0, 0, None]) for w in ("total", "day", "model", "key", "user")}
    for resp in Response.objects.select_related("request"):
        if not start <= resp.created_at < end:
            continue
        req = resp.request
        groups = {"total": "", "day": resp.created_at.date().isoformat(), "model": req.model or "",
                  "key": req.gateway_key or req.key_fingerprint, "user": req.end_user or ""}
        for way, group in groups.items():
            row = ways[way][group]
            row[0] += 1
            row[1] += resp.input_tokens or 0
            row[2] += resp.output_tokens or 0
            row[3] += resp.total_tokens or 0
            if resp.cost_usd is not None:
                row[4] = (row[4] or 0) + resp.cost_usd
    return {way: dict(groups) for way, groups in ways.items()}


def _got(start: datetime, end: datetime) -> dict:
    spend = spend_build(start, end)

    def rows(rs):
        return {r.key: [r.exchanges, r.input_tokens, r.output_tokens, r.total_tokens, r.cost] for r in rs}
    got = {"day": rows(spend.days), "model": rows(spend.models), "key": rows(spend.keys), "user": rows(spend.users)}
    got["total"] = rows([spend.total]) if spend.total.exchanges else {}
    return got


RANGES = [(timedelta(days=7), timedelta(0)), (timedelta(days=30), timedelta(0)), (timedelta(hours=24), timedelta(0)),
          (timedelta(days=3, hours=5), timedelta(days=1, hours=7)),
          # partial hours at both ends, within one hour, across midnight, and hour-aligned ends
          (timedelta(days=2, hours=3, minutes=17), timedelta(hours=5, minutes=41)), (timedelta(minutes=50), timedelta(0)),
          (timedelta(minutes=47), timedelta(minutes=12)), (timedelta(hours=30, minutes=7), timedelta(hours=2, minutes=59)),
          (timedelta(seconds=NOW.minute * 60 + NOW.second + 3 * 3600), timedelta(seconds=NOW.minute * 60 + NOW.second))]


@pytest.mark.parametrize(("back", "until"), RANGES)
def test_spend_is_exact_for_rolling_ranges(back, until):
    _made(60)
    exchange_make(response=False, when=NOW - timedelta(hours=2))  # open: no answer, no spend
    start, end = NOW - back, NOW - until + timedelta(seconds=1)
    for moment in (start, end):  # answers right at a range's ends and at the hours around them
        hour = moment.replace(minute=0, second=0, microsecond=0)
        for when in (moment, moment - timedelta(microseconds=1), hour, hour - timedelta(microseconds=1)):
            exchange_make(when=when - timedelta(milliseconds=120), model="edge", tokens=(3, 4),
                          cost_usd=Decimal("0.00000007"))
    assert SpendDay.objects.exists() and SpendHour.objects.exists()  # days and hours are read from the rollups
    assert _got(start, end) == _expected(start, end)


def test_spend_stays_exact_when_exchanges_are_deleted_answered_late_or_bulk_inserted():
    made = _made(40, seed=2)
    start, end = NOW - timedelta(days=30), NOW + timedelta(seconds=1)
    exchanges_delete([r.pk for r in made[:15]])  # what prune_logs does
    late = exchange_make(response=False, when=NOW - timedelta(days=4), model="o4-mini", end_user="carol")
    when = late.created_at + timedelta(seconds=5)
    rows_insert(Response, [row_new(Response, {  # the ingest's bulk insert, in a later batch than the request
        "id": uuid7(when.timestamp()), "request_id": late.pk, "status_code": 200, "outcome": "completed",
        "headers": [], "input_tokens": 11, "output_tokens": 4, "total_tokens": 15, "cost_usd": Decimal("0.00012345"),
        "created_at": when})])
    assert _got(start, end) == _expected(start, end)
    assert _got(start, end)["user"]["carol"] == [1, 11, 4, 15, Decimal("0.00012345")]
    exchanges_delete(list(Request.objects.values_list("pk", flat=True)))
    assert _got(start, end) == _expected(start, end) == {w: {} for w in ("day", "model", "key", "user", "total")}
    assert not SpendDay.objects.exclude(exchanges=0).exists()


def test_spend_stays_exact_when_rows_are_updated():
    made = _made(30, seed=3)
    start, end = NOW - timedelta(days=30), NOW + timedelta(seconds=1)
    ids = [r.pk for r in made]
    Request.objects.filter(pk__in=ids[:10]).update(model="renamed", end_user="zed", gateway_key="")
    Response.objects.filter(request_id__in=ids[10:20]).update(total_tokens=7, cost_usd=Decimal("0.5"))
    assert _got(start, end) == _expected(start, end)
    assert _got(start, end)["model"]["renamed"][0] == 10
    with connection.cursor() as cur:  # ids renamed in place, the requests first (as bench.admin_volume's seeding does)
        if connection.vendor == "sqlite":
            cur.execute("UPDATE requests SET id = substr(id, 1, 20) || 'abcd' || substr(id, 25, 8)")
            cur.execute("UPDATE responses SET request_id = "
                        "substr(request_id, 1, 20) || 'abcd' || substr(request_id, 25, 8)")
        else:
            cur.execute("UPDATE requests SET id = overlay(id::text placing 'abcd' from 25 for 4)::uuid")
            cur.execute("UPDATE responses SET request_id = "
                        "overlay(request_id::text placing 'abcd' from 25 for 4)::uuid")
    assert _got(start, end) == _expected(start, end)


# --- the dashboard

def _bin(ms: float) -> int:
    for low, width, first in reversed(_bin_offsets()):
        if ms >= low:
            return first + int((ms - low) // width)
    raise AssertionError(ms)


def _dashboard_expected(window: str, dash) -> dict:
    """The dashboard's figures added up in Python from every response row, over the buckets `dash` drew."""
    start, width, n = dash.starts[0], dash.width, len(dash.starts)
    counts, errors, cost = [0] * n, [0] * n, [Decimal(0)] * n
    hists = {"duration_ms": [defaultdict(int) for _ in range(n)], "ttfb_ms": [defaultdict(int) for _ in range(n)]}
    hits = fills = 0
    saved = None
    models: dict = {}
    for resp in Response.objects.all():
        if resp.created_at < start:
            continue
        hits, fills = hits + (resp.cache_hit is True), fills + (resp.cache_hit is False)
        if resp.cost_saved_usd is not None:
            saved = (saved or 0) + resp.cost_saved_usd
        if resp.total_tokens is not None:
            m = models.setdefault(resp.model or None, [0, 0, 0, 0])
            for i, v in enumerate((resp.input_tokens, resp.output_tokens, resp.total_tokens, 1)):
                m[i] += v or 0
        idx = (resp.created_at - start) // width
        if not 0 <= idx < n:
            continue
        counts[idx] += 1
        errors[idx] += resp.is_error
        cost[idx] += resp.cost_usd or 0
        for column, h in hists.items():
            if getattr(resp, column) is not None:
                h[idx][_bin(getattr(resp, column))] += 1
    hours = width / timedelta(hours=1)
    return {"per_hour": [round(c / hours, 1) for c in counts], "total": sum(counts), "errors": sum(errors),
            "error_rate": [round(100 * e / c, 2) if c else None for c, e in zip(counts, errors)],
            "cost": [float(c) for c in cost],
            **{f"{name} {q}": [percentile(h, q) for h in hists[column]]
               for name, column in (("latency", "duration_ms"), ("ttfb", "ttfb_ms")) for q in (0.5, 0.95)},
            "cache": (hits, fills, str(saved) if saved is not None else None),
            "models": {(m, *v) for m, v in models.items()}}


def _dashboard_got(window: str) -> tuple[dict, object]:
    dash = dashboard_build(window)
    got = {"per_hour": dash.per_hour, "total": dash.total, "errors": dash.errors, "error_rate": dash.error_rate,
           "cost": dash.cost, **{f"{name} {q}": getattr(dash, name)[f"p{round(q * 100)}"]
                                 for name in ("latency", "ttfb") for q in (0.5, 0.95)},
           "cache": (dash.cache_hits, dash.cache_fills,
                     str(dash.cache_saved_usd) if dash.cache_saved_usd is not None else None),
           "models": {(m["model"], m["input"] or 0, m["output"] or 0, m["total"] or 0, m["calls"])
                      for m in dash.models}}
    return got, dash


def _dashboard_made(n: int, seed: int) -> list[Request]:
    """n exchanges over the last 32 days and a few in the next hour (a clock ahead): every timing from 0 ms to
    minutes across the bins' edges, errors, cache hits and fills, unknown models, tokens and costs."""
    rng = random.Random(seed)
    edges = [0, 9.99, 10, 99.98, 100, 999.9, 1000, 9999, 10000, 99999, 100000, 250000.5]
    made = []
    for i in range(n):
        when = NOW - timedelta(seconds=rng.randint(-3600, 32 * 86400)) if i % 9 else \
            NOW.replace(minute=0, second=0) - timedelta(hours=rng.randint(0, 24 * 31), microseconds=rng.choice([0, 1]))
        timing = lambda: None if rng.random() < 0.1 else rng.choice([rng.choice(edges), round(rng.lognormvariate(6.5, 1.5), 2)])  # noqa: E731
        tokens = None if rng.random() < 0.2 else (rng.randint(1, 900), rng.randint(0, 90))
        cache = rng.choice([None, None, True, False])
        made.append(exchange_make(
            when=when - timedelta(milliseconds=120), model=rng.choice(["gpt-4o", "o4-mini", None]),
            status=rng.choice([200, 200, 200, 500, 429, None]), tokens=tokens, duration_ms=timing(), ttfb_ms=timing(),
            cost_usd=None if rng.random() < 0.3 else Decimal(rng.randint(0, 10**6)) / 10**8, cache_hit=cache,
            cost_saved_usd=Decimal(rng.randint(1, 10**5)) / 10**8 if cache and rng.random() < 0.7 else None))
    return made


def _dashboards_match() -> None:
    for window in ("24h", "7d", "30d"):
        got, dash = _dashboard_got(window)
        assert got == _dashboard_expected(window, dash), window


def test_dashboard_is_exact_in_every_window():
    _dashboard_made(150, seed=4)
    assert AnswerHour.objects.exists() and LatencyHour.objects.exists()  # read from the rollups
    got, _ = _dashboard_got("24h")
    assert got["total"] and any(got["latency 0.5"]) and got["cache"][0] and got["models"]  # a positive control
    _dashboards_match()


def test_dashboard_stays_exact_when_exchanges_are_deleted_answered_late_bulk_inserted_or_updated():
    made = _dashboard_made(80, seed=5)
    exchanges_delete([r.pk for r in made[:30]])  # what prune_logs does
    late = exchange_make(response=False, when=NOW - timedelta(hours=3))
    when = late.created_at + timedelta(seconds=5)
    rows_insert(Response, [row_new(Response, {  # the ingest's bulk insert, in a later batch than the request
        "id": uuid7(when.timestamp()), "request_id": late.pk, "status_code": 200, "outcome": "completed",
        "headers": [], "input_tokens": 11, "output_tokens": 4, "total_tokens": 15, "cost_usd": Decimal("0.00012345"),
        "duration_ms": 999.99, "ttfb_ms": 10.0, "model": "late-model", "is_error": False, "created_at": when})])
    _dashboards_match()
    ids = [r.pk for r in made[30:]]
    Response.objects.filter(request_id__in=ids[:20]).update(
        created_at=NOW - timedelta(hours=5), duration_ms=1234.5, ttfb_ms=None, model="moved", is_error=True,
        total_tokens=9, cost_usd=Decimal("0.25"), cache_hit=True, cost_saved_usd=Decimal("0.01"))
    _dashboards_match()
    exchanges_delete(list(Request.objects.values_list("pk", flat=True)))
    _dashboards_match()
    assert not AnswerHour.objects.exclude(exchanges=0).exists() and not LatencyHour.objects.exclude(answers=0).exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_reverses_and_reapplies_and_fills_the_hours_from_the_log():
    _dashboard_made(40, seed=6)
    _made(30, seed=7)
    call_command("migrate", "logs", "0011", verbosity=0)
    try:
        _made(10, seed=8)  # written while the rollups are gone
        _dashboard_made(10, seed=9)
    finally:
        call_command("migrate", "logs", verbosity=0)
    _dashboards_match()
    start, end = NOW - timedelta(days=3, minutes=13), NOW - timedelta(hours=20, minutes=5)
    assert SpendHour.objects.exists() and _got(start, end) == _expected(start, end)
