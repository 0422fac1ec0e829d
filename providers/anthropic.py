"""Anthropic: the Messages API, its event stream and its error shape."""

import json
import re
from typing import Any

from providers import turns
from providers.base import (Payload, Provider, RequestTags, StreamEvent, Turn, Usage, int_of, names_without, str_of,
                            sub, usage_make)

# claude-sonnet-4-20250514 and claude-3-5-haiku-latest price like claude-sonnet-4 / claude-3-5-haiku.
VERSION_SUFFIXES = (re.compile(r"-\d{8}$"), re.compile(r"-latest$"))


def _block_delta(block: dict[str, Any], delta: dict[str, Any]) -> None:
    """Apply one content_block_delta to its block."""
    kind = delta.get("type")
    if kind == "text_delta":
        block["text"] = block.get("text", "") + (delta.get("text") or "")
    elif kind == "input_json_delta":
        block["_partial_json"] = block.get("_partial_json", "") + (delta.get("partial_json") or "")
    elif kind == "thinking_delta":
        block["thinking"] = block.get("thinking", "") + (delta.get("thinking") or "")
    elif kind == "signature_delta":
        block["signature"] = delta.get("signature")
    elif kind == "citations_delta":  # a text block may start with "citations": null
        block["citations"] = [*(block.get("citations") or []), delta.get("citation")]


def _block_finish(block: dict[str, Any]) -> dict[str, Any]:
    """Turn a tool_use block's streamed JSON fragments into its input object."""
    partial = block.pop("_partial_json", None)
    if partial is not None:
        try:
            block["input"] = json.loads(partial) if partial else {}
        except (ValueError, RecursionError):
            block["input_raw"] = partial  # cut-off stream: keep what arrived
    return block


