"""Model and token usage per wire format: read on the log writer thread, never on the event loop.

Every wire format reads the same six things, with one meaning across providers:
  input_tokens      every prompt token the model read, cached ones included
  cached_tokens     the part of input_tokens read from a prompt cache
  output_tokens     every generated token, reasoning ones included (that is how they are billed)
  reasoning_tokens  the part of output_tokens spent thinking
  total_tokens      as the provider reports it, else input + output
Anything the provider did not report stays None (NULL), never 0.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from logs.provider_streams import (anthropic_event_has_content, anthropic_reassemble,
                                   gemini_event_has_content, gemini_reassemble,
                                   openai_event_has_content)
from logs.streams import sse_parse, stream_reassemble, json_or_none

USAGE_FIELDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "total_tokens")
GEMINI_MODEL_RE = re.compile(r"/(?:models|tunedModels)/([^/:]+)")
REPLICATE_MODEL_RE = re.compile(r"/(?:models|deployments)/([^/]+/[^/]+)/predictions")


def _int(obj: Any, *keys: str) -> int | None:
    """The first of `keys` that holds an int in a dict (bools excluded), else None."""
    if not isinstance(obj, dict):
        return None
    for key in keys:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _sub(obj: Any, key: str) -> Any:
    """obj[key] when obj is a dict, else None."""
    return obj.get(key) if isinstance(obj, dict) else None


def _add(*values: int | None) -> int | None:
    """Sum of the known values; None when none is known."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _usage(model: Any, inp: int | None, out: int | None, cached: int | None, reasoning: int | None,
           total: int | None) -> dict[str, Any]:
    """One usage dict, total filled in when the parts are known."""
    if total is None and inp is not None and out is not None:
        total = inp + out
    return {"model": model[:255] if isinstance(model, str) and model else None, "input_tokens": inp,
            "output_tokens": out, "cached_tokens": cached, "reasoning_tokens": reasoning,
            "total_tokens": total}


def openai_usage(obj: Any) -> dict[str, Any]:
    """Chat/completions naming (prompt/completion) and Responses API naming (input/output)."""
    u = _sub(obj, "usage")
    details_in = _sub(u, "prompt_tokens_details") or _sub(u, "input_tokens_details")
    details_out = _sub(u, "completion_tokens_details") or _sub(u, "output_tokens_details")
    return _usage(_sub(obj, "model"), _int(u, "prompt_tokens", "input_tokens"),
                  _int(u, "completion_tokens", "output_tokens"), _int(details_in, "cached_tokens"),
                  _int(details_out, "reasoning_tokens"), _int(u, "total_tokens"))


def anthropic_usage(obj: Any) -> dict[str, Any]:
    """Anthropic's input_tokens excludes cache reads and writes: add them back for one meaning."""
    u = _sub(obj, "usage")
    base = _int(u, "input_tokens")
    read, written = _int(u, "cache_read_input_tokens"), _int(u, "cache_creation_input_tokens")
    inp = base + (read or 0) + (written or 0) if base is not None else None
    return _usage(_sub(obj, "model"), inp, _int(u, "output_tokens"), read, None, None)


def gemini_usage(obj: Any) -> dict[str, Any]:
    """usageMetadata: thoughts are billed as output; tool-use prompt tokens as input."""
    m = _sub(obj, "usageMetadata")
    prompt, tool = _int(m, "promptTokenCount"), _int(m, "toolUsePromptTokenCount")
    candidates, thoughts = _int(m, "candidatesTokenCount"), _int(m, "thoughtsTokenCount")
    total = _int(m, "totalTokenCount")
    inp = _add(prompt, tool) if prompt is not None else None
    out = _add(candidates, thoughts)
    if out is None and total is not None and inp is not None:
        out = total - inp  # Gemini omits candidatesTokenCount when nothing was generated
    return _usage(_sub(obj, "modelVersion"), inp, out, _int(m, "cachedContentTokenCount"), thoughts, total)


