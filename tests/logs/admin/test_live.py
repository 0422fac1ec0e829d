"""Live tail: the page and its JSON feed (new exchanges, pending ones updated when they end, the list's filters)."""

from datetime import datetime, timedelta, timezone

import pytest

from logs.models import Response
from tests.logs.admin.test_admin import LIST
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
FEED = f"{LIST}live/feed/"


def _feed(client, **params) -> dict:
    r = client.get(FEED, params)
    assert r.status_code == 200, r.content
    return r.json()


def test_feed_lists_recent_exchanges_newest_first_and_pending_ones(admin_client):
    now = datetime.now(timezone.utc)
    exchange_make(when=now - timedelta(minutes=10))  # before the window: not in the first poll
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
    later = (datetime.fromisoformat(cursor) + timedelta(minutes=5)).isoformat()
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
