"""Enforces a model allow-list and a max_tokens ceiling (MODEL_POLICY_ALLOW, MODEL_POLICY_MAX_TOKENS).

A model outside the list is refused with a 403 in the provider's own error shape, before
anything goes upstream. A max_tokens above the ceiling is lowered to it (every provider's
field for it: max_tokens, max_completion_tokens, max_output_tokens, Gemini's
generationConfig.maxOutputTokens in either spelling, each request of an Anthropic batch), and an
Anthropic thinking budget with it, which must stay below max_tokens; a request naming no limit is left as it is (Anthropic's requires one; the others keep their own
defaults). A batch is refused when a model of it is not allowed, or cannot be read (OpenAI's
name theirs in an uploaded file); so is a realtime session that names no model (the upstream would
choose one). Gemini Live names its model in its first message: on_session_model judges it there,
before the gateway opens the upstream; it judges as well every later client message asking for a model (OpenAI
Realtime's session.update, a second setup), which is refused before it goes upstream.
"""

import fnmatch

from django.conf import settings
from django.http import HttpResponse

TOP_LEVEL_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Anthropic's extended thinking: its budget_tokens must stay below max_tokens (else a 400) and at least this.
THINKING_BUDGET_MIN = 1024
# Gemini's REST API takes its config in either spelling.
GEMINI_LIMITS = (("generationConfig", "maxOutputTokens"), ("generation_config", "max_output_tokens"))


class ModelPolicy:
    """The hook: reads its settings on every call, so tests and reloads see the current values."""

    blocking = False  # CPU work only: runs on the event loop, no thread hop

    def on_request(self, exchange) -> HttpResponse | None:
        allowed = settings.MODEL_POLICY_ALLOW
        if allowed:
            refusal = _refusal(exchange, allowed)
            if refusal:
                return exchange.error_answer(403, f"{refusal} (allowed: {', '.join(allowed)})", kind="permission_error")
        ceiling = settings.MODEL_POLICY_MAX_TOKENS
        payload = exchange.json
        if ceiling and isinstance(payload, dict):
            lowered = _ceiling_apply(payload, ceiling)
            requests = payload.get("requests")  # a batch of Anthropic's: each request's params
            for i, request in enumerate(requests if isinstance(requests, list) else []):
                params = request.get("params") if isinstance(request, dict) else None
                if isinstance(params, dict):
                    lowered.update({f"requests[{i}].params.{k}": v for k, v in _ceiling_apply(params, ceiling).items()})
            if lowered:
                exchange.json = payload
                exchange.metadata["max_tokens_lowered"] = lowered
        return None

    def on_session_model(self, exchange) -> str | None:
        """A realtime session's client message asking for a model (Gemini Live's setup, OpenAI Realtime's
        session.update): refused as a request naming it is."""
        allowed = settings.MODEL_POLICY_ALLOW
        if not allowed:
            return None
        if exchange.model is None:  # names none, or not for sure (a key repeated): the upstream's choice
            return "This realtime session's message names no model the gateway can read, so it is refused"
        refusal = _refusal(exchange, allowed)
        return f"{refusal} (allowed: {', '.join(allowed)})" if refusal else None


def _refusal(exchange, allowed: list[str]) -> str:
    """Why the request's model (a batch's each) is refused, or ""."""
    batch = exchange.batch_models
    if batch is not None:
        if not batch:
            return "This batch's models are in its uploaded file, which the gateway does not read, so it is refused"
        if None in batch:
            return "A request of this batch names no model the gateway can read, so it is refused"
    if exchange.websocket and exchange.model is None and not exchange.model_in_first_message:
        return "This realtime session names no model in its upgrade (the upstream would choose one), so it is refused"
    models = batch if batch is not None else [exchange.model]
    refused = next((m for m in models if m is not None and not any(fnmatch.fnmatchcase(m, p) for p in allowed)), None)
    return f"Model {refused!r} is not allowed by this gateway" if refused is not None else ""


def _ceiling_apply(payload: dict, ceiling: int) -> dict[str, int]:
    """Lower every token limit above the ceiling, in place; {field: value asked} for each lowered."""
    lowered = {}
    for name in TOP_LEVEL_LIMITS:
        value = payload.get(name)
        if _number(value) and value > ceiling:
            lowered[name] = value
            payload[name] = ceiling
    budget = payload.get("thinking")
    value = budget.get("budget_tokens") if isinstance(budget, dict) else None
    max_tokens = payload.get("max_tokens")
    if "max_tokens" in lowered and _number(value) and value >= max_tokens >= THINKING_BUDGET_MIN + 1:
        # The thinking comes out of max_tokens: a budget left above the lowered limit made Anthropic refuse the
        # request (400). Below the minimum budget there is no room to lower it to; the upstream judges (with
        # interleaved thinking the budget may exceed max_tokens).
        lowered["thinking.budget_tokens"] = value
        budget["budget_tokens"] = max_tokens - 1
    for config_name, name in GEMINI_LIMITS:
        config = payload.get(config_name)
        value = config.get(name) if isinstance(config, dict) else None
        if _number(value) and value > ceiling:
            lowered[f"{config_name}.{name}"] = value
            config[name] = ceiling
    return lowered


def _number(value: object) -> bool:
    """A token limit as JSON gives it: an integer, or a float such as 100000.0 (never a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
