"""Server-sent events: parse the raw event text and reassemble what the stream said."""

import json
from typing import Any


def sse_parse(text: str) -> list[dict[str, str]]:
    """Split raw SSE text into events ({"event", "data", "id"}); tolerant of broken framing."""
    events: list[dict[str, str]] = []
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, str] = {}
        data_lines: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data_lines.append(value)
            elif field in ("event", "id", "retry"):
                event[field] = value
        if data_lines:
            event["data"] = "\n".join(data_lines)
        if event:
            events.append(event)
    return events


def _json(data: str | None) -> Any:
    """Parse an event's data as JSON; None when it is not JSON (e.g. [DONE])."""
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def chat_chunks_reassemble(payloads: list[dict]) -> dict[str, Any]:
    """Rebuild a chat completion (content, tool calls, finish reason, usage) from its chunks."""
    result: dict[str, Any] = {"object": "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in payloads:
        for key in ("id", "model", "created", "system_fingerprint"):
            if chunk.get(key) is not None:
                result[key] = chunk[key]
        if chunk.get("usage"):
            result["usage"] = chunk["usage"]
        for choice in chunk.get("choices") or []:
            idx = choice.get("index", 0)
            acc = choices.setdefault(
                idx, {"index": idx, "message": {"role": "assistant", "content": None},
                      "finish_reason": None})
            delta = choice.get("delta") or {}
            msg = acc["message"]
            if delta.get("role"):
                msg["role"] = delta["role"]
            if delta.get("content") is not None:
                msg["content"] = (msg["content"] or "") + delta["content"]
            if delta.get("refusal") is not None:
                msg["refusal"] = (msg.get("refusal") or "") + delta["refusal"]
            if "text" in choice:  # legacy /v1/completions
                acc["text"] = acc.get("text", "") + (choice.get("text") or "")
            for call in delta.get("tool_calls") or []:
                calls = msg.setdefault("tool_calls", [])
                cidx = call.get("index", len(calls))
                while len(calls) <= cidx:
                    calls.append({"id": None, "type": "function",
                                  "function": {"name": "", "arguments": ""}})
                slot = calls[cidx]
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]
    result["choices"] = [choices[i] for i in sorted(choices)]
    return result


def stream_reassemble(text: str) -> dict[str, Any]:
    """Reassemble an SSE body: chat/completions chunks or the Responses API's final object."""
    events = sse_parse(text)
    payloads = [(e.get("event"), _json(e.get("data"))) for e in events]
    final = None
    chunks = []
    for name, payload in payloads:
        if not isinstance(payload, dict):
            continue
        kind = payload.get("type") or name or ""
        if kind in ("response.completed", "response.failed", "response.incomplete") and isinstance(
            payload.get("response"), dict
        ):
            final = payload["response"]
        elif "choices" in payload or payload.get("object", "").endswith("chunk"):
            chunks.append(payload)
    out: dict[str, Any] = {"events": len(events)}
    if final is not None:
        out["result"] = final
    elif chunks:
        out["result"] = chat_chunks_reassemble(chunks)
    else:
        return {**out, "result": None}
    return out


def usage_read(obj: Any) -> dict[str, int | None]:
    """Token counts from an OpenAI-style usage object (chat or Responses API naming)."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return {}
    inp = usage.get("prompt_tokens", usage.get("input_tokens"))
    out = usage.get("completion_tokens", usage.get("output_tokens"))
    total = usage.get("total_tokens")
    if total is None and isinstance(inp, int) and isinstance(out, int):
        total = inp + out
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": total}
