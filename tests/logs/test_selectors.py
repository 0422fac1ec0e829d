"""Reads of the log: "no response yet" through requests_pending, the date drill-down's bounds and periods."""

import time
from datetime import datetime, timedelta, timezone

import pytest
from django.test.utils import CaptureQueriesContext
from django.db import connection

from logs.ids import exchange_id_new
from logs.models import PendingRequest, Request
from logs.pipeline.rows import records_write
from logs.records import RequestRecord, ResponseRecord
from logs.retention import exchanges_delete
from logs.selectors import any_of_q, date_bounds, date_choices, period_next, status_q
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db


def _pending() -> set:
    return {pk.hex for pk in Request.objects.filter(status_q("pending")).values_list("pk", flat=True)}


def _req() -> RequestRecord:
    return RequestRecord(id=exchange_id_new(), provider="openai", endpoint="/v1/chat/completions", method="POST",
                         headers=[], body=None, body_size=0, content_type="application/json", created=time.time())


def _resp(req: RequestRecord) -> ResponseRecord:
    return ResponseRecord(id=exchange_id_new(), request_id=req.id, provider="openai", status=200, body="{}",
                          content_type="application/json", created=time.time())


def test_pending_until_the_response_arrives_through_the_ingest():
    answered, open_ = _req(), _req()
    records_write([answered, _resp(answered), open_])  # one batch: a request with its answer, one without
    assert _pending() == {open_.id}
    late = _resp(open_)
    records_write([late])  # the answer arrives in a later batch
    assert _pending() == set()
    records_write([open_, late])  # a replayed journal skips rows already there: still answered
    assert _pending() == set() and not PendingRequest.objects.exists()


def test_pending_rows_made_and_deleted_any_way():
    done = exchange_make()
    open_ = exchange_make(response=False)
    assert _pending() == {open_.pk.hex}
    exchanges_delete([open_.pk, done.pk])  # prune_logs and the admin's delete: responses, then requests
    assert _pending() == set() and not PendingRequest.objects.exists()
    kept = exchange_make()
    kept.response.delete()  # an answer removed on its own leaves its request without one
    assert _pending() == {kept.pk.hex}


def test_pending_filter_combines_with_others():
    old = exchange_make(response=False, when=datetime.now(timezone.utc) - timedelta(days=3))
    new = exchange_make(response=False, model="o4-mini")
    exchange_make(model="o4-mini")
    since = datetime.now(timezone.utc) - timedelta(days=1)
    assert set(Request.objects.filter(status_q("pending"), created_at__gte=since).values_list("pk", flat=True)) \
        == {new.pk}
    assert set(Request.objects.filter(status_q("pending")).order_by("created_at").values_list("pk", flat=True)) \
        == {old.pk, new.pk}


def test_date_bounds_and_choices_from_known_values_make_no_query():
    jan, mar = datetime(2025, 1, 15, tzinfo=timezone.utc), datetime(2025, 3, 2, tzinfo=timezone.utc)
    months = [datetime(2025, m, 1, tzinfo=timezone.utc) for m in range(1, 13)]
    qs = Request.objects.all()
    with CaptureQueriesContext(connection) as queries:
        assert date_bounds(qs, "created_at", []) == (None, None)  # a search that matched nothing
        assert date_bounds(qs, "created_at", [mar, jan]) == (jan, mar)
        assert date_choices(qs, "created_at", months, lambda s: period_next(s, "month"), [mar, jan]) \
            == [months[0], months[2]]
    assert not queries.captured_queries


def test_date_bounds_and_choices_from_the_database():
    jan = exchange_make(when=datetime(2025, 1, 15, tzinfo=timezone.utc))
    mar = exchange_make(when=datetime(2025, 3, 2, tzinfo=timezone.utc))
    months = [datetime(2025, m, 1, tzinfo=timezone.utc) for m in range(1, 13)]
    qs = Request.objects.all()
    assert date_bounds(qs, "created_at") == (jan.created_at, mar.created_at)
    with CaptureQueriesContext(connection) as queries:
        assert date_choices(qs, "created_at", months, lambda s: period_next(s, "month")) == [months[0], months[2]]
    assert len(queries.captured_queries) == 3  # one seek per month found, and one that finds nothing more
    assert all("ORDER BY" in q["sql"] for q in queries.captured_queries)  # walks created_at's own index
    days = [datetime(2025, 3, d, tzinfo=timezone.utc) for d in range(1, 4)]
    assert date_choices(qs, "created_at", days, lambda s: period_next(s, "day")) == [days[1]]
    assert date_choices(qs.filter(model="none such"), "created_at", days, lambda s: period_next(s, "day")) == []
    ranged = qs.filter(created_at__gte=datetime(2025, 3, 1, 12, tzinfo=timezone.utc))  # a time range's start
    with CaptureQueriesContext(connection) as queries:
        assert date_choices(ranged, "created_at", days, lambda s: period_next(s, "day")) == [days[1]]
    assert all(q["sql"].count(">=") == 1 for q in queries.captured_queries)  # one lower bound a seek


def test_date_bounds_of_a_filter_walked_newest_first_take_the_newest_given_and_a_lower_bound(monkeypatch):
    monkeypatch.setattr("logs.selectors.RARE_ANSWERS", 1)  # a common status: EXISTS, walked newest first
    old = exchange_make(when=datetime(2025, 1, 15, tzinfo=timezone.utc))
    cut = exchange_make(when=datetime(2025, 3, 2, tzinfo=timezone.utc), status=None, outcome="interrupted")
    qs = Request.objects.filter(status_q("interrupted"))
    with CaptureQueriesContext(connection) as queries:
        assert date_bounds(qs, "created_at", newest=cut.created_at) == (old.created_at, cut.created_at)
    assert len(queries.captured_queries) == 1  # the log's oldest: one seek, not a walk to the filter's oldest
    since = datetime(2025, 2, 1, tzinfo=timezone.utc)
    assert date_bounds(qs.filter(created_at__gte=since), "created_at", newest=cut.created_at) == (since, cut.created_at)
    assert date_bounds(qs, "created_at") == (cut.created_at, cut.created_at)  # without the newest: both seeks


@pytest.mark.parametrize("rare_below", [2000, 1])  # few rows: IN on the index; many: an expression, created_at walked
def test_any_of_several_models_finds_each_and_nothing_else(monkeypatch, rare_below):
    monkeypatch.setattr("logs.selectors.RARE_ANSWERS", rare_below)
    a, b = exchange_make(model="gpt-4.1"), exchange_make(model="o4-mini")
    exchange_make(model="gpt-4o")
    exchange_make(model=None, endpoint="/v1/models", body="")
    got = Request.objects.filter(any_of_q("model", ["gpt-4.1", "o4-mini"])).order_by("-created_at")
    assert list(got.values_list("pk", flat=True)) == [b.pk, a.pk]