# The error types Anthropic's API answers with (docs.anthropic.com, "Errors").
ERROR_TYPES = frozenset({"invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                         "request_too_large", "rate_limit_error", "api_error", "overloaded_error"})
ERROR_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                        404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                        529: "overloaded_error"}


class Anthropic(Provider):
    name = "anthropic"
    label = "Anthropic"
    prefixes = ("/anthropic/v1/",)
    # A Message Batch names where its results are; the SDK's batches.results() downloads from there.
    link_fields = ("results_url",)
    link_paths = ("/v1/messages/batches",)
    upstream_env = "ANTHROPIC_UPSTREAM_URL"
    upstream_default = "https://api.anthropic.com"
    prices_id = "anthropic"
    credential_headers = ("x-api-key", "authorization")
    stateful_posts = re.compile(r"^/v1/(?:messages/batches|files|skills|organizations)(?:/|$)|/cancel$")
    # Those that run a model: a message (the legacy text completion too) or a batch of them, named in the body.
    model_posts = re.compile(r"^/v1/(?:messages|complete|messages/batches)/?$")
    # Those whose use the log never sees: a batch (its results file is logged, not priced).
    unmetered_posts = re.compile(r"^/v1/messages/batches/?$")
    # Those that run none (token counts, files, skills, cancels, the administration API). Agents, sessions and
    # deployments' runs run models the gateway cannot read: not here.
    free_posts = re.compile(r"^/v1/(?:messages/count_tokens|files|skills(?:/[^/]+/versions)?|organizations/.+"
                            r"|vaults(?:/.+)?|memory_stores(?:/.+)?)/?$|/(?:cancel|archive)/?$")
    answer_headers = ("anthropic-version", "anthropic-beta")  # a beta turns on features (tools, caching, context)

    def credential_pair(self, credential: str) -> tuple[str, str]:
        """Its SDK's own header."""
        return "x-api-key", credential

    def error_body(self, message: str, *, kind: str = "gateway_error", status: int = 500) -> bytes:
        """{"type": "error", "error": {type, message}}, the type one of Anthropic's own: the one Anthropic gives
        the status when it has one (a refusal's generic invalid_request_error on a 413 is request_too_large),
        else the kind when it is Anthropic's, else the one for the status class."""
        kind = ERROR_TYPE_OF_STATUS.get(status) or (kind if kind in ERROR_TYPES else self.error_kind(status))
        return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()

    def stream_ended(self, tail: bytes) -> bool:
        """Anthropic's stream ends with message_stop."""
        return b"message_stop" in tail

    def stream_cut(self, tail: bytes, result: Payload) -> bool:
        """A Messages stream that ended before message_stop (one that reported its own error is not judged)."""
        return isinstance(result, dict) and not result.get("error") and not self.stream_ended(tail)

    def error_kind(self, status: int) -> str:
        """The type Anthropic gives a status (its 500 and other server errors: api_error)."""
        return ERROR_TYPE_OF_STATUS.get(status) or ("api_error" if status >= 500 else "invalid_request_error")

    def content_policy_answer(self, endpoint: str, query: str, payload: Payload) -> tuple[int, str, bytes]:
        """Anthropic's refusal by its content filter: a 400 invalid_request_error (the SDK raises BadRequestError)."""
        return 400, "application/json", self.error_body("Output blocked by content filtering policy",
                                                        kind="invalid_request_error", status=400)

    def batch_models(self, endpoint: str, payload: Payload) -> list[str | None] | None:
        """POST /v1/messages/batches: each request's params name its model."""
        if not endpoint.rstrip("/").endswith("/messages/batches") or not isinstance(payload, dict):
            return None
        requests = payload.get("requests")
        return [str_of(sub(r, "params"), "model") for r in requests] if isinstance(requests, list) else [None]

    def request_tags(self, endpoint: str, payload: Payload) -> RequestTags:
        """Messages API: `metadata.user_id` names the end user (its only metadata field)."""
        return RequestTags(user=str_of(sub(payload, "metadata"), "user_id"))

    def usage(self, answer: Payload) -> Usage:
        """Anthropic's input_tokens excludes cache reads and writes: they are added back for one meaning."""
        u = sub(answer, "usage")
        base = int_of(u, "input_tokens")
        read, written = int_of(u, "cache_read_input_tokens"), int_of(u, "cache_creation_input_tokens")
        inp = base + (read or 0) + (written or 0) if base is not None else None
        # Batch results say service_tier "batch" (half price); "priority" has its own prices.
        tier = sub(u, "service_tier")
        context = (("processing", "batch"),) if tier == "batch" else (
            (("service_tier", tier),) if isinstance(tier, str) and tier and tier != "standard" else ())
        # The part of the cache write kept an hour (dearer than 5 minutes'), and server-side web searches.
        priced = {"cache_write_1h_tokens": int_of(sub(u, "cache_creation"), "ephemeral_1h_input_tokens"),
                  "web_searches": int_of(sub(u, "server_tool_use"), "web_search_requests")}
        return usage_make(sub(answer, "model"), inp, int_of(u, "output_tokens"), read, cache_write=written,
                          priced=priced, price_context=context,
                          parts={"input_tokens": {"input_tokens": base, "cache_read_input_tokens": read,
                                                  "cache_creation_input_tokens": written}})

    def stream_reassemble(self, events: list[StreamEvent]) -> Payload:
        """A Message rebuilt from message_start / content_block_* / message_delta events."""
        message: dict[str, Any] | None = None
        blocks: dict[int, dict[str, Any]] = {}
        counted = False  # a message_delta brought the output count
        for _, p in events:
            if not isinstance(p, dict):
                continue
            kind = p.get("type")
            if kind == "message_start" and isinstance(p.get("message"), dict):
                message = {**p["message"], "content": []}
                message["usage"] = dict(message.get("usage") or {})
            elif kind == "content_block_start" and isinstance(p.get("content_block"), dict):
                block = dict(p["content_block"])
                if block.get("type") in ("tool_use", "server_tool_use"):
                    block["_partial_json"] = ""  # the input arrives as JSON fragments
                index = p.get("index", len(blocks))
                blocks[index if isinstance(index, int) else len(blocks)] = block
            elif kind == "content_block_delta" and isinstance(p.get("delta"), dict):
                index = p.get("index", 0)
                _block_delta(blocks.setdefault(index if isinstance(index, int) else 0, {"type": "text"}), p["delta"])
            elif kind == "message_delta" and message is not None:
                message.update({k: v for k, v in (sub(p, "delta") or {}).items() if v is not None})
                # message_delta usage is cumulative: it replaces message_start's counts.
                message["usage"].update({k: v for k, v in (sub(p, "usage") or {}).items() if v is not None})
                counted = True
            elif kind == "error" and message is not None:
                message["error"] = p.get("error")
        if message is None:
            return None
        if not counted:  # message_start's output_tokens is a placeholder (1): a cut stream's count is unknown
            message["usage"]["output_tokens"] = None
        message["content"] = [_block_finish(blocks[i]) for i in sorted(blocks)]
        return message

    def event_has_content(self, name: str | None, payload: Payload) -> bool:
        """The first content_block_delta (text, tool input JSON or thinking)."""
        return isinstance(payload, dict) and payload.get("type") == "content_block_delta"

    def conversation(self, endpoint: str, request: Payload, answer: Payload) -> list[Turn]:
        """The Messages API: system, messages, and the reply's content blocks."""
        if "/messages" not in endpoint:
            return []
        sent: list[Turn] = []
        if isinstance(request, dict):
            sent = turns.system_turn(request)
            messages = request.get("messages")
            sent += [turns.chat_message(m) for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        reply: list[Turn] = []
        if isinstance(answer, dict) and answer.get("type") == "message" and isinstance(answer.get("content"), list):
            reply = [{"role": answer.get("role", "assistant"), "parts": turns.content_parts(answer["content"]),
                      "finish": answer.get("stop_reason")}]
        return turns.exchange_turns(sent, reply)

    def price_names(self, model: str) -> list[str]:
        """The name, then its family without the date or -latest."""
        return names_without(model, VERSION_SUFFIXES)
