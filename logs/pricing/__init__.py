"""Cost of an exchange: the genai-prices library, overridden entry by entry by PRICE_TABLE_PATH.

genai-prices (pydantic's maintained price data, installed with the gateway) knows each
provider's prices over time, cache read and write prices, long-context tiers and service tiers
(flex, priority, batch); an exchange is priced as of the day it was made. A JSON file named in
PRICE_TABLE_PATH holds private or negotiated prices: an entry there wins over the library for
its provider and model. Each priced exchange records which of the two priced it
(responses.price_source); `manage.py reprice_logs` prices stored exchanges again after an update.

PRICE_TABLE_PATH's shape, USD per million tokens (cached_input and cache_write_input optional,
defaulting to input):
  {"openai": {"gpt-4o": {"input": 2.5, "output": 10, "cached_input": 1.25}}}
It is re-read when it changes, so prices can be fixed without a restart.
"""

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import data_snapshot as price_data
from genai_prices import types as price_types
from django.conf import settings

from providers import Provider, Usage

log = logging.getLogger(__name__)

MILLION = Decimal(1_000_000)
COST_PLACES = Decimal("0.00000001")  # Response.cost_usd has 8 decimal places
COST_LIMIT = Decimal(10) ** 6  # ... of its 14 digits: a cost must stay under $1,000,000, else the row is refused
# The dearest price a PRICE_TABLE_PATH entry may give, USD per million tokens (the dearest models cost hundreds):
# past it the entry is a typo, and an absurd one (1e30) cannot even be computed with (Decimal raises).
PRICE_LIMIT = Decimal(100_000)
LIBRARY_SOURCE = f"genai-prices {genai_prices.__version__}"
USER_SOURCE = "PRICE_TABLE_PATH"
PriceTable = dict[str, dict[str, dict[str, Decimal]]]


@dataclass(frozen=True, slots=True)
class Price:
    """An exchange's cost and what priced it; both None when it could not be priced, and note then says why
    when the answer's usage is at fault (the exchange's row keeps it)."""

    cost: Decimal | None = None
    source: str | None = None
    note: str = ""


UNPRICED = Price()


def _price(value: Any) -> Decimal | None:
    """A non-negative price as a Decimal, None when absent or invalid."""
    if value is None or isinstance(value, bool):
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None  # finite first: NaN raises when compared


def price_table_parse(raw: Any, source: str) -> PriceTable:
    """Validated entries of a price table document; bad entries are skipped with a warning."""
    table: PriceTable = {}
    if not isinstance(raw, dict):
        log.warning("price table %s is not a JSON object; ignored", source)
        return table
    for provider, models in raw.items():
        if provider.startswith("_"):
            continue
        if not isinstance(models, dict):
            log.warning("price table %s: %s needs an object of models; skipped", source, provider)
            continue
        for model, entry in models.items():
            if model.startswith("_"):
                continue
            # An entry that is not an object (a bare price, "gpt-4o": 2.5) is skipped like one without numbers:
            # read with .get(), it raised in the pricing of every exchange and in every budgeted key's check.
            fields = entry if isinstance(entry, dict) else {}
            inp, out = _price(fields.get("input")), _price(fields.get("output"))
            if inp is None or out is None:
                log.warning("price table %s: %s/%s needs numeric input and output; skipped",
                            source, provider, model)
                continue
            cached, written = _price(entry.get("cached_input")), _price(entry.get("cache_write_input"))
            if any(p is not None and p > PRICE_LIMIT for p in (inp, out, cached, written)):
                log.warning("price table %s: %s/%s has a price over $%s per million tokens; skipped",
                            source, provider, model, f"{PRICE_LIMIT:,}")
                continue
            table.setdefault(provider, {})[model] = {"input": inp, "output": out,
                                                     "cached_input": inp if cached is None else cached,
                                                     "cache_write_input": inp if written is None else written}
    return table


@lru_cache(maxsize=4)
def _user_table(path: str, mtime: int) -> PriceTable:
    """The user's table (cached until the file changes)."""
    try:
        return price_table_parse(json.loads(Path(path).read_text("utf-8")), path)
    except (OSError, ValueError) as exc:
        log.warning("price table %s could not be read: %s", path, exc)
        return {}


_missing = {"path": ""}  # the PRICE_TABLE_PATH last found missing: said once, not on every exchange priced


