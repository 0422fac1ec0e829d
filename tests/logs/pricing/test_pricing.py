"""Cost: genai-prices (as of the exchange's date, cache reads and writes, service tiers), PRICE_TABLE_PATH over it."""

import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
import pytest

from logs.pricing import LIBRARY_SOURCE, USER_SOURCE, Price, cost_compute, price_find, price_known
from providers import Usage, registry

M = Decimal(1_000_000)
OPENAI = registry().get("openai")
ANTHROPIC = registry().get("anthropic")
GEMINI = registry().get("gemini")
GROQ = registry(["groq=https://api.groq.com/openai"]).get("groq")
OLLAMA = registry(["ollama=http://127.0.0.1:11434"]).get("ollama")
XAI = registry(["x-ai=https://api.x.ai"]).get("x-ai")


def _p(name: str):
    return registry().get(name)


@pytest.mark.parametrize("provider, model, names", [
    ("openai", "gpt-4o-mini-2024-07-18", ["gpt-4o-mini-2024-07-18", "gpt-4o-mini"]),
    ("anthropic", "claude-sonnet-4-20250514", ["claude-sonnet-4-20250514", "claude-sonnet-4"]),
    ("gemini", "models/gemini-2.5-pro-preview-05-06", ["gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"]),
    ("openai", "gpt-4o", ["gpt-4o"]),
])
def test_price_names_are_the_name_then_its_family(provider, model, names):
    assert _p(provider).price_names(model) == names


def test_ollamas_latest_tag_prices_as_the_untagged_name():
    # Ollama's /v1/models lists "llama3.2:latest"; a price table names "llama3.2". Other tags stay apart.
    assert OLLAMA.price_names("llama3.2:latest") == ["llama3.2:latest", "llama3.2"]
    assert OLLAMA.price_names("llama3.2:3b") == ["llama3.2:3b"]


def test_library_prices_with_cached_tokens():
    """gpt-4o-mini in genai-prices: $0.15 input, $0.075 cached input, $0.60 output per million."""
    price = cost_compute(OPENAI, Usage("gpt-4o-mini-2024-07-18", 1000, 200, 600))
    assert price == Price((400 * Decimal("0.15") + 600 * Decimal("0.075") + 200 * Decimal("0.6")) / M, LIBRARY_SOURCE)
    assert LIBRARY_SOURCE == f"genai-prices {genai_prices.__version__}"


def test_cache_writes_cost_a_premium():
    """Anthropic bills prompt-cache writes above input (claude-sonnet-4-5: $3 in, $3.75 write, $0.30 read)."""
    plain = cost_compute(ANTHROPIC, Usage("claude-sonnet-4-5", 1000, 0, 0)).cost
    written = cost_compute(ANTHROPIC, Usage("claude-sonnet-4-5", 1000, 0, 0, cache_write_tokens=1000)).cost
    read = cost_compute(ANTHROPIC, Usage("claude-sonnet-4-5", 1000, 0, 1000)).cost
    assert plain == Decimal("0.003") and written == Decimal("0.00375") and read == Decimal("0.0003")


def test_service_tiers_and_batch_have_their_own_prices():
    counts = ("gpt-5", 1000, 100)
    default = cost_compute(OPENAI, Usage(*counts)).cost
    flex = cost_compute(OPENAI, Usage(*counts, price_context=(("service_tier", "flex"),))).cost
    priority = cost_compute(OPENAI, Usage(*counts, price_context=(("service_tier", "priority"),))).cost
    assert flex < default < priority
    standard = cost_compute(ANTHROPIC, Usage("claude-sonnet-4-5", 1000, 100)).cost
    batch = cost_compute(ANTHROPIC, Usage("claude-sonnet-4-5", 1000, 100, price_context=(("processing", "batch"),)))
    assert batch.cost == standard / 2


def test_providers_report_what_selects_the_price():
    answer = {"model": "gpt-5", "service_tier": "flex", "usage": {"prompt_tokens": 10, "completion_tokens": 2}}
    assert OPENAI.usage(answer).price_context == (("service_tier", "flex"),)
    message = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 5, "cache_creation_input_tokens": 100,
                                                       "cache_read_input_tokens": 50, "output_tokens": 3,
                                                       "service_tier": "batch"}}
    usage = ANTHROPIC.usage(message)
    assert (usage.input_tokens, usage.cached_tokens, usage.cache_write_tokens) == (155, 50, 100)
    assert usage.price_context == (("processing", "batch"),)


