"""A key's tokens in the last minute and spend this period, read from the log."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db.models import F

from keys import selectors
from keys.selectors import caches_clear, key_activity, key_history, key_usage
from logs.ids import uuid7
from logs.models import Request, Response, TokenSecond
from logs.retention import exchanges_delete, prune

pytestmark = pytest.mark.django_db


def _exchange(key, *, started: datetime, ended: datetime, tokens: int | None = None, cost: str | None = None):
    req = Request.objects.create(id=uuid7(started.timestamp()), provider="openai", endpoint="/v1/chat/completions",
                                 method="POST", created_at=started, gateway_key=key.label)
    # As the ingest writes it: created_at is the exchange's start, its id and duration_ms say when it ended.
    Response.objects.create(id=uuid7(ended.timestamp()), request=req, status_code=200, outcome="completed",
                            created_at=started, duration_ms=(ended - started).total_seconds() * 1000,
                            total_tokens=tokens, cost_usd=None if cost is None else Decimal(cost))


def test_tokens_count_the_exchanges_that_ended_in_the_last_minute(make_key):
    key, _ = make_key("t", tpm=1000)
    now = datetime.now(timezone.utc)
    _exchange(key, started=now - timedelta(minutes=5), ended=now - timedelta(seconds=10), tokens=300)  # long stream
    _exchange(key, started=now - timedelta(seconds=20), ended=now - timedelta(seconds=19), tokens=200)
    _exchange(key, started=now - timedelta(minutes=3), ended=now - timedelta(minutes=2), tokens=999)  # out
    _exchange(key, started=now - timedelta(seconds=5), ended=now - timedelta(seconds=4))  # usage unknown
    assert key_usage(key).tokens == 500


def test_tokens_come_from_per_second_sums_that_follow_deletes(make_key):
    key, _ = make_key("ts", tpm=1000)
    other, _ = make_key("other", tpm=1000)
    now = datetime.now(timezone.utc)
    for i in range(30):  # 30 answers in three seconds: three rows to read
        ended = now - timedelta(seconds=10 + 10 * (i % 3))
        _exchange(key, started=ended - timedelta(seconds=2.5), ended=ended, tokens=10)
    _exchange(other, started=now - timedelta(seconds=3), ended=now - timedelta(seconds=2), tokens=7)  # not ours
    assert TokenSecond.objects.filter(key=key.label).count() == 3
    assert key_usage(key).tokens == 300
    # Over by 101: the oldest second's 100 tokens (30 s ago) are not enough, the next second's (20 s ago)
    # are; they leave the window 61 s after that second began: in 41-42 s (less the time this test took).
    used, free_in = selectors.tokens_free_in(key, 200)  # over by 101
    assert used == 300 and 38 <= free_in <= 42
    Response.objects.filter(request__gateway_key=key.label).delete()  # pruned: no longer counted
    caches_clear()
    assert key_usage(key).tokens == 0 and key_usage(other).tokens == 7


def test_token_seconds_over_an_hour_old_are_dropped_as_new_ones_start(make_key):
    key, _ = make_key("old", tpm=1000)
    now = datetime.now(timezone.utc)
    _exchange(key, started=now - timedelta(hours=2), ended=now - timedelta(hours=2), tokens=5)  # logged late
    assert not TokenSecond.objects.filter(key=key.label).exists()  # nothing would read it
    _exchange(key, started=now - timedelta(seconds=3), ended=now - timedelta(seconds=2), tokens=5)
    TokenSecond.objects.filter(key=key.label).update(second=F("second") - 7200)  # as if two hours went by
    _exchange(key, started=now - timedelta(seconds=2), ended=now - timedelta(seconds=1), tokens=7)  # a new second
    assert list(TokenSecond.objects.filter(key=key.label).values_list("tokens", flat=True)) == [7]
    assert key_usage(key).tokens == 7


def test_spend_this_period_old_and_recent(make_key):
    key, _ = make_key("s", budget_usd=Decimal("10"), budget_period="total")
    other, _ = make_key("o", budget_usd=Decimal("10"), budget_period="total")
    now = datetime.now(timezone.utc)
    _exchange(key, started=now - timedelta(days=40), ended=now - timedelta(days=40), cost="1.25")
    _exchange(key, started=now - timedelta(minutes=2), ended=now - timedelta(minutes=1), cost="0.000001")
    _exchange(other, started=now - timedelta(minutes=2), ended=now - timedelta(minutes=1), cost="7")  # not ours
    assert key_usage(key).spend == Decimal("1.250001")
    # An exchange of three hours ago logged only now counts at the next read (the per-day sums
    # are kept as answers are written).
    _exchange(key, started=now - timedelta(hours=3), ended=now, cost="2")
    selectors._usage.clear()
    assert key_usage(key).spend == Decimal("3.250001")
    Response.objects.filter(request__gateway_key=key.label, cost_usd=Decimal("2")).delete()  # a row gone by hand
    caches_clear()
    assert key_usage(key).spend == Decimal("1.250001")


@pytest.mark.django_db(transaction=True)
def test_pruned_and_deleted_exchanges_keep_counting_against_budgets(make_key):
    """Retention deletes the log, not the money spent: a total budget of $10 stays spent after prune_logs
    (else a 30-day retention would make it $10 a month), a monthly one counts the month's deleted days."""
    total, _ = make_key("total", budget_usd=Decimal("10"), budget_period="total")
    monthly, _ = make_key("monthly", budget_usd=Decimal("10"), budget_period="month")
    other, _ = make_key("other", budget_usd=Decimal("10"), budget_period="total")
    now = datetime.now(timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    _exchange(total, started=now - timedelta(days=40), ended=now - timedelta(days=40), cost="9.5")
    _exchange(total, started=now - timedelta(days=40), ended=now - timedelta(days=40), cost="0.25")
    _exchange(total, started=now - timedelta(minutes=2), ended=now - timedelta(minutes=1), cost="0.125")
    _exchange(monthly, started=month - timedelta(hours=1), ended=month - timedelta(hours=1), cost="5")  # last month
    _exchange(monthly, started=month + timedelta(seconds=1), ended=month + timedelta(seconds=2), cost="3")
    _exchange(other, started=now - timedelta(minutes=2), ended=now - timedelta(minutes=1), cost="7")
    assert (key_usage(total).spend, key_usage(monthly).spend) == (Decimal("9.875"), Decimal("3"))

    prune(timedelta(seconds=0), now=now + timedelta(seconds=1))  # every exchange goes
    assert not Response.objects.exists()
    caches_clear()
    assert key_usage(total).spend == Decimal("9.875")
    assert key_usage(monthly).spend == Decimal("3")  # last month's deleted $5 is not this month's
    assert key_usage(other).spend == Decimal("7")
    assert key_activity(total).spend == Decimal("9.875") and key_activity(monthly).spend == Decimal("3")

    # A later exchange adds to what was deleted; deleting it (the admin's delete) keeps counting it too.
    _exchange(total, started=now, ended=now, cost="0.5")
    caches_clear()
    assert key_usage(total).spend == Decimal("10.375")
    exchanges_delete(list(Request.objects.values_list("pk", flat=True)))
    caches_clear()
    assert key_usage(total).spend == Decimal("10.375")


def test_monthly_spend_starts_with_the_month(make_key):
    key, _ = make_key("m", budget_usd=Decimal("10"))
    now = datetime.now(timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    _exchange(key, started=month - timedelta(seconds=1), ended=month, cost="5")
    _exchange(key, started=month + timedelta(seconds=1), ended=month + timedelta(seconds=2), cost="0.5")
    assert key_usage(key).spend == Decimal("0.5")


def test_history_per_day(make_key):
    key, _ = make_key("h")
    now = datetime.now(timezone.utc)
    _exchange(key, started=now - timedelta(days=1), ended=now - timedelta(days=1), tokens=10, cost="0.1")
    _exchange(key, started=now - timedelta(days=1), ended=now - timedelta(days=1), tokens=5, cost="0.2")
    days = key_history(key, days=3, now=now)
    assert [d["requests"] for d in days] == [0, 2, 0]
    assert days[1]["tokens"] == 15 and days[1]["spend"] == Decimal("0.3")


@pytest.mark.django_db(transaction=True)
def test_key_reads_are_renewed_ahead_and_never_used_past_a_second(make_key):
    """Under traffic a request never waits for the key tables; a read a second old is never used."""
    import asyncio
    import time

    from keys import refresh
    from proxy.access import _keys_exist

    async def ask(read_age: float) -> tuple[bool, bool]:
        selectors._any[:] = [time.monotonic() - read_age, True]  # "keys exist", read that long ago
        answer = await _keys_exist()
        in_flight = any(name == "keys_exist" for _, name in refresh._inflight)
        await asyncio.sleep(0.3)  # let a background read land
        return answer, in_flight

    assert asyncio.run(ask(0.1)) == (True, False)  # fresh: no read
    # Half a second old: this request goes on with it, a re-read runs meanwhile and finds no key.
    assert asyncio.run(ask(0.6)) == (True, True)
    assert selectors.keys_exist_known() is False
    # A second old: never used, the request waits for the read.
    assert asyncio.run(ask(1.1)) == (False, False)
    make_key("k")
    assert asyncio.run(ask(1.1)) == (True, False)


def test_a_read_ahead_that_fails_prints_no_traceback(caplog):
    """A background re-read nobody awaits, failing (the database away), is not left for asyncio to report."""
    import asyncio
    import gc

    from keys import refresh

    def away():
        raise RuntimeError("database away")

    async def run():
        refresh.refresh_start("away", away)
        await asyncio.sleep(0.2)

    asyncio.run(run())
    gc.collect()
    assert "never retrieved" not in caplog.text