def price_table() -> PriceTable:
    """The PRICE_TABLE_PATH table in force now (empty when unset)."""
    path = str(settings.PRICE_TABLE_PATH or "")
    if not path:
        return {}
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        if _missing["path"] != path:  # was one console line per exchange priced, for as long as it was missing
            _missing["path"] = path
            log.warning("PRICE_TABLE_PATH %s does not exist; genai-prices only until it does", path)
        return {}
    _missing["path"] = ""  # found: a later removal is said again
    return _user_table(path, mtime)


def price_table_problem() -> str:
    """Why PRICE_TABLE_PATH, when set, gives no price ("" when it is unset or usable): the gateway
    goes on with genai-prices alone (and warns), reprice_logs must not (it would rewrite them)."""
    path = str(settings.PRICE_TABLE_PATH or "")
    if not path:
        return ""
    try:
        json.loads(Path(path).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return f"PRICE_TABLE_PATH {path} could not be read: {exc}"
    # The table in force (parsed once per change of the file): its skipped entries are warned about once.
    return "" if price_table() else f"PRICE_TABLE_PATH {path} holds no usable price"


def price_find(provider: Provider, model: str | None) -> dict[str, Decimal] | None:
    """PRICE_TABLE_PATH's prices for a provider's model: the first of its price names there."""
    if not model:
        return None
    models = price_table().get(provider.name) or {}
    for name in provider.price_names(model):
        if name in models:
            return models[name]
    return None


def _table_cost(prices: dict[str, Decimal], usage: Usage) -> Decimal:
    inp = usage.input_tokens or 0
    cached = min(usage.cached_tokens or 0, inp)
    written = min(usage.cache_write_tokens or 0, inp - cached)
    total = ((inp - cached - written) * prices["input"] + cached * prices["cached_input"]
             + written * prices["cache_write_input"] + (usage.output_tokens or 0) * prices["output"]) / MILLION
    return total.quantize(COST_PLACES)


def _library_cost(provider: Provider, usage: Usage, at: datetime) -> Decimal | None:
    """genai-prices' price for the usage, trying the provider's price names in turn; None when unknown."""
    counts = (usage.input_tokens or 0, usage.output_tokens or 0, usage.cached_tokens or 0,
              usage.cache_write_tokens or 0, usage.price_counts)
    context = tuple(sorted(dict(usage.price_context).items()))
    snapshot = price_data.get_snapshot()
    for name in provider.price_names(usage.model):
        try:
            _, model = snapshot.find_provider_model(name, None, provider.prices_id, None)
        except LookupError:
            continue
        key = (provider.prices_id, id(model), counts, context, _prices_in_force(model, at))
        memo = _MEMO.get(key)
        if memo is not None and memo[0] is model:
            return memo[1]
        try:
            calc = genai_prices.calc_price(_library_usage(counts), name, provider_id=provider.prices_id,
                                           genai_request_timestamp=at, price_context=dict(context) or None)
        except ValueError as exc:  # counts it cannot reconcile (a part larger than its whole): unpriced, said once
            if _first_unpriceable(name, str(exc)):
                log.warning("genai-prices could not price %s with %s: %s", name, counts, exc)
            return None
        cost = calc.total_price.quantize(COST_PLACES)
        if len(_MEMO) >= MEMO_MAX:
            _MEMO.clear()
        _MEMO[key] = (model, cost)
        return cost
    return None


def _library_usage(counts: tuple) -> genai_prices.Usage:
    """genai-prices' Usage of the counts. Where a part of the input is audio or images and part of it was
    read from a cache, genai-prices wants the cached part's share of them too: 0 unless reported."""
    inp, out, cached, written, priced = counts
    extra = dict(priced)
    if cached:
        for media in ("audio", "image"):
            if f"input_{media}_tokens" in extra:
                extra.setdefault(f"cache_{media}_read_tokens", 0)
    return genai_prices.Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached,
                              cache_write_tokens=written, **extra)


_UNPRICEABLE: set[tuple[str, str]] = set()


def _first_unpriceable(name: str, reason: str) -> bool:
    key = (name, reason)
    if key in _UNPRICEABLE or len(_UNPRICEABLE) > 1000:
        return False
    _UNPRICEABLE.add(key)
    return True


# genai-prices' calc_price is generic (unit registry, validation, a PriceCalculation) and was a
# quarter of the ingest's CPU per exchange; a price depends only on the model, the counts, the
# context and which of the model's dated or timed prices are in force, so equal inputs are priced
# once (the provider is part of the key: a model reached through another provider's fallback
# ignores the context). It pays off for answers replayed from the response cache (the same usage each time) and
# for repeated calls; other exchanges are priced as before.
MEMO_MAX = 4096
_MEMO: dict[tuple, tuple[Any, Decimal]] = {}


