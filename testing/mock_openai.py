"""OpenAI wire-format bodies for the mock upstream: chat completions and the Responses API."""

import json
import time


def _answer_model(payload: dict) -> str:
    """The model an answer names: OpenAI names its dated snapshot; Gemini's OpenAI-compatible endpoint the model asked."""
    model = payload.get("model", "gpt-4o-mini")
    return model if str(model).startswith("gemini-") else f"{model}-2024-07-18"


def _usage_override(h: dict[str, str]) -> dict:
    """x-mock-usage: a JSON object whose fields replace the answer's usage counts (an upstream reporting absurd
    usage: negative, huge, floats, strings)."""
    return json.loads(h["x-mock-usage"]) if h.get("x-mock-usage") else {}


def openai_chat(payload: dict, h: dict[str, str]) -> dict:
    """A chat completion (a tool call with x-mock-tool-call; usage fields from x-mock-usage)."""
    msg: dict = {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None}
    finish = "stop"
    if h.get("x-mock-tool-call"):
        msg = {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
        finish = "tool_calls"
    return {"id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()),
            "model": _answer_model(payload),
            "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
                      "prompt_tokens_details": {"cached_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0}, **_usage_override(h)}}

def openai_chat_events(payload: dict, h: dict[str, str]) -> list[str]:
    """SSE chat chunks (x-mock-events of them), with a usage chunk when include_usage is set."""
    n = int(h.get("x-mock-events", "5"))
    model = _answer_model(payload)
    base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    if (payload.get("stream_options") or {}).get("include_usage"):
        base["usage"] = None  # as OpenAI does: every chunk carries usage: null, the last one the counts
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}]}]
    if h.get("x-mock-tool-call"):
        events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}]}, "finish_reason": None}]})
        for piece in ("{\"city\"", ": \"Paris\"}"):
            events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "function": {"arguments": piece}}]}, "finish_reason": None}]})
        finish = "tool_calls"
    else:
        for i in range(n):
            events.append({**base, "choices": [{"index": 0, "delta": {"content": f"tok{i} "},
                                                "finish_reason": None}]})
        finish = "stop"
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if (payload.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": n,
                                                        "total_tokens": 12 + n, **_usage_override(h)}})
    return [f"data: {json.dumps(e)}\n\n" for e in events] + ["data: [DONE]\n\n"]

def openai_response(payload: dict, text: str, status: str = "completed") -> dict:
    """A Responses API response object holding one output_text message."""
    return {"id": "resp_mock", "object": "response", "created_at": int(time.time()), "status": status,
            "model": _answer_model(payload),
            "output": [{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": 8, "output_tokens": 4, "total_tokens": 12,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}}}

def openai_responses_events(payload: dict, h: dict[str, str]) -> list[str]:
    """Responses API SSE events, from response.created to response.completed."""
    n = int(h.get("x-mock-events", "3"))
    pieces = [f"part{i} " for i in range(n)]
    seq = 0
    out = []

    def ev(kind: str, **data) -> None:
        nonlocal seq
        out.append(f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data})}\n\n")
        seq += 1
    text = "".join(pieces)
    item = {"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []}
    ev("response.created", response=openai_response(payload, "", status="in_progress") | {"output": []})
    ev("response.output_item.added", output_index=0, item=item)
    ev("response.content_part.added", item_id="msg_1", output_index=0, content_index=0,
       part={"type": "output_text", "text": "", "annotations": []})
    for piece in pieces:
        ev("response.output_text.delta", item_id="msg_1", output_index=0, content_index=0, delta=piece)
    ev("response.output_text.done", item_id="msg_1", output_index=0, content_index=0, text=text)
    done = openai_response(payload, text)
    ev("response.output_item.done", output_index=0, item=done["output"][0])
    ev("response.completed", response=done)
    return out
