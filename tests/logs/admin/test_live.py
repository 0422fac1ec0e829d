"""Live tail: the page and its JSON feed (new exchanges, pending ones updated when they end, the list's filters)."""

import time
from datetime import datetime, timedelta, timezone

import pytest

from logs.ids import uuid7
from logs.models import Landing, Response
from logs.pipeline.rows import records_write
from logs.records import RequestRecord, ResponseRecord
from tests.logs.admin.test_admin import LIST
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
FEED = f"{LIST}live/feed/"


def _landed_then(req) -> None:
    """An exchange whose rows reached the database when it was made, long ago (the triggers note now)."""
    Landing.objects.filter(request_id=req.pk).update(at=req.created_at)


def _feed(client, **params) -> dict:
    r = client.get(FEED, params)
    assert r.status_code == 200, r.content
    return r.json()


def test_feed_lists_recent_exchanges_newest_first_and_pending_ones(admin_client):
    now = datetime.now(timezone.utc)
    _landed_then(exchange_make(when=now - timedelta(minutes=10)))  # before the window: not in the first poll
    done = exchange_make(when=now - timedelta(seconds=5), tokens=(10, 2), status=500, end_user="alice")
    open_ = exchange_make(when=now - timedelta(seconds=1), response=False, session_id="s-1")
    data = _feed(admin_client)
    assert [r["id"] for r in data["rows"]] == [open_.pk.hex, done.pk.hex]
    first, second = data["rows"]
    assert first["pending"] is True and first["session"] == "s-1"
    assert second["pending"] is False and second["status"] == 500 and second["error"] is True
    assert second["tokens"] == "12" and second["user"] == "alice" and second["url"].endswith(f"{done.pk.hex}/change/")


def test_pending_exchange_is_updated_when_it_ends_even_after_the_window(admin_client):
    started = datetime.now(timezone.utc) - timedelta(minutes=5)
    open_ = exchange_make(when=started, response=False)
    _landed_then(open_)
    assert _feed(admin_client)["rows"] == []
    Response.objects.create(request=open_, status_code=200, outcome="completed", created_at=started,
                            duration_ms=300000.0, total_tokens=5)
    rows = _feed(admin_client, pending=f"{open_.pk.hex},not-an-id")["rows"]
    assert len(rows) == 1 and rows[0]["pending"] is False and rows[0]["latency"] == "300.0 s"


def test_feed_applies_the_list_filters_and_the_cursor(admin_client):
    now = datetime.now(timezone.utc)
    a = exchange_make(when=now - timedelta(seconds=2), model="gpt-4o", end_user="alice")
    exchange_make(when=now - timedelta(seconds=2), model="o4-mini", end_user="alice")
    assert [r["id"] for r in _feed(admin_client, model="gpt-4o", user="alice")["rows"]] == [a.pk.hex]
    cursor = _feed(admin_client)["cursor"]
    later = (datetime.fromisoformat(cursor.partition("~")[0]) + timedelta(minutes=5)).isoformat()
    # A cursor in the future (a browser's clock ahead) is read as now: nothing recent is skipped.
    assert a.pk.hex in [r["id"] for r in _feed(admin_client, cursor=later)["rows"]]
    assert admin_client.get(FEED, {"status": "bogus"}).status_code == 400
    assert admin_client.get(FEED, {"cursor": "yesterday"}).status_code == 400
    assert a.pk.hex in [r["id"] for r in _feed(admin_client, cursor="0001-01-01")["rows"]]  # a 500 before


def test_page_carries_the_list_filters_and_needs_login(admin_client, client):
    html = admin_client.get(f"{LIST}?model=gpt-4o&since=1h").content.decode()
    assert f'href="{LIST}live/?model=gpt-4o&amp;since=1h"' in html
    page = admin_client.get(f"{LIST}live/?model=gpt-4o").content.decode()
    assert 'id="live-filters" type="application/json">{"model": "gpt-4o"}' in page and "logs/live.js" in page
    assert client.get(FEED).status_code == 302  # anonymous: sent to the login page