def test_priced_as_of_the_exchange_date_with_long_context_tiers():
    """claude-opus-4-6 charged long prompts (over 200k tokens) double until 2026-03-13, a flat price after."""
    usage = Usage("claude-opus-4-6", 300_000, 0)
    before = cost_compute(ANTHROPIC, usage, at=datetime(2026, 3, 1, tzinfo=timezone.utc)).cost
    after = cost_compute(ANTHROPIC, usage, at=datetime(2026, 3, 20, tzinfo=timezone.utc)).cost
    assert after == 300_000 * 5 / M and before > after


def test_unknown_models_and_missing_counts_are_unpriced():
    assert cost_compute(OPENAI, Usage("gpt-imaginary", 10, 10)) == Price()
    assert cost_compute(OLLAMA, Usage("llama3", 10, 10)) == Price()  # not a genai-prices provider
    assert cost_compute(OPENAI, Usage(None, 10, 10)) == Price()
    assert cost_compute(OPENAI, Usage("gpt-4o", None, 5)) == Price()
    assert cost_compute(OPENAI, Usage("gpt-4o", 5, None)) == Price()  # output unknown: cost unknown
    # Embeddings have no output; their price has none either.
    assert cost_compute(OPENAI, Usage("text-embedding-3-small", 1_000_000, None)).cost == Decimal("0.02")
    assert cost_compute(GROQ, Usage("llama-3.3-70b-versatile", 1000, 1000)).source == LIBRARY_SOURCE
    assert cost_compute(GEMINI, Usage("gemini-2.0-flash-001", 1000, 1000)).source == LIBRARY_SOURCE


def test_user_table_overrides_entry_by_entry(tmp_path, settings):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({
        "ollama": {"llama3": {"input": 0.5, "output": 1}},
        "openai": {"gpt-4o": {"input": 1, "output": 2, "cache_write_input": 4}},
    }))
    settings.PRICE_TABLE_PATH = str(user)
    assert cost_compute(OLLAMA, Usage("llama3", 100, 100)) == Price((50 + 100) / M, USER_SOURCE)
    # Without cached_input, cached tokens price as input; cache writes at their own price.
    assert cost_compute(OPENAI, Usage("gpt-4o", 100, 0, 50)).cost == 100 / M
    assert cost_compute(OPENAI, Usage("gpt-4o", 100, 0, 0, cache_write_tokens=100)).cost == 400 / M
    assert cost_compute(OPENAI, Usage("gpt-4o-mini", 100, 100)).source == LIBRARY_SOURCE  # the rest: the library


def test_user_table_change_is_picked_up(tmp_path, settings):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": 1, "output": 1}}}))
    settings.PRICE_TABLE_PATH = str(user)
    assert price_find(OPENAI, "gpt-4o")["input"] == 1
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": 3, "output": 1}}}))
    stat = user.stat()
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert price_find(OPENAI, "gpt-4o")["input"] == 3


def test_bad_user_table_falls_back_to_the_library(tmp_path, settings, caplog):
    user = tmp_path / "prices.json"
    user.write_text("{not json")
    settings.PRICE_TABLE_PATH = str(user)
    assert cost_compute(OPENAI, Usage("gpt-4o", 10, 10)).source == LIBRARY_SOURCE
    assert "could not be read" in caplog.text
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": "cheap", "output": 1}, "x": {"input": -1, "output": 1}}}))
    os.utime(user, ns=(user.stat().st_atime_ns, user.stat().st_mtime_ns + 2_000_000_000))
    assert price_find(OPENAI, "gpt-4o") is None and price_find(OPENAI, "x") is None
    settings.PRICE_TABLE_PATH = str(tmp_path / "missing.json")
    caplog.clear()
    assert [price_find(OPENAI, "gpt-4o") for _ in range(3)] == [None] * 3
    # Said once, not once per exchange priced (the console filled with one line per request).
    assert [r.getMessage() for r in caplog.records] == [
        f"PRICE_TABLE_PATH {tmp_path / 'missing.json'} does not exist; genai-prices only until it does"]


