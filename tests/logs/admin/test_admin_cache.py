"""The response cache in the log browser: the filter and the dashboard's hit rate and savings."""

from decimal import Decimal

import pytest
from django.core.cache import cache

from tests.logs.admin.test_admin import LIST, _ids
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db


def test_cache_filter_and_dashboard_savings(admin_client):
    cache.clear()
    plain = exchange_make(cost_usd=Decimal("0.002"))
    stored = exchange_make(cost_usd=Decimal("0.002"), cache_hit=False)
    hits = [exchange_make(cost_usd=Decimal(0), cost_saved_usd=Decimal("0.002"), cache_hit=True,
                          cache_source=stored.pk) for _ in range(3)]
    assert set(_ids(admin_client.get(f"{LIST}?cache=hit"))) == {h.pk.hex for h in hits}
    assert set(_ids(admin_client.get(f"{LIST}?cache=stored"))) == {stored.pk.hex}
    assert plain.pk.hex in _ids(admin_client.get(LIST))
    html = admin_client.get(f"{LIST}dashboard/", {"window": "24h"}).content.decode()
    assert "Response cache: 3 hits, 1 answer stored, hit rate 75.0%, saved $0.00600000" in html


def test_a_hits_page_says_it_was_served_from_the_cache_and_what_it_saved(admin_client):
    # The page showed "· $0" and nothing else about the hit (the saving was only summed on the dashboard), and its
    # hover read "$0E-8"; a cost under a millionth hovered "$1.2E-7".
    hit = exchange_make(tokens=(6, 0), cost_usd=Decimal(0), cost_saved_usd=Decimal("0.00000012"), cache_hit=True)
    html = admin_client.get(f"{LIST}{hit.pk.hex}/change/").content.decode()
    assert ('<span title="$0">$0</span> · served from the response cache, saved '
            '<span title="$0.00000012">$0.00000012</span>') in html
    assert "E-" not in html.split("<th>Tokens</th>")[1].split("</tr>")[0]


def test_an_unpriced_answer_says_so_and_that_a_keys_budget_did_not_count_it(admin_client):
    # The page showed the tokens and no cost at all: nothing said the answer had cost nothing against the key's budget.
    unpriced = exchange_make(tokens=(6, 4), model="llama-local", gateway_key="ci (fp abc)")
    html = admin_client.get(f"{LIST}{unpriced.pk.hex}/change/").content.decode()
    assert ("· cost unknown (no price for llama-local): not counted against the gateway key's budget"
            in html.split("<th>Tokens</th>")[1].split("</tr>")[0])
