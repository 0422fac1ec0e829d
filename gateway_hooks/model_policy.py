"""Enforces a model allow-list and a max_tokens ceiling (MODEL_POLICY_ALLOW, MODEL_POLICY_MAX_TOKENS).

A model outside the list is refused with a 403 in the provider's own error shape, before
anything goes upstream. A max_tokens above the ceiling is lowered to it (every provider's
field for it: max_tokens, max_completion_tokens, max_output_tokens, Gemini's
generationConfig.maxOutputTokens); a request naming no limit is left as it is (Anthropic's
requires one; the others keep their own defaults).
"""

import fnmatch

from django.conf import settings
from django.http import HttpResponse

TOP_LEVEL_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class ModelPolicy:
    """The hook: reads its settings on every call, so tests and reloads see the current values."""

    blocking = False  # CPU work only: runs on the event loop, no thread hop

    def on_request(self, exchange) -> HttpResponse | None:
        allowed = settings.MODEL_POLICY_ALLOW
        model = exchange.model
        if allowed and model is not None and not any(fnmatch.fnmatchcase(model, pattern) for pattern in allowed):
            return exchange.error_answer(403, f"Model {model!r} is not allowed by this gateway "
                                              f"(allowed: {', '.join(allowed)})", kind="permission_error")
        ceiling = settings.MODEL_POLICY_MAX_TOKENS
        payload = exchange.json
        if ceiling and isinstance(payload, dict):
            lowered = _ceiling_apply(payload, ceiling)
            if lowered:
                exchange.json = payload
                exchange.metadata["max_tokens_lowered"] = lowered
        return None


def _ceiling_apply(payload: dict, ceiling: int) -> dict[str, int]:
    """Lower every token limit above the ceiling, in place; {field: value asked} for each lowered."""
    lowered = {}
    for name in TOP_LEVEL_LIMITS:
        value = payload.get(name)
        if _number(value) and value > ceiling:
            lowered[name] = value
            payload[name] = ceiling
    config = payload.get("generationConfig")
    if isinstance(config, dict):
        value = config.get("maxOutputTokens")
        if _number(value) and value > ceiling:
            lowered["generationConfig.maxOutputTokens"] = value
            config["maxOutputTokens"] = ceiling
    return lowered


def _number(value: object) -> bool:
    """A token limit as JSON gives it: an integer, or a float such as 100000.0 (never a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
