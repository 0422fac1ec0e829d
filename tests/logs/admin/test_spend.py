"""The spend page: spend and tokens per day, model, key and user for a range, with totals and links to the list."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html import unescape

import pytest

from tests.logs.admin.test_admin import LIST, _ids
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
SPEND = f"{LIST}spend/"


@pytest.fixture
def spent():
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    now = midnight + timedelta(hours=3)  # "today"'s exchanges are made at 01:00 and 02:00 UTC
    yesterday = midnight - timedelta(hours=12)
    return {
        "a": exchange_make(when=yesterday, model="gpt-4o", tokens=(100, 10), cost_usd=Decimal("0.25"),
                           gateway_key="team-a (fp 0123456789ab)", end_user="alice"),
        "b": exchange_make(when=now - timedelta(hours=2), model="gpt-4o", tokens=(200, 20), cost_usd=Decimal("0.5"),
                           gateway_key="team-a (fp 0123456789ab)", end_user="bob"),
        "c": exchange_make(when=now - timedelta(hours=1), model="o4-mini", tokens=(50, 5), cost_usd=Decimal("1.25"),
                           key_fp="1a2b3c4d5e6f", end_user="alice"),
        "unpriced": exchange_make(when=now - timedelta(hours=1), model="mystery", tokens=(7, 3)),
        "old": exchange_make(when=now - timedelta(days=40), model="gpt-4o", tokens=(9, 9), cost_usd=Decimal("9")),
        "day": yesterday.date().isoformat(), "today": now.date().isoformat(),
    }


def test_totals_and_groups_for_a_custom_range(admin_client, spent):
    r = admin_client.get(SPEND, {"from": spent["day"], "to": spent["today"]})
    assert r.status_code == 200
    spend = r.context["spend"]
    assert spend.total.exchanges == 4 and spend.total.cost == Decimal("2.00")
    assert (spend.total.input_tokens, spend.total.output_tokens) == (357, 38)
    assert [(d.key, d.cost) for d in spend.days] == [(spent["day"], Decimal("0.25")), (spent["today"], Decimal("1.75"))]
    assert [(m.key, m.cost, m.total_tokens) for m in spend.models] == [
        ("o4-mini", Decimal("1.25"), 55), ("gpt-4o", Decimal("0.75"), 330), ("mystery", None, 10)]
    assert {k.key: k.cost for k in spend.keys} == {"1a2b3c4d5e6f": Decimal("1.25"),
                                                   "team-a (fp 0123456789ab)": Decimal("0.75"), "": None}
    assert {u.key: u.cost for u in spend.users} == {"alice": Decimal("1.50"), "bob": Decimal("0.5"), "": None}
    html = r.content.decode()
    assert "$2.00" in html and "$1.25" in html and "357" in html


def _link(html: str, text: str) -> str:
    return unescape(html.split(f'">{text}</a>')[0].rsplit('href="', 1)[1])


def test_rows_link_to_the_filtered_list(admin_client, spent):
    html = admin_client.get(SPEND, {"from": spent["day"], "to": spent["today"]}).content.decode()
    assert set(_ids(admin_client.get(_link(html, "gpt-4o")))) == {spent["a"].pk.hex, spent["b"].pk.hex}
    assert set(_ids(admin_client.get(_link(html, "alice")))) == {spent["a"].pk.hex, spent["c"].pk.hex}
    assert set(_ids(admin_client.get(_link(html, "team-a (fp 0123456789ab)")))) == {spent["a"].pk.hex, spent["b"].pk.hex}
    assert set(_ids(admin_client.get(_link(html, "1a2b3c4d5e6f")))) == {spent["c"].pk.hex}
    assert set(_ids(admin_client.get(_link(html, spent["day"])))) == {spent["a"].pk.hex}


def test_a_provider_keys_row_links_to_its_exchanges_without_a_gateway_key(admin_client, spent):
    """Spend groups an exchange by its gateway key first: the provider key's row counts those that had none, and
    its link listed every exchange made with that provider key (169 shown, 460 listed)."""
    through_gateway_key = exchange_make(when=spent["c"].created_at, model="o4-mini", key_fp="1a2b3c4d5e6f",
                                        gateway_key="team-b (fp 999999999999)", cost_usd=Decimal("1"))
    html = admin_client.get(SPEND, {"from": spent["day"], "to": spent["today"]}).content.decode()
    assert set(_ids(admin_client.get(_link(html, "1a2b3c4d5e6f")))) == {spent["c"].pk.hex}
    assert set(_ids(admin_client.get(_link(html, "team-b (fp 999999999999)")))) == {through_gateway_key.pk.hex}


@pytest.mark.parametrize(("params", "expected"), [
    ({"range": "today"}, 3), ({"range": "30d"}, 4), ({}, 4), ({"from": "2026-13-01"}, 4),
])
def test_ranges(admin_client, spent, params, expected):
    if datetime.now(timezone.utc).hour < 2:
        pytest.skip("the fixture's exchanges of today are made at 01:00 and 02:00 UTC")
    r = admin_client.get(SPEND, params)
    assert r.status_code == 200 and r.context["spend"].total.exchanges == expected


def test_bad_custom_range_is_explained(admin_client):
    r = admin_client.get(SPEND, {"from": "2026-01-10", "to": "2026-01-01"})
    assert "A range is 1 to 92 days" in r.content.decode()
    r = admin_client.get(SPEND, {"from": "9999-12-30", "to": "9999-12-31"})  # a 500 before
    assert r.status_code == 200 and "A range is 1 to 92 days" in r.content.decode()


def test_exchanges_without_a_known_cost_are_counted_and_never_shown_as_0(admin_client, spent):
    # A range whose exchanges were all unpriced read "$0 over 2 exchanges"; a partly priced one gave no sign
    # that its sum left some out.
    day = (datetime.now(timezone.utc) - timedelta(days=3)).replace(hour=12)
    lost = [exchange_make(when=day, model="my-private-model", tokens=(10, 5)),
            exchange_make(when=day + timedelta(minutes=1), model="gpt-4o", status=500)]
    r = admin_client.get(SPEND, {"from": day.date().isoformat(), "to": day.date().isoformat()})
    html = r.content.decode()
    assert "<strong>no known cost</strong> over 2 exchanges" in html and "<strong>$0</strong>" not in html
    assert ">2 of them have no known cost</a>" in html
    assert set(_ids(admin_client.get(_link(html, "2 of them have no known cost")))) == {x.pk.hex for x in lost}
    html = admin_client.get(SPEND, {"from": spent["day"], "to": spent["today"]}).content.decode()
    assert "<strong>$2.00</strong> over 4 exchanges" in html and ">1 of them has no known cost</a>" in html
    assert set(_ids(admin_client.get(_link(html, "1 of them has no known cost")))) == {spent["unpriced"].pk.hex}
    models = html.split('class="spend-model"')[1].split("</table>")[0]
    assert '>mystery</a></td>' in models and '<td class="num">–</td>\n            <td class="num">1</td>' in models


def test_a_table_cut_to_its_biggest_rows_says_so(admin_client):
    """A table shows at most 100 rows: 103 users' table showed 100 under a total of all 103, nothing saying why the
    rows did not add up to it."""
    now = datetime.now(timezone.utc)
    for i in range(103):
        exchange_make(when=now - timedelta(minutes=5), end_user=f"user-{i:03}", tokens=(1, 1),
                      cost_usd=Decimal(i + 1) / 1000)
    html = admin_client.get(SPEND, {"range": "24h"}).content.decode()
    users = html.split('class="spend-user"', 1)[1].split("</section>", 1)[0]
    assert ('<p class="help">The 100 with the highest cost (then tokens) of 103 users: the total counts them all.</p>'
            in users)
    assert "user-102" in users and "user-002" not in users  # the cheapest three left out
    assert "the highest cost" not in html.split('class="spend-user"', 1)[0]  # the other tables are whole