def test_a_price_table_entry_that_is_not_an_object_or_not_a_number_is_skipped_with_a_warning(tmp_path, settings, caplog):
    # docs/usage.md: an entry without numeric input and output is skipped with a warning. A bare price
    # ("gpt-4o": 2.5) raised instead: each exchange was logged without its body, usage or cost, and each
    # request of a key with a budget got a 500.
    user = tmp_path / "prices.json"
    # json reads NaN bare or quoted, and Decimal("NaN") raises when compared.
    user.write_text('{"openai": {"gpt-4o": 2.5, "o3": [1, 2], "gpt-4.1": {"input": 1, "output": 2},'
                    ' "o1": {"input": NaN, "output": 1}, "o4-mini": {"input": "nan", "output": 1}}, "ollama": 0.5}')
    settings.PRICE_TABLE_PATH = str(user)
    assert cost_compute(OPENAI, Usage("gpt-4.1", 100, 100)) == Price(300 / M, USER_SOURCE)
    assert cost_compute(OPENAI, Usage("gpt-4o", 100, 100)).source == LIBRARY_SOURCE
    assert price_known(OPENAI, "gpt-4o") and not price_known(OLLAMA, "llama3")
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"price table {user}: ollama needs an object of models; skipped",
        f"price table {user}: openai/gpt-4o needs numeric input and output; skipped",
        f"price table {user}: openai/o1 needs numeric input and output; skipped",
        f"price table {user}: openai/o3 needs numeric input and output; skipped",
        f"price table {user}: openai/o4-mini needs numeric input and output; skipped"]


@pytest.mark.parametrize("hours", [(3, 20), (20, 3)])
def test_equal_counts_at_another_time_of_day_are_priced_for_that_time(hours):
    """deepseek-chat is cheaper from 16:30 to 00:30 UTC: a price computed once for some counts (the ingest
    remembers it) must not be reused at an hour with another price, in either order."""
    deepseek = registry(["deepseek=https://api.deepseek.com"]).get("deepseek")
    usage = Usage("deepseek-chat", 120_000, 30_000)
    counts = genai_prices.Usage(input_tokens=120_000, output_tokens=30_000)
    got = {}
    for hour in (*hours, *hours):
        at = datetime(2026, 11, 30, hour, tzinfo=timezone.utc)
        expected = genai_prices.calc_price(counts, "deepseek-chat", provider_id="deepseek",
                                           genai_request_timestamp=at).total_price
        got.setdefault(hour, []).append(cost_compute(deepseek, usage, at=at).cost)
        assert got[hour][-1] == expected.quantize(Decimal("0.00000001"))
    assert got[3][0] != got[20][0]


def test_audio_tokens_are_priced_as_audio():
    """gpt-realtime: text $4 in / $16 out, audio $32 / $64 per million (genai-prices); the audio is part of the counts."""
    text_only = cost_compute(OPENAI, Usage("gpt-realtime", 1000, 1000)).cost
    spoken = cost_compute(OPENAI, Usage("gpt-realtime", 1000, 1000, price_counts=(
        ("input_audio_tokens", 800), ("output_audio_tokens", 900))))
    assert text_only == Decimal("0.02")
    assert spoken.cost == (200 * 4 + 800 * 32 + 100 * 16 + 900 * 64) / M and spoken.source == LIBRARY_SOURCE


def _answer_cost(provider, answer) -> Decimal | None:
    return cost_compute(provider, provider.usage(answer)).cost


