"""A readable conversation from chat, Responses and Messages payloads: roles, text, tool calls."""

import json
from typing import Any

Turn = dict[str, Any]


def _part(kind: str, **fields: Any) -> dict[str, Any]:
    """One piece of a message."""
    return {"kind": kind, **fields}


def _args(value: Any) -> str:
    """Tool-call arguments as indented JSON when they parse, else as sent."""
    if isinstance(value, str):
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False)


def _content_parts(content: Any) -> list[dict[str, Any]]:
    """Parts of a message content: a string, or a list of typed blocks (any of the three APIs)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [_part("text", text=content)]
    if not isinstance(content, list):
        return [_part("json", text=_args(content))]
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(_part("text", text=block))
            continue
        if not isinstance(block, dict):
            continue
        kind = block.get("type", "")
        if kind in ("text", "input_text", "output_text") or (not kind and "text" in block):
            parts.append(_part("text", text=str(block.get("text", ""))))
        elif kind == "refusal":
            parts.append(_part("text", text=f"(refusal) {block.get('refusal', '')}"))
        elif kind in ("image_url", "input_image", "image"):
            src = block.get("image_url") or block.get("source") or {}
            url = src.get("url") if isinstance(src, dict) else src
            parts.append(_part("image", text=str(url or "")[:200] or "(inline image)"))
        elif kind in ("input_audio", "audio"):
            parts.append(_part("media", text="(audio input)"))
        elif kind == "tool_use":  # Anthropic Messages
            parts.append(_part("tool_call", name=block.get("name", ""), call_id=block.get("id", ""),
                               text=_args(block.get("input"))))
        elif kind == "tool_result":
            parts.append(_part("tool_result", call_id=block.get("tool_use_id", ""),
                               text=_flatten(block.get("content"))))
        else:
            parts.append(_part("json", text=_args(block)))
    return parts


def _flatten(content: Any) -> str:
    """Text of a tool result's content."""
    parts = _content_parts(content)
    return "\n".join(p.get("text", "") for p in parts)


def _chat_message(msg: dict) -> Turn:
    """A chat.completions (or Messages) message."""
    parts = _content_parts(msg.get("content"))
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(_part("tool_call", name=fn.get("name", ""), call_id=call.get("id") or "",
                           text=_args(fn.get("arguments", ""))))
    if msg.get("role") == "tool":
        parts = [_part("tool_result", call_id=msg.get("tool_call_id", ""), text=_flatten(msg.get("content")))]
    return {"role": msg.get("role", "?"), "parts": parts}


def _responses_item(item: Any) -> Turn | None:
    """A Responses API input or output item."""
    if isinstance(item, str):
        return {"role": "user", "parts": [_part("text", text=item)]}
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        return {"role": item.get("role", "assistant"), "parts": _content_parts(item.get("content"))}
    if kind == "function_call":
        return {"role": "assistant", "parts": [_part("tool_call", name=item.get("name", ""),
                                                     call_id=item.get("call_id", ""),
                                                     text=_args(item.get("arguments", "")))]}
    if kind == "function_call_output":
        return {"role": "tool", "parts": [_part("tool_result", call_id=item.get("call_id", ""),
                                                text=str(item.get("output", "")))]}
    if kind == "reasoning":
        summary = " ".join(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
        return {"role": "assistant", "parts": [_part("reasoning", text=summary or "(reasoning)")]}
    return {"role": "assistant", "parts": [_part("json", text=_args(item))]}


def request_turns(payload: Any) -> list[Turn]:
    """The conversation the client sent."""
    if not isinstance(payload, dict):
        return []
    turns: list[Turn] = []
    system = payload.get("system") or payload.get("instructions")
    if system:
        turns.append({"role": "system", "parts": _content_parts(system)})
    if isinstance(payload.get("messages"), list):
        turns += [_chat_message(m) for m in payload["messages"] if isinstance(m, dict)]
    elif "input" in payload:
        items = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        turns += [t for t in (_responses_item(i) for i in items) if t]
    elif isinstance(payload.get("prompt"), str):
        turns.append({"role": "user", "parts": [_part("text", text=payload["prompt"])]})
    return turns


def response_turns(payload: Any) -> list[Turn]:
    """The answer, from a chat completion, a Responses object or a Messages reply."""
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get("choices"), list):
        turns = []
        for choice in payload["choices"]:
            if isinstance(choice.get("message"), dict):
                turn = _chat_message(choice["message"])
            else:
                turn = {"role": "assistant", "parts": [_part("text", text=str(choice.get("text", "")))]}
            turn["finish"] = choice.get("finish_reason")
            turns.append(turn)
        return turns
    if isinstance(payload.get("output"), list):
        turns = [t for t in (_responses_item(i) for i in payload["output"]) if t]
        if turns:
            turns[-1]["finish"] = payload.get("status")
        return turns
    if payload.get("type") == "message" and isinstance(payload.get("content"), list):
        return [{"role": payload.get("role", "assistant"), "parts": _content_parts(payload["content"]),
                 "finish": payload.get("stop_reason")}]
    return []


CONVERSATION_PATHS = ("/chat/completions", "/responses", "/messages", "/completions")


def conversation_build(endpoint: str, request_payload: Any, response_payload: Any) -> list[Turn]:
    """Every turn of the exchange: what was sent, then what came back (marked as the reply)."""
    if not any(p in endpoint for p in CONVERSATION_PATHS):
        return []
    sent = request_turns(request_payload)
    reply = response_turns(response_payload)
    for turn in reply:
        turn["reply"] = True
    return sent + reply if sent or reply else []
