"""Turns stored exchanges into what a reader sees: masked headers, readable bodies, SSE events."""

import json
from collections.abc import Callable
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from wire.jsonutil import json_depth, json_or_none
from wire.sse import sse_events

# Bodies longer than this start folded; JSON with more nodes than this is shown as indented
# text rather than a tree of <details> (a tree of 100,000 nodes is slower to read, not faster).
FOLD_CHARS = 4000
TREE_MAX_NODES = 3000
# JSON nested deeper than this is shown as the text it arrived as: a tree (or indented text)
# of hundreds of levels is unreadable, and building it would recurse once per level.
TREE_MAX_DEPTH = 32

FileUrl = Callable[[str], str | None]


def _nodes(obj: Any, limit: int) -> int:
    """Count containers and leaves, stopping once above limit."""
    count, stack = 0, [obj]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def _leaf_html(value: Any) -> SafeString:
    """One JSON scalar, typed by CSS class."""
    kind = "null" if value is None else "bool" if isinstance(value, bool) else (
        "num" if isinstance(value, (int, float)) else "str")
    return format_html('<span class="j-{}">{}</span>', kind, json.dumps(value, ensure_ascii=False))


def _tree_html(obj: Any, file_url: FileUrl, depth: int) -> SafeString:
    """A JSON value as nested <details> (objects and arrays fold, the outer levels start open)."""
    if isinstance(obj, dict) and isinstance(obj.get("$gateway_file"), str):
        url = file_url(str(obj.get("binary_file_id", "")))
        link = format_html(' <a href="{}">open file</a>', url) if url else ""
        return format_html('<span class="j-file">stored file {}{}</span>', obj["$gateway_file"], link)
    if isinstance(obj, (dict, list)) and obj:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        brackets = "{}" if isinstance(obj, dict) else "[]"
        rows = format_html_join("", '<li><span class="j-key">{}</span>: {}</li>', (
            (json.dumps(k, ensure_ascii=False) if isinstance(obj, dict) else k, _tree_html(v, file_url, depth + 1))
            for k, v in items))
        return format_html('<details class="j"{}><summary>{} {} {}</summary><ul>{}</ul>{}</details>',
                           mark_safe(" open") if depth < 3 else "", brackets[0], len(obj),
                           "keys" if isinstance(obj, dict) else "items", rows, brackets[1])
    if isinstance(obj, (dict, list)):
        return format_html('<span class="j-empty">{}</span>', json.dumps(obj))
    return _leaf_html(obj)


def body_render(text: str | None, file_url: FileUrl) -> dict[str, Any]:
    """How to show a body: a JSON tree, indented JSON, or plain text; folded when long."""
    if text is None or text == "":
        return {"kind": "empty", "html": "", "chars": 0, "folded": False}
    parsed = json_or_none(text)
    folded = len(text) > FOLD_CHARS
    if isinstance(parsed, (dict, list)) and json_depth(parsed, TREE_MAX_DEPTH) > TREE_MAX_DEPTH:
        note = format_html('<p class="help">JSON nested more than {} levels deep: shown as sent.</p>', TREE_MAX_DEPTH)
        return {"kind": "text", "html": note + format_html("<pre>{}</pre>", text), "chars": len(text), "folded": True}
    if parsed is None or not isinstance(parsed, (dict, list)):
        return {"kind": "text", "html": format_html("<pre>{}</pre>", text), "chars": len(text), "folded": folded}
    if _nodes(parsed, TREE_MAX_NODES) <= TREE_MAX_NODES:
        html = format_html('<div class="json-tree">{}</div>', _tree_html(parsed, file_url, 0))
        return {"kind": "json", "html": html, "chars": len(text), "folded": folded}
    pretty = json.dumps(parsed, indent=2, ensure_ascii=False)
    return {"kind": "json", "html": format_html("<pre>{}</pre>", pretty), "chars": len(text), "folded": True}


def json_pretty(obj: Any) -> str:
    """Indented JSON text (compact past TREE_MAX_DEPTH levels, where indenting would recurse too deep)."""
    if json_depth(obj, TREE_MAX_DEPTH) > TREE_MAX_DEPTH:
        return json.dumps(obj, ensure_ascii=False)  # the C encoder: no per-level Python frames
    return json.dumps(obj, indent=2, ensure_ascii=False)


def events_shown(body: str | None, offsets: list | None, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` raw events of a stream, each with its arrival offset (ms) when it was recorded, and how many
    it has in all."""
    if not body:
        return [], 0
    offsets = offsets if isinstance(offsets, list) else []
    out = []
    idx = -1
    for idx, event in enumerate(sse_events(body)):
        if idx >= limit:
            continue  # counted only
        data = event.data or ""
        parsed = json_or_none(data)
        out.append({
            "index": idx,
            "offset_ms": offsets[idx] if idx < len(offsets) else None,
            "event": event.name or "",
            "data": data if parsed is None or json_depth(parsed, TREE_MAX_DEPTH) > TREE_MAX_DEPTH
            else json.dumps(parsed, ensure_ascii=False),
        })
    return out, idx + 1