def test_what_the_answers_report_beside_tokens_is_priced():
    """Prices genai-prices knows and the columns cannot carry: figures are genai-prices' own."""
    # Anthropic: a cache write kept an hour ($6/M on claude-sonnet-4-5, not 5 minutes' $3.75/M).
    one_hour = {"model": "claude-sonnet-4-5", "usage": {
        "input_tokens": 50, "cache_creation_input_tokens": 100000, "cache_read_input_tokens": 0, "output_tokens": 100,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100000}}}
    assert _answer_cost(ANTHROPIC, one_hour) == Decimal("0.60165")
    # Anthropic: server-side web searches, $10 per thousand.
    searched = {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 5000, "output_tokens": 500,
                                                         "server_tool_use": {"web_search_requests": 3}}}
    assert _answer_cost(ANTHROPIC, searched) == Decimal("0.0525")
    # Gemini: image output ($30/M on gemini-2.5-flash-image against $2.50/M for text).
    drawn = {"modelVersion": "gemini-2.5-flash-image", "usageMetadata": {
        "promptTokenCount": 100, "candidatesTokenCount": 1290, "totalTokenCount": 1390,
        "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}]}}
    assert _answer_cost(GEMINI, drawn) == Decimal("0.03873")
    # OpenAI images: image input ($10/M on gpt-image-1 against $5/M for text).
    edited = {"usage": {"input_tokens": 1050, "output_tokens": 4160,
                        "input_tokens_details": {"image_tokens": 1000, "text_tokens": 50}}}
    assert cost_compute(OPENAI, replace(OPENAI.usage(edited), model="gpt-image-1")).cost == Decimal("0.17665")


def test_xais_reasoning_counted_apart_from_completion_tokens_is_output_too():
    """Grok reports reasoning beside completion_tokens (its total adds them up) and bills both as output
    (grok-3-mini: $0.30/M in, $0.50/M out); read as OpenAI's, the reasoning was neither counted nor paid."""
    answer = {"model": "grok-3-mini", "usage": {"prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 135,
                                                "completion_tokens_details": {"reasoning_tokens": 94}}}
    usage = XAI.usage(answer)
    assert (usage.input_tokens, usage.output_tokens, usage.reasoning_tokens, usage.total_tokens) == (32, 103, 94, 135)
    assert _answer_cost(XAI, answer) == (32 * Decimal("0.3") + 103 * Decimal("0.5")) / M
    # OpenAI's completion_tokens already hold the reasoning: left as reported.
    o1 = {"model": "o3-mini", "usage": {"prompt_tokens": 32, "completion_tokens": 103, "total_tokens": 135,
                                        "completion_tokens_details": {"reasoning_tokens": 94}}}
    assert OPENAI.usage(o1).output_tokens == 103


def test_counts_genai_prices_cannot_reconcile_are_unpriced_not_a_lost_record():
    """A part larger than its whole (an upstream's odd report) made calc_price raise: the row's processing failed."""
    odd = Usage("gpt-realtime", 10, 10, price_counts=(("input_audio_tokens", 50),))
    assert cost_compute(OPENAI, odd) == Price()


@pytest.mark.parametrize("provider, model, known", [
    (OPENAI, "gpt-4o-2024-08-06", True),  # a dated name prices as its family
    (OPENAI, "omni-moderation-latest", True),  # no price in any unit: free
    (OPENAI, "whisper-1", False),  # by the hour of audio: its answers have no count the log prices
    (OPENAI, "tts-1", False),  # by the character
    (OPENAI, "dall-e-2", False),
    (GEMINI, "models/gemini-2.0-flash-001", True),
    (GROQ, "llama-3.1-8b-instant", True),
    (OLLAMA, "llama3", False),  # not a genai-prices provider
])
def test_price_known_says_whether_an_answer_of_the_model_would_be_priced(provider, model, known):
    assert price_known(provider, model) is known


def test_price_known_takes_a_price_table_entry_of_zero(settings, tmp_path):
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"ollama": {"llama3": {"input": 0, "output": 0}}}))
    settings.PRICE_TABLE_PATH = str(table)
    assert price_known(OLLAMA, "llama3:latest") and not price_known(OLLAMA, "llama3.2")


def test_a_price_past_any_sane_price_is_skipped_with_a_warning(tmp_path, settings, caplog):
    # 1e30 made Decimal raise in every pricing of the provider's exchanges; 200,000 USD per million tokens is a typo.
    user = tmp_path / "prices.json"
    user.write_text('{"openai": {"gpt-4o": {"input": 1e30, "output": 1}, "o3": {"input": 1, "output": 2,'
                    ' "cached_input": 200000}, "gpt-4.1": {"input": 100000, "output": 2}}}')
    settings.PRICE_TABLE_PATH = str(user)
    assert cost_compute(OPENAI, Usage("gpt-4o", 100, 100)).source == LIBRARY_SOURCE
    assert cost_compute(OPENAI, Usage("o3", 100, 100)).source == LIBRARY_SOURCE
    assert cost_compute(OPENAI, Usage("gpt-4.1", 100, 100)) == Price(Decimal("10.0002"), USER_SOURCE)
    assert sorted(r.getMessage() for r in caplog.records) == [
        f"price table {user}: openai/gpt-4o has a price over $100,000 per million tokens; skipped",
        f"price table {user}: openai/o3 has a price over $100,000 per million tokens; skipped"]
