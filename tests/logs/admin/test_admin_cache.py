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
