"""Pieces of a readable conversation that several providers' payloads share (content blocks, tool calls)."""

import json
from typing import Any

from providers.base import Turn


# Inline images a page may show as <img>: raster types only (an SVG is a document, not a picture).
INLINE_IMAGE_PREFIXES = tuple(f"data:image/{t};base64," for t in ("png", "jpeg", "jpg", "gif", "webp"))


def part(kind: str, **fields: Any) -> dict[str, Any]:
    """One piece of a message: text, image, media, tool_call, tool_result, reasoning or json."""
    return {"kind": kind, **fields}


def args_text(value: Any) -> str:
    """Tool-call arguments as indented JSON when they parse, else as sent."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    text = json.dumps(value, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an escaped lone surrogate ("\ud800"): shown as its escape, as sent
        text = json.dumps(value, indent=2)
    return text


def content_parts(content: Any) -> list[dict[str, Any]]:
    """Parts of a message content: a string, or a list of typed blocks (OpenAI chat, Responses, Anthropic)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [part("text", text=content)]
    if not isinstance(content, list):
        return [part("json", text=args_text(content))]
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(part("text", text=block))
        elif isinstance(block, dict):
            parts.append(_block_part(block))
    return parts


def _block_part(block: dict) -> dict[str, Any]:
    """One typed content block."""
    kind = block.get("type", "")
    if kind in ("text", "input_text", "output_text") or (not kind and "text" in block):
        return part("text", text=str(block.get("text", "")))
    if kind == "refusal":
        return part("text", text=f"(refusal) {block.get('refusal', '')}")
    if kind in ("image_url", "input_image", "image"):
        src = block.get("image_url") or block.get("source") or {}
        url = src.get("url") if isinstance(src, dict) else src
        if isinstance(src, dict) and src.get("type") == "base64" and isinstance(src.get("data"), str):  # Anthropic
            url = f"data:{src.get('media_type', '')};base64,{src['data']}"
        url = str(url or "")
        if url.lower().startswith(INLINE_IMAGE_PREFIXES):  # shown as the image, not as base64 text
            return part("image", text=f"(inline image, {len(url) * 3 // 4 // 1024:,} KB)", data_url=url)
        return part("image", text=url[:200] or "(inline image)")
    if kind in ("input_audio", "audio"):
        return part("media", text="(audio input)")
    if kind in ("tool_use", "server_tool_use"):  # Anthropic Messages (server_tool_use: its own web search...)
        return part("tool_call", name=block.get("name", ""), call_id=block.get("id", ""),
                    text=args_text(block.get("input")))
    if kind == "tool_result" or kind.endswith("_tool_result"):  # web_search_tool_result, code_execution_...
        return part("tool_result", call_id=block.get("tool_use_id", ""), text=flatten(block.get("content")))
    if kind == "web_search_result":  # its title and page (not its encrypted content)
        return part("text", text=f"{block.get('title', '')} {block.get('url', '')}".strip())
    if kind == "thinking":
        return part("reasoning", text=str(block.get("thinking", "")))
    if kind == "redacted_thinking":
        return part("reasoning", text="(redacted thinking)")
    return part("json", text=args_text(block))


def flatten(content: Any) -> str:
    """Text of a tool result's content."""
    return "\n".join(p.get("text", "") for p in content_parts(content))


def chat_message(msg: dict) -> Turn:
    """A chat.completions message (Anthropic's Messages share the shape); a compatible server's thinking
    (`reasoning`, `reasoning_content`) first."""
    thinking = msg.get("reasoning_content") or msg.get("reasoning")
    parts = [part("reasoning", text=thinking)] if isinstance(thinking, str) and thinking else []
    parts += content_parts(msg.get("content"))
    for call in msg.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        parts.append(part("tool_call", name=fn.get("name", ""), call_id=call.get("id") or "",
                          text=args_text(fn.get("arguments", ""))))
    if msg.get("role") == "tool":
        parts = [part("tool_result", call_id=msg.get("tool_call_id", ""), text=flatten(msg.get("content")))]
    return {"role": msg.get("role", "?"), "parts": parts}


def system_turn(payload: dict) -> list[Turn]:
    """The system prompt or instructions, as a turn of its own when there are any."""
    system = payload.get("system") or payload.get("instructions")
    return [{"role": "system", "parts": content_parts(system)}] if system else []


def exchange_turns(sent: list[Turn], reply: list[Turn]) -> list[Turn]:
    """What was sent, then what came back (marked as the reply)."""
    for turn in reply:
        turn["reply"] = True
    return sent + reply if sent or reply else []
