"""reprice_logs: stored exchanges priced again from their stored answers, as of their own dates."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from logs.models import Response
from logs.pricing import LIBRARY_SOURCE, USER_SOURCE
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db


def test_reprice_after_a_price_change(tmp_path, settings):
    answer = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}
    resp = exchange_make(resp_body=answer, input_tokens=1000, output_tokens=1000, cost_usd=Decimal("9"),
                         price_source="old table").response
    out = StringIO()
    call_command("reprice_logs", "--dry-run", stdout=out)
    assert "would change the cost of 1" in out.getvalue()
    assert Response.objects.get(id=resp.id).cost_usd == Decimal("9")
    call_command("reprice_logs", stdout=StringIO())
    fresh = Response.objects.get(id=resp.id)
    assert fresh.cost_usd == Decimal("0.00075") and fresh.price_source == LIBRARY_SOURCE
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai": {"gpt-4o-mini": {"input": 1, "output": 1}}}))
    settings.PRICE_TABLE_PATH = str(prices)
    out = StringIO()
    call_command("reprice_logs", stdout=out)
    assert "changed the cost of 1" in out.getvalue()
    fresh = Response.objects.get(id=resp.id)
    assert fresh.cost_usd == Decimal("0.002") and fresh.price_source == USER_SOURCE


def test_reprice_reads_cache_writes_from_the_stored_answer():
    answer = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 0, "cache_creation_input_tokens": 1000,
                                                      "output_tokens": 0}}
    resp = exchange_make(provider="anthropic", endpoint="/anthropic/v1/messages", model="claude-sonnet-4-5",
                         resp_body=answer, input_tokens=1000, output_tokens=0).response
    call_command("reprice_logs", stdout=StringIO())
    assert Response.objects.get(id=resp.id).cost_usd == Decimal("0.00375")  # the write premium, not $3/M


def test_reprice_leaves_a_cache_hit_free_and_prices_what_it_saved():
    # Budgets and the spend pages count cost_usd: a replay repriced at full price would spend them.
    answer = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}
    hit = exchange_make(resp_body=answer, input_tokens=1000, output_tokens=1000, cost_usd=Decimal(0),
                        cost_saved_usd=Decimal("9"), cache_hit=True, price_source="old table").response
    out = StringIO()
    call_command("reprice_logs", stdout=out)
    assert "changed the cost of 1" in out.getvalue()
    fresh = Response.objects.get(id=hit.id)
    assert fresh.cost_usd == 0 and fresh.cost_saved_usd == Decimal("0.00075") and fresh.price_source == LIBRARY_SOURCE
