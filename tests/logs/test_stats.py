"""Spend figures: whole days from spend_days (kept by triggers), the ends of a range from the log; exact either way."""

import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection

from logs.models import Request, Response, SpendDay
from logs.pipeline.bulk import row_new, rows_insert
from logs.ids import uuid7
from logs.retention import exchanges_delete
from logs.stats import spend_build
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
          (timedelta(days=3, hours=5), timedelta(days=1, hours=7))]


@pytest.mark.parametrize(("back", "until"), RANGES)
def test_spend_is_exact_for_rolling_ranges(back, until):
    _made(60)
    exchange_make(response=False, when=NOW - timedelta(hours=2))  # open: no answer, no spend
    start, end = NOW - back, NOW - until + timedelta(seconds=1)
    assert SpendDay.objects.exists()  # whole days are read from the rollup
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
