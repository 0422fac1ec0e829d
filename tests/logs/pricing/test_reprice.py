"""reprice_logs: stored exchanges priced again from their stored answers, as of their own dates."""

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

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


def test_reprice_prices_a_realtime_sessions_audio_from_its_summed_usage():
    """A session has no answer body: its summed counts, audio included, are kept for this (gpt-realtime: audio
    $32 / $64 per million, text $4 / $16)."""
    counts = {"input_tokens": 1000, "output_tokens": 1000, "input_audio_tokens": 800, "output_audio_tokens": 900}
    resp = exchange_make(endpoint="/v1/realtime", method="GET", status=101, model="gpt-realtime",
                         input_tokens=1000, output_tokens=1000, cost_usd=Decimal("0.02"), price_source="text only",
                         stream_result={"session_usage": counts}).response
    call_command("reprice_logs", stdout=StringIO())
    assert Response.objects.get(id=resp.id).cost_usd == Decimal("0.0856")


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


def test_reprice_never_rewrites_a_price_tables_prices_without_the_table(tmp_path, settings):
    # A typo'd or missing PRICE_TABLE_PATH (a shell without the service's environment) let it
    # replace private prices with genai-prices' and exit 0, budgets following.
    answer = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1000, "completion_tokens": 1000}}
    resp = exchange_make(resp_body=answer, input_tokens=1000, output_tokens=1000, cost_usd=Decimal("2"),
                         price_source=USER_SOURCE).response
    settings.PRICE_TABLE_PATH = str(tmp_path / "prices.jsn")
    with pytest.raises(CommandError, match="could not be read"):
        call_command("reprice_logs", stdout=StringIO())
    (tmp_path / "empty.json").write_text("{}")
    settings.PRICE_TABLE_PATH = str(tmp_path / "empty.json")
    with pytest.raises(CommandError, match="holds no usable price"):
        call_command("reprice_logs", stdout=StringIO())
    settings.PRICE_TABLE_PATH = ""
    with pytest.raises(CommandError, match="PRICE_TABLE_PATH is not set here"):
        call_command("reprice_logs", stdout=StringIO())
    assert Response.objects.get(id=resp.id).cost_usd == Decimal("2")  # untouched
    out = StringIO()
    call_command("reprice_logs", "--without-price-table", stdout=out)
    assert Response.objects.get(id=resp.id).price_source == LIBRARY_SOURCE and "and PRICE_TABLE_PATH" not in out.getvalue()


def test_a_price_table_entry_without_numbers_is_warned_about_once(tmp_path, settings, caplog):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"openai": {"gpt-4o-mini": {"input": 1, "output": 1}, "half": {"input": 1}}}))
    settings.PRICE_TABLE_PATH = str(prices)
    exchange_make(resp_body={"model": "gpt-4o-mini", "usage": {"prompt_tokens": 10, "completion_tokens": 10}},
                  input_tokens=10, output_tokens=10)
    with caplog.at_level("WARNING"):
        call_command("reprice_logs", stdout=StringIO())
    assert [r.getMessage() for r in caplog.records].count(
        f"price table {prices}: openai/half needs numeric input and output; skipped") == 1
