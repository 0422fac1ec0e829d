"""Stream reassembly for non-OpenAI wire formats, and which events carry content (for TTFT).

Each reassembler rebuilds the object the provider would have answered without streaming, so
the same usage reader works on JSON answers and on streams.
"""

import json
from typing import Any

from logs.streams import sse_parse


def _payloads(text: str) -> list[tuple[str | None, Any]]:
    """(event name, parsed JSON data) for every event of a raw SSE text."""
    out = []
    for event in sse_parse(text):
        try:
            out.append((event.get("event"), json.loads(event.get("data") or "null")))
        except ValueError:
            out.append((event.get("event"), None))
    return out


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
    elif kind == "citations_delta":
        block.setdefault("citations", []).append(delta.get("citation"))


def _block_finish(block: dict[str, Any]) -> dict[str, Any]:
    """Turn a tool_use block's streamed JSON fragments into its input object."""
    partial = block.pop("_partial_json", None)
    if partial is not None:
        try:
            block["input"] = json.loads(partial) if partial else {}
        except ValueError:
            block["input_raw"] = partial  # cut-off stream: keep what arrived
    return block


def anthropic_reassemble(text: str) -> dict[str, Any]:
    """Rebuild an Anthropic Message from message_start / content_block_* / message_delta events."""
    events = _payloads(text)
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
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
            blocks[p.get("index", len(blocks))] = block
        elif kind == "content_block_delta" and isinstance(p.get("delta"), dict):
            _block_delta(blocks.setdefault(p.get("index", 0), {"type": "text"}), p["delta"])
        elif kind == "message_delta" and message is not None:
            message.update({k: v for k, v in (p.get("delta") or {}).items() if v is not None})
            # message_delta usage is cumulative: it replaces message_start's counts.
            message["usage"].update({k: v for k, v in (p.get("usage") or {}).items() if v is not None})
        elif kind == "error" and message is not None:
            message["error"] = p.get("error")
    if message is None:
        return {"events": len(events), "result": None}
    message["content"] = [_block_finish(blocks[i]) for i in sorted(blocks)]
    return {"events": len(events), "result": message}


def _parts_merge(parts: list[dict[str, Any]], new: list[Any]) -> None:
    """Append streamed parts, joining consecutive text pieces of the same kind."""
    for part in new:
        if not isinstance(part, dict):
            continue
        last = parts[-1] if parts else None
        if ("text" in part and last is not None and "text" in last
                and bool(last.get("thought")) == bool(part.get("thought"))):
            last["text"] += part["text"]
            if part.get("thoughtSignature"):
                last["thoughtSignature"] = part["thoughtSignature"]
        else:
            parts.append(dict(part))


def gemini_reassemble(text: str) -> dict[str, Any]:
    """Rebuild a GenerateContentResponse from streamed chunks (usageMetadata: the last one)."""
    events = _payloads(text)
    result: dict[str, Any] = {}
    candidates: dict[int, dict[str, Any]] = {}
    for _, p in events:
        if not isinstance(p, dict):
            continue
        for key in ("usageMetadata", "modelVersion", "responseId", "promptFeedback"):
            if p.get(key) is not None:
                result[key] = p[key]
        for cand in p.get("candidates") or []:
            if not isinstance(cand, dict):
                continue
            idx = cand.get("index", 0)
            acc = candidates.setdefault(idx, {"index": idx, "content": {"role": "model", "parts": []}})
            content = cand.get("content") or {}
            if content.get("role"):
                acc["content"]["role"] = content["role"]
            _parts_merge(acc["content"]["parts"], content.get("parts") or [])
            for key, value in cand.items():
                if key not in ("content", "index") and value is not None:
                    acc[key] = value
    if not candidates and not result:
        return {"events": len(events), "result": None}
    result["candidates"] = [candidates[i] for i in sorted(candidates)]
    return {"events": len(events), "result": result}


def openai_event_has_content(name: str | None, payload: Any) -> bool:
    """Chat/completions delta with text, refusal or a tool call; Responses API *.delta events."""
    if not isinstance(payload, dict):
        return False
    kind = payload.get("type") or name or ""
    if isinstance(kind, str) and kind.startswith("response.") and kind.endswith(".delta"):
        return True
    for choice in payload.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        if delta.get("content") or delta.get("refusal") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False


def anthropic_event_has_content(name: str | None, payload: Any) -> bool:
    """The first content_block_delta (text, tool input JSON or thinking)."""
    return isinstance(payload, dict) and payload.get("type") == "content_block_delta"


def gemini_event_has_content(name: str | None, payload: Any) -> bool:
    """A chunk whose candidates hold a non-empty part (text or function call)."""
    if not isinstance(payload, dict):
        return False
    for cand in payload.get("candidates") or []:
        for part in ((cand or {}).get("content") or {}).get("parts") or []:
            if isinstance(part, dict) and (part.get("text") or part.get("functionCall")):
                return True
    return False
