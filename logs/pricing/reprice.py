"""Price stored exchanges again: after a genai-prices update or a PRICE_TABLE_PATH change.

Each exchange is priced as of its own start, from the usage its stored answer reports (which
also gives cache writes and the service tier), or from its token columns when the answer is not
stored inline. Rows are read and written in batches by id, so it runs beside a live gateway.
"""

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction

from logs.models import Response
from logs.pricing import cost_compute
from providers import Provider, Usage, registry
from providers.base import usage_counts
from wire.jsonutil import json_or_none


@dataclass
class RepriceResult:
    seen: int = 0
    changed: int = 0


def _stored_answer(resp: Response) -> Any:
    if resp.is_stream:
        return (resp.stream_result or {}).get("result") if isinstance(resp.stream_result, dict) else None
    return json_or_none(resp.body) if resp.body else None


def _usage(resp: Response, provider: Provider) -> Usage:
    """The usage the stored answer reports (a realtime session's sums), or the one the columns kept."""
    session = resp.stream_result.get("session_usage") if isinstance(resp.stream_result, dict) else None
    if isinstance(session, dict):
        return usage_counts(resp.model, session)
    answer = _stored_answer(resp)
    if isinstance(answer, (dict, list)):
        try:
            found = provider.usage(answer)
        except (TypeError, AttributeError, ValueError, KeyError, IndexError):
            found = None
        if found is not None and found.input_tokens is not None:
            return found
    return Usage(resp.model, resp.input_tokens, resp.output_tokens, resp.cached_tokens, resp.reasoning_tokens,
                 resp.total_tokens)


def reprice(*, since: datetime | None = None, dry_run: bool = False, batch: int = 500,
            progress: Callable[[RepriceResult], None] | None = None) -> RepriceResult:
    """Recompute cost_usd (a cache hit's cost_saved_usd) and price_source of every exchange with usage
    (since a date); what changed."""
    providers = registry(settings.GATEWAY_PROVIDERS)
    result = RepriceResult()
    rows = Response.objects.filter(input_tokens__isnull=False).select_related("request").order_by("id")
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    last = None
    while True:
        page = list((rows.filter(id__gt=last) if last is not None else rows)[:batch])
        if not page:
            return result
        last = page[-1].id
        changed = []
        for resp in page:
            provider = providers.get(resp.request.provider)
            usage = _usage(resp, provider)
            if usage.model is None:  # the answer names none (OpenAI's images): the model the request asked for
                usage = replace(usage, model=resp.model or resp.request.model)
            price = cost_compute(provider, usage, at=resp.request.created_at)
            if resp.cache_hit:  # a replay cost nothing (budgets count cost_usd): its price is what it saved
                if (price.cost, price.source) != (resp.cost_saved_usd, resp.price_source):
                    resp.cost_saved_usd, resp.price_source = price.cost, price.source
                    changed.append(resp)
            elif (price.cost, price.source) != (resp.cost_usd, resp.price_source):
                resp.cost_usd, resp.price_source = price.cost, price.source
                changed.append(resp)
        result.seen += len(page)
        result.changed += len(changed)
        if changed and not dry_run:
            with transaction.atomic():
                Response.objects.bulk_update(changed, ["cost_usd", "cost_saved_usd", "price_source"])
        if progress is not None:
            progress(result)
