"""Server-sent events: parse the raw event text and reassemble what the stream said."""

from typing import Any

from logs.journal import json_parse

MAX_TOOL_CALLS = 256  # a tool-call index is untrusted input: never grow a list to its size


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


def json_or_none(data: str | None) -> Any:
    """Parse text as JSON; None when it is empty or not JSON (e.g. an SSE [DONE])."""
    if not data:
        return None
    try:
        return json_parse(data)
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
        choice_list = chunk.get("choices")
        for choice in choice_list if isinstance(choice_list, list) else []:
            if not isinstance(choice, dict):  # broken upstreams: skip what is not a choice
                continue
            idx = choice.get("index", 0)
            idx = idx if isinstance(idx, int) else 0
            acc = choices.setdefault(
                idx, {"index": idx, "message": {"role": "assistant", "content": None},
                      "finish_reason": None})
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            msg = acc["message"]
            if isinstance(delta.get("role"), str) and delta["role"]:
                msg["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                msg["content"] = (msg["content"] or "") + delta["content"]
            if isinstance(delta.get("refusal"), str):
                msg["refusal"] = (msg.get("refusal") or "") + delta["refusal"]
            if isinstance(choice.get("text"), str):  # legacy /v1/completions
                acc["text"] = acc.get("text", "") + choice["text"]
            tool_calls = delta.get("tool_calls")
            for call in tool_calls if isinstance(tool_calls, list) else []:
                if not isinstance(call, dict):
                    continue
                calls = msg.setdefault("tool_calls", [])
                cidx = call.get("index", len(calls))
                if not isinstance(cidx, int) or not 0 <= cidx < MAX_TOOL_CALLS:
                    continue
                while len(calls) <= cidx:
                    calls.append({"id": None, "type": "function",
                                  "function": {"name": "", "arguments": ""}})
                slot = calls[cidx]
                if call.get("id"):
                    slot["id"] = call["id"]
                if call.get("type"):
                    slot["type"] = call["type"]
                fn = call.get("function")
                fn = fn if isinstance(fn, dict) else {}
                slot["function"]["name"] += fn["name"] if isinstance(fn.get("name"), str) else ""
                slot["function"]["arguments"] += fn["arguments"] if isinstance(fn.get("arguments"), str) else ""
            if choice.get("finish_reason"):
                acc["finish_reason"] = choice["finish_reason"]
    result["choices"] = [choices[i] for i in sorted(choices)]
    return result


def stream_reassemble(text: str) -> dict[str, Any]:
    """Reassemble an SSE body: chat/completions chunks or the Responses API's final object."""
    events = sse_parse(text)
    payloads = [(e.get("event"), json_or_none(e.get("data"))) for e in events]
    final = None
    chunks = []
    for name, payload in payloads:
        if not isinstance(payload, dict):
            continue
        kind = payload.get("type") or name or ""
        kind = kind if isinstance(kind, str) else ""
        if kind in ("response.completed", "response.failed", "response.incomplete") and isinstance(
            payload.get("response"), dict
        ):
            final = payload["response"]
        elif "choices" in payload or str(payload.get("object", "")).endswith("chunk"):
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