def replicate_usage(obj: Any) -> dict[str, Any]:
    """A prediction: language models report token counts in metrics."""
    m = _sub(obj, "metrics")
    model = _sub(obj, "model") or None
    return _usage(model, _int(m, "input_token_count"), _int(m, "output_token_count"), None, None, None)


def body_model(endpoint: str, payload: Any) -> str | None:
    """The model named in a request body."""
    model = _sub(payload, "model")
    return model[:255] if isinstance(model, str) and model else None


def gemini_request_model(endpoint: str, payload: Any) -> str | None:
    """Gemini names the model in the path: /v1beta/models/{model}:generateContent."""
    found = GEMINI_MODEL_RE.search(endpoint)
    return found.group(1)[:255] if found else None


def replicate_request_model(endpoint: str, payload: Any) -> str | None:
    """/v1/models/{owner}/{name}/predictions, else the body's version ("owner/name:hash" or hash)."""
    found = REPLICATE_MODEL_RE.search(endpoint)
    if found:
        return found.group(1)[:255]
    version = _sub(payload, "version")
    if isinstance(version, str) and version:
        return version.split(":", 1)[0][:255]
    return body_model(endpoint, payload)


def body_stream(endpoint: str, payload: Any) -> bool:
    """The client asked for a stream with "stream": true."""
    return _sub(payload, "stream") is True


def gemini_stream(endpoint: str, payload: Any) -> bool:
    """Gemini streams by method name (:streamGenerateContent)."""
    return ":streamGenerateContent" in endpoint


@dataclass(frozen=True)
class Wire:
    """How to read one wire format: requests, JSON answers, streams."""

    name: str
    request_model: Callable[[str, Any], str | None]
    stream_requested: Callable[[str, Any], bool]
    answer_usage: Callable[[Any], dict[str, Any]]
    stream_reassemble: Callable[[str], dict[str, Any]]
    event_has_content: Callable[[str | None, Any], bool]


WIRES: dict[str, Wire] = {w.name: w for w in (
    Wire("openai", body_model, body_stream, openai_usage, stream_reassemble, openai_event_has_content),
    Wire("anthropic", body_model, body_stream, anthropic_usage, anthropic_reassemble,
         anthropic_event_has_content),
    Wire("gemini", gemini_request_model, gemini_stream, gemini_usage, gemini_reassemble,
         gemini_event_has_content),
    # Replicate streams come from a separate stream URL the gateway does not proxy.
    Wire("replicate", replicate_request_model, body_stream, replicate_usage, stream_reassemble,
         openai_event_has_content),
)}


def wire_get(name: str | None) -> Wire:
    """The wire format by name; OpenAI's for records written before providers had one."""
    return WIRES.get(name or "openai", WIRES["openai"])


def ttft_compute(wire: Wire, text: str, offsets: list[float] | None, base_ms: float | None,
                 ttfb_ms: float | None = None) -> float | None:
    """Milliseconds from the request to the first event that carries content.

    The capture stamps every blank-line event terminator it sees in the raw bytes, so the
    i-th "\\n\\n"-terminated block of the text arrived at offsets[i].
    """
    if not offsets or base_ms is None:
        return None
    blocks = text.replace("\r\n", "\n").split("\n\n")  # the capture counts CRLF terminators too
    for i, block in enumerate(blocks[: len(offsets)]):
        for event in sse_parse(block):
            payload = json_or_none(event.get("data"))
            if wire.event_has_content(event.get("event"), payload):
                # Offsets are rounded to 0.1 ms: never report content before the first byte.
                return max(round(base_ms + offsets[i], 2), ttfb_ms or 0.0)
    return None



def usage_fill(resp: Any, wire: Wire, provider: str, parsed: Any) -> None:
    """Set the answering model, token counts and cost on a Response from its parsed answer."""
    from logs.pricing import cost_compute

    found = wire.answer_usage(parsed)
    resp.model = found["model"]
    for name in USAGE_FIELDS:
        setattr(resp, name, found[name])
    resp.cost_usd = cost_compute(provider, resp.model, resp.input_tokens, resp.output_tokens,
                                 resp.cached_tokens)
