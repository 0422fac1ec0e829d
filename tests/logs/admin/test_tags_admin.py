"""Users, sessions and metadata in the log browser: filters, search, the session page."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from logs.models import Request
from tests.logs.admin.test_admin import LIST, _ids
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def tagged():
    now = datetime.now(timezone.utc)
    rows = {
        "a1": exchange_make(when=now - timedelta(minutes=30), end_user="alice", session_id="s-1",
                            metadata={"team": "search"}, tokens=(10, 5), cost_usd=Decimal("0.001")),
        "a2": exchange_make(when=now - timedelta(minutes=29), end_user="alice", session_id="s-1",
                            tokens=(20, 7), cost_usd=Decimal("0.002"), status=500),
        "b1": exchange_make(when=now - timedelta(minutes=10), end_user="bob", session_id="s-2",
                            metadata={"team": "ads"}),
        "none": exchange_make(when=now - timedelta(minutes=5)),
    }
    return {k: v.pk.hex for k, v in rows.items()}


@pytest.mark.parametrize(("query", "expected"), [
    ("user=alice", {"a1", "a2"}), ("session=s-2", {"b1"}), ("meta=team%3Dsearch", {"a1"}), ("meta=team", {"a1", "b1"}),
    ("user=alice&status=error", {"a2"}), ("q=user%3Abob", {"b1"}), ("q=session%3As-1", {"a1", "a2"}),
    ("q=meta%3Ateam%3Dads", {"b1"}),
    ("q=meta%3A%3Dads", set()), ("meta=%3Dads", set()),  # no metadata name: nothing (it matched every exchange)
])
def test_filters_and_search(admin_client, tagged, query, expected):
    r = admin_client.get(f"{LIST}?{query}")
    assert r.status_code == 200 and "?e=1" not in r.get("Location", "")
    assert set(_ids(r)) == {tagged[k] for k in expected}


def test_user_and_session_filters_list_their_values(admin_client, tagged):
    html = admin_client.get(LIST).content.decode()
    assert "?user=alice" in html and "?session=s-2" in html


def test_session_page_in_order_with_totals(admin_client, tagged):
    r = admin_client.get(f"{LIST}session/?id=s-1")
    html = r.content.decode()
    assert r.status_code == 200
    assert r.context["totals"]["exchanges"] == 2 and r.context["totals"]["total_tokens"] == 42
    assert r.context["totals"]["cost_usd"] == Decimal("0.003") and r.context["totals"]["errors"] == 1
    assert [s["req"].pk.hex for s in r.context["steps"]] == [tagged["a1"], tagged["a2"]]
    assert "$0.003" in html and "42 total" in html and "241 ms" in html  # 2 × 120.5 ms summed
    assert f"{LIST}?session=s-1" in html


def test_exchange_page_links_user_session_and_metadata(admin_client, tagged):
    html = admin_client.get(f"{LIST}{tagged['a1']}/change/").content.decode()
    assert "?user=alice" in html and "session/?id=s-1" in html and "?meta=team%3Dsearch" in html


def test_session_page_unknown_session(admin_client):
    r = admin_client.get(f"{LIST}session/?id=nope")
    assert r.status_code == 200 and "No exchange has this session id." in r.content.decode()
    assert "<th>cost</th><td>$0</td>" in r.content.decode()  # nothing spent: "unknown" said it might be anything
    assert Request.objects.count() == 0


def test_session_cost_says_what_it_leaves_out(admin_client, tagged):
    # The session's cost summed its priced exchanges with nothing saying that others had no known cost.
    lost = exchange_make(end_user="alice", session_id="s-1", model="my-own-model", tokens=(30, 9))
    html = admin_client.get(f"{LIST}session/?id=s-1").content.decode()
    assert "$0.003, leaving out <a href=" in html and ">1 exchange without a known cost</a>" in html
    link = html.split('">1 exchange without a known cost</a>')[0].rsplit('href="', 1)[1].replace("&amp;", "&")
    assert set(_ids(admin_client.get(link))) == {lost.pk.hex}
    assert "leaving out" not in admin_client.get(f"{LIST}session/?id=s-2").content.decode()  # none priced: "unknown"
