"""Cost of an exchange from its token counts and the price table (prices.json here + PRICE_TABLE_PATH).

The table is keyed by provider name, then model: USD per million input, output and cached
input tokens. A user file named in PRICE_TABLE_PATH has the same shape and wins entry by entry;
it is re-read when it changes, so prices can be fixed without a restart.
"""

import json
import logging
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings

from providers import Provider

log = logging.getLogger(__name__)

SHIPPED_TABLE = Path(__file__).with_name("prices.json")
MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # Response.cost_usd has 8 decimal places
PriceTable = dict[str, dict[str, dict[str, Decimal]]]


def _price(value: Any) -> Decimal | None:
    """A non-negative price as a Decimal, None when absent or invalid."""
    if value is None or isinstance(value, bool):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price >= 0 and price.is_finite() else None


def price_table_parse(raw: Any, source: str) -> PriceTable:
    """Validated entries of a price table document; bad entries are skipped with a warning."""
    table: PriceTable = {}
    if not isinstance(raw, dict):
        log.warning("price table %s is not a JSON object; ignored", source)
        return table
    for provider, models in raw.items():
        if provider.startswith("_") or not isinstance(models, dict):
            continue
        for model, entry in models.items():
            if model.startswith("_"):
                continue
            inp, out = _price((entry or {}).get("input")), _price((entry or {}).get("output"))
            if not isinstance(entry, dict) or inp is None or out is None:
                log.warning("price table %s: %s/%s needs numeric input and output; skipped",
                            source, provider, model)
                continue
            cached = _price(entry.get("cached_input"))
            table.setdefault(provider, {})[model] = {"input": inp, "output": out,
                                                     "cached_input": inp if cached is None else cached}
    return table


def _file_read(path: Path) -> PriceTable:
    """One table file, parsed; empty when it cannot be read."""
    try:
        return price_table_parse(json.loads(path.read_text("utf-8")), str(path))
    except (OSError, ValueError) as exc:
        log.warning("price table %s could not be read: %s", path, exc)
        return {}


@lru_cache(maxsize=4)
def _tables_merge(user_path: str, user_mtime: int) -> PriceTable:
    """Shipped table overlaid with the user's (cached until the user file changes)."""
    merged = {provider: dict(models) for provider, models in _file_read(SHIPPED_TABLE).items()}
    if user_path:
        for provider, models in _file_read(Path(user_path)).items():
            merged.setdefault(provider, {}).update(models)
    return merged


def price_table() -> PriceTable:
    """The price table in force now."""
    user_path = str(settings.PRICE_TABLE_PATH or "")
    mtime = 0
    if user_path:
        try:
            mtime = Path(user_path).stat().st_mtime_ns
        except OSError:
            log.warning("PRICE_TABLE_PATH %s does not exist; using the shipped table only", user_path)
            user_path = ""
    return _tables_merge(user_path, mtime)


def price_find(provider: Provider, model: str | None) -> dict[str, Decimal] | None:
    """Prices for a provider's model: the first of its price names (exact, then family) in the table."""
    if not model:
        return None
    models = price_table().get(provider.name) or {}
    for name in provider.price_names(model):
        if name in models:
            return models[name]
    return None


def cost_compute(provider: Provider, model: str | None, input_tokens: int | None, output_tokens: int | None,
                 cached_tokens: int | None) -> Decimal | None:
    """USD cost of one exchange; None when the model is not priced or the counts are unknown."""
    prices = price_find(provider, model)
    if prices is None or input_tokens is None:
        return None
    if output_tokens is None and prices["output"] != 0:
        return None  # an answer without output counts (e.g. a cut stream) has no knowable cost
    cached = min(cached_tokens or 0, input_tokens)
    total = ((input_tokens - cached) * prices["input"] + cached * prices["cached_input"]
             + (output_tokens or 0) * prices["output"]) / MILLION
    return total.quantize(COST_PLACES)