def _prices_in_force(model: Any, at: datetime) -> tuple[bool, ...]:
    """Which of a genai-prices model's conditional prices and variants apply at `at` (empty: it has none)."""
    conditional = () if isinstance(model.prices, price_types.ModelPrice) else model.prices
    return tuple(c.constraint is None or c.constraint.active(at)
                 for c in (*conditional, *(model.price_variants or ())))


def cost_compute(provider: Provider, usage: Usage, *, at: datetime | None = None) -> Price:
    """USD cost of one exchange as of `at` (its start; now when None), and what priced it.

    Unpriced when the model is unknown to both sources or the counts are: an answer without its
    output count (a cut stream) has no knowable cost, nor one reporting counts that are not token counts,
    nor one whose cost would not fit the log's column (noted, with the row stored).
    """
    if usage.refused:
        return Price(note=f"cost unknown: the answer's usage has counts that are not token counts: "
                          f"{', '.join(usage.refused)}")
    if not usage.model or usage.input_tokens is None:
        return UNPRICED
    prices = price_find(provider, usage.model)
    if prices is not None:
        if usage.output_tokens is None and prices["output"] != 0:
            return UNPRICED
        return _fitting(Price(_table_cost(prices, usage), USER_SOURCE))
    if provider.prices_id is None or usage.output_tokens is None and not _output_free(provider, usage, at):
        return UNPRICED
    cost = _library_cost(provider, usage, at or datetime.now(timezone.utc))
    return UNPRICED if cost is None else _fitting(Price(cost, LIBRARY_SOURCE))


def _fitting(price: Price) -> Price:
    """The price, or unpriced with a note when its cost does not fit the log's column (the database would refuse
    the row: the exchange kept aside, missing from the log)."""
    if price.cost is not None and price.cost >= COST_LIMIT:
        return Price(note=f"cost unknown: {price.cost:,.2f} USD by {price.source} is past what the log "
                          f"stores (under {COST_LIMIT:,} USD)")
    return price


def _output_free(provider: Provider, usage: Usage, at: datetime | None) -> bool:
    """Whether the model's output costs nothing (embeddings): then a missing output count is no obstacle."""
    probe = Usage(usage.model, 0, 1_000_000, price_context=usage.price_context)
    return _library_cost(provider, probe, at or datetime.now(timezone.utc)) == 0


# Whether a provider's model is priced, by (provider, model): (UTC day, the PRICE_TABLE_PATH table it was read
# with, the answer). Asked for every request of a key with a budget (proxy/key_policy.py): the answer is worked out
# once a day per model and table, and a request pays a dictionary read (the day's work was 7 us a request).
_KNOWN: dict[tuple[str, str], tuple[int, PriceTable | None, bool]] = {}
_DAY = 86400


def price_known(provider: Provider, model: str) -> bool:
    """Whether an answer of this provider's model would be priced now, by the sources the ingest prices it with
    (PRICE_TABLE_PATH's entry, a price of 0 included, else genai-prices): a key with a budget runs no other."""
    table = price_table() or None  # the same object until the file changes (an empty table: None)
    day = int(time.time() // _DAY)
    memo = _KNOWN.get((provider.name, model))
    if memo is not None and memo[0] == day and memo[1] is table:
        return memo[2]
    known = _price_known(provider, model)
    if len(_KNOWN) >= MEMO_MAX:  # the model is the client's word: the memo stays bounded
        _KNOWN.clear()
    _KNOWN[(provider.name, model)] = (day, table, known)
    return known


def _price_known(provider: Provider, model: str) -> bool:
    if price_find(provider, model) is not None:
        return True
    if provider.prices_id is None:
        return False
    # Priced as the ingest prices an answer: a probe usage of both input and output, as of now. A cost of 0 is
    # a price only for a model that has none at all (moderation is free); whisper-1 (by the hour of audio) and
    # tts-1 (by the character) cost 0 by their tokens, and the log never counts their hours or characters.
    cost = _library_cost(provider, Usage(model, 1000, 1000), datetime.now(timezone.utc))
    return cost is not None and (cost > 0 or _library_free(provider, model))


def _library_free(provider: Provider, model: str) -> bool:
    """Whether genai-prices gives the model no price in any unit (it costs nothing)."""
    snapshot = price_data.get_snapshot()
    for name in provider.price_names(model):
        try:
            _, found = snapshot.find_provider_model(name, None, provider.prices_id, None)
        except LookupError:
            continue
        prices = [found.prices] if isinstance(found.prices, price_types.ModelPrice) else [c.prices for c in found.prices]
        return not any(value for price in prices for value in vars(price).values())
    return False
