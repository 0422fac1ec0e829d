"""The price table and cost computation."""

import json
import os
from decimal import Decimal

import pytest

from logs.pricing import SHIPPED_TABLE, cost_compute, price_find, price_table
from providers import registry

M = Decimal(1_000_000)
OPENAI = registry().get("openai")


GROQ = registry(["groq=https://api.groq.com/openai"]).get("groq")


def _p(name: str):
    """A built-in provider by name."""
    return registry().get(name)


def test_shipped_table_is_valid_and_dated():
    raw = json.loads(SHIPPED_TABLE.read_text())
    for provider in ("openai", "anthropic", "gemini"):
        for model, entry in raw[provider].items():
            assert entry["input"] >= 0 and entry["output"] >= 0, model
            assert len(entry["checked"]) == 10 and entry["checked"][4] == "-", model  # YYYY-MM-DD
    assert len(price_table()["openai"]) == len(raw["openai"])  # nothing was dropped as invalid


@pytest.mark.parametrize("provider, model, base", [
    ("openai", "gpt-4o-mini", "gpt-4o-mini"),
    ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
    ("gemini", "gemini-2.0-flash-001", "gemini-2.0-flash"),
    ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
])
def test_versioned_names_price_like_their_family(provider, model, base):
    assert price_find(_p(provider), model) is price_table()[provider][base]


@pytest.mark.parametrize("provider, model, names", [
    ("openai", "gpt-4o-mini-2024-07-18", ["gpt-4o-mini-2024-07-18", "gpt-4o-mini"]),
    ("anthropic", "claude-sonnet-4-20250514", ["claude-sonnet-4-20250514", "claude-sonnet-4"]),
    ("gemini", "models/gemini-2.5-pro-preview-05-06", ["gemini-2.5-pro-preview-05-06", "gemini-2.5-pro"]),
    ("openai", "gpt-4o", ["gpt-4o"]),
])
def test_price_names_are_the_name_then_its_family(provider, model, names):
    assert _p(provider).price_names(model) == names


def test_unknown_model_or_provider_has_no_price():
    assert price_find(OPENAI, "gpt-imaginary") is None
    assert price_find(GROQ, "gpt-4o-mini") is None  # prices are per provider
    assert price_find(OPENAI, None) is None
    assert cost_compute(OPENAI, "gpt-imaginary", 10, 10, 0) is None


def test_cost_with_cached_tokens():
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million.
    cost = cost_compute(OPENAI, "gpt-4o", 1000, 200, 600)
    assert cost == (400 * Decimal("2.5") + 600 * Decimal("1.25") + 200 * 10) / M


def test_cost_needs_the_counts():
    assert cost_compute(OPENAI, "gpt-4o", None, 5, None) is None
    assert cost_compute(OPENAI, "gpt-4o", 5, None, None) is None  # output unknown: cost unknown
    # Embeddings have no output; their price has none either.
    assert cost_compute(OPENAI, "text-embedding-3-small", 1_000_000, None, None) == Decimal("0.02")


def test_user_table_extends_and_overrides(tmp_path, settings):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({
        "groq": {"llama-3.3-70b-versatile": {"input": 0.59, "output": 0.79, "checked": "2026-01-01"}},
        "openai": {"gpt-4o": {"input": 1, "output": 2}},
    }))
    settings.PRICE_TABLE_PATH = str(user)
    assert cost_compute(GROQ, "llama-3.3-70b-versatile", 100, 100, None) == (
        100 * Decimal("0.59") + 100 * Decimal("0.79")) / M
    # An override without cached_input prices cached tokens as input.
    assert cost_compute(OPENAI, "gpt-4o", 100, 0, 50) == 100 / M
    assert price_find(OPENAI, "gpt-4o-mini") is not None  # the rest of the shipped table stays


def test_user_table_change_is_picked_up(tmp_path, settings):
    user = tmp_path / "prices.json"
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": 1, "output": 1}}}))
    settings.PRICE_TABLE_PATH = str(user)
    assert price_find(OPENAI, "gpt-4o")["input"] == 1
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": 3, "output": 1}}}))
    stat = user.stat()
    os.utime(user, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert price_find(OPENAI, "gpt-4o")["input"] == 3


def test_bad_user_table_falls_back_to_shipped(tmp_path, settings, caplog):
    user = tmp_path / "prices.json"
    user.write_text("{not json")
    settings.PRICE_TABLE_PATH = str(user)
    assert price_find(OPENAI, "gpt-4o")["input"] == Decimal("2.5")
    assert "could not be read" in caplog.text
    user.write_text(json.dumps({"openai": {"gpt-4o": {"input": "cheap", "output": 1}, "x": {"input": -1, "output": 1}}}))
    os.utime(user, ns=(user.stat().st_atime_ns, user.stat().st_mtime_ns + 2_000_000_000))
    assert price_find(OPENAI, "gpt-4o")["input"] == Decimal("2.5") and price_find(OPENAI, "x") is None
    settings.PRICE_TABLE_PATH = str(tmp_path / "missing.json")
    assert price_find(OPENAI, "gpt-4o") is not None