def test_feed_applies_the_lists_time_range(admin_client):
    now = datetime.now(timezone.utc)
    a = exchange_make(when=now - timedelta(seconds=20), model="gpt-4o")
    b = exchange_make(when=now - timedelta(seconds=2), model="gpt-4o")
    ids = lambda **p: [r["id"] for r in _feed(admin_client, **p)["rows"]]  # noqa: E731
    middle = (now - timedelta(seconds=10)).strftime("%Y-%m-%dT%H:%M:%S")  # as a date-time input sends it (UTC)
    assert ids(created_at__gte=middle) == [b.pk.hex]
    assert ids(created_at__lt=middle) == [a.pk.hex]
    assert ids(since="15m", model="gpt-4o") == [b.pk.hex, a.pk.hex]
    r = admin_client.get(FEED, {"created_at__gte": middle, "created_at__lt": "2001-01-01T00:00"})
    assert r.status_code == 400 and "not after" in r.json()["error"]


def test_the_feed_takes_the_lists_gateway_key_none(admin_client):
    """?gateway_key=- (the spend page's provider-key rows link there) is the exchanges that presented none."""
    plain = exchange_make(key_fp="1a2b3c4d5e6f")
    exchange_make(key_fp="1a2b3c4d5e6f", gateway_key="team (fp 999999999999)")
    assert [r["id"] for r in _feed(admin_client, gateway_key="-")["rows"]] == [plain.pk.hex]


def test_an_exchange_that_lands_late_shows_however_long_ago_it_started(admin_client):
    now = datetime.now(timezone.utc)
    # A stream that began 40 s ago (before the page opened) and ends now: only its response row is new.
    _landed_then(exchange_make(when=now - timedelta(minutes=10)))  # landed then: not shown again
    stream = exchange_make(when=now - timedelta(seconds=40), response=False, stream=True)
    _landed_then(stream)
    cursor = _feed(admin_client)["cursor"]
    records_write([ResponseRecord(id=uuid7().hex, request_id=stream.pk.hex, provider="openai", status=200,
                                  created=stream.created_at.timestamp(), duration_ms=40000.0)])
    # The rows a restart replays from a dead worker's journal: started 10 minutes ago, both landing now.
    started = (now - timedelta(minutes=10)).timestamp()
    replayed = uuid7(started).hex
    records_write([RequestRecord(id=replayed, provider="openai", endpoint="/v1/chat/completions", method="POST",
                                 created=started, instance="dead"),
                   ResponseRecord(id=uuid7().hex, request_id=replayed, provider="openai", status=200,
                                  outcome="interrupted", created=started)])
    rows = _feed(admin_client, cursor=cursor)["rows"]
    assert [r["id"] for r in rows] == [stream.pk.hex, replayed]  # each once, newest start first
    assert [r["outcome"] for r in rows] == ["completed", "interrupted"]
    # The list's time range still reads the start: "from 5 minutes ago" leaves the replayed one out.
    assert [r["id"] for r in _feed(admin_client, cursor=cursor, created_at__gte=(now - timedelta(minutes=5))
                                   .isoformat())["rows"]] == [stream.pk.hex]


def test_landing_notes_older_than_ten_minutes_are_dropped_as_requests_are_written():
    _landed_then(exchange_make(when=datetime.now(timezone.utc) - timedelta(minutes=11)))
    assert Landing.objects.count() == 2  # its request's and its response's
    records_write([RequestRecord(id=uuid7().hex, provider="openai", created=time.time())])
    assert Landing.objects.count() == 1


def test_a_burst_of_late_exchanges_beyond_one_polls_rows_comes_whole_over_the_next_polls(admin_client):
    cursor = _feed(admin_client)["cursor"]
    # A database back after an outage: 300 exchanges of the last 10 minutes land at once.
    started = time.time() - 600
    ids = [uuid7(started + i).hex for i in range(300)]
    records_write([RequestRecord(id=rid, provider="openai", created=started + i) for i, rid in enumerate(ids)])
    seen: list[str] = []
    for _ in range(3):
        data = _feed(admin_client, cursor=cursor)
        seen += [r["id"] for r in data["rows"] if r["id"] not in seen]  # the page draws each once, by id
        cursor = data["cursor"]
    assert sorted(seen) == sorted(ids)
