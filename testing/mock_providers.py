"""Anthropic, Gemini and Replicate wire formats for the mock upstream (testing/mock_upstream.py).

Routes (answered before the OpenAI ones):
  POST /v1/messages                                  Anthropic Messages: JSON, or SSE when "stream": true
                                                     (message_start / content_block_* / message_delta usage);
                                                     a tool_use block when the request declares tools
  POST /v1beta/models/{model}:generateContent        Gemini JSON with usageMetadata
  POST /v1beta/models/{model}:streamGenerateContent  Gemini SSE (?alt=sse), CRLF-framed like Google's; without
                                                     alt=sse, one JSON array of the chunks
  POST /v1/models/{owner}/{name}/predictions         Replicate: create a prediction ("Prefer: wait": finished)
  POST /v1/predictions                               Replicate: create by version
  GET  /v1/predictions/{id}                          Replicate: "processing" on the first poll, then
                                                     "succeeded" (image models: a PNG URL on this mock;
                                                     llama models: text and token metrics; models named
                                                     "...inline...": the PNG as a data: URI, as Replicate
                                                     answers some image models' Prefer: wait creations;
                                                     "...broken...": status "failed", its error said)
  GET  /replicate-files/{id}/{name}                  the delivery host: PNG or MP3 bytes (a 404 for the
                                                     outputs of models named "...expired...": deleted)
"""

import base64
import json
import re
import time
from typing import Any

from testing.media import PNG

ANTHROPIC_USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 10,
                   "output_tokens": 15}
GEMINI_USAGE = {"promptTokenCount": 8, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                "cachedContentTokenCount": 4, "totalTokenCount": 20,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]}
GEMINI_RE = re.compile(r"^/v1(?:beta|alpha)?/models/([^/:]+):(generateContent|streamGenerateContent)$")
REPLICATE_CREATE_RE = re.compile(r"^/v1/models/([^/]+/[^/]+)/predictions$")
REPLICATE_GET_RE = re.compile(r"^/v1/predictions/([A-Za-z0-9_-]+)$")
MP3 = b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8


def _dated(model: str, suffix: str) -> str:
    """The answering model name: the requested one with a version date, as the real APIs answer."""
    return model if re.search(r"-\d{8}$", model) else f"{model}-{suffix}"


async def provider_answer(mock: Any, req: Any, h: dict[str, str], payload: dict, writer) -> bool | None:
    """Answer a provider route; None when the path is not one of them."""
    p = req.path
    if p == "/v1/messages" and req.method == "POST":
        return await _anthropic(mock, payload, h, writer)
    found = GEMINI_RE.match(p)
    if found and req.method == "POST":
        model, method = found.groups()
        if method == "streamGenerateContent" and "alt=sse" not in req.query:
            return await mock._json(writer, _gemini_chunks(model), h, "")
        if method == "streamGenerateContent":
            return await mock._sse(writer, _gemini_events(model), h, h.get("x-mock-fault", ""))
        return await mock._json(writer, _gemini_answer(model), h, "")
    found = REPLICATE_CREATE_RE.match(p)
    if (found or p == "/v1/predictions") and req.method == "POST":
        model = found.group(1) if found else str(payload.get("version", "")).split(":")[0]
        return await _replicate_create(mock, model, payload, h, writer)
    found = REPLICATE_GET_RE.match(p)
    if found and req.method == "GET":
        return await _replicate_get(mock, found.group(1), writer)
    if p.startswith("/replicate-files/") and req.method == "GET":
        if "/expired-" in p:  # an output Replicate already deleted (outputs last an hour)
            await mock._send(writer, 404, b'{"detail": "Not found."}')
            return True
        body, ctype = (MP3, "audio/mpeg") if p.endswith(".mp3") else (PNG, "image/png")
        await mock._send(writer, 200, body, ctype)
        return True
    return None


# --- Anthropic ----------------------------------------------------------------------------

def _anthropic_blocks(payload: dict) -> tuple[list[dict], str]:
    """The content blocks and stop reason: a tool call when tools are declared, else text."""
    tools = payload.get("tools") or []
    if tools:
        return ([{"type": "text", "text": "Let me check."},
                 {"type": "tool_use", "id": "toolu_mock1", "name": tools[0].get("name", "tool"),
                  "input": {"city": "Paris"}}], "tool_use")
    return [{"type": "text", "text": "Hello from Claude!"}], "end_turn"


async def _anthropic(mock: Any, payload: dict, h: dict[str, str], writer) -> bool:
    """Messages API answer, plain or streamed."""
    model = _dated(payload.get("model", "claude-sonnet-4"), "20250514")
    blocks, stop = _anthropic_blocks(payload)
    message = {"id": "msg_mock1", "type": "message", "role": "assistant", "model": model, "content": blocks,
               "stop_reason": stop, "stop_sequence": None, "usage": ANTHROPIC_USAGE}
    if not payload.get("stream"):
        return await mock._json(writer, message, h, "")
    events = []

    def ev(kind: str, **data: Any) -> None:
        events.append(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n")

    ev("message_start", message={**message, "content": [], "stop_reason": None,
                                 "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}})
    for idx, block in enumerate(blocks):
        if block["type"] == "text":
            ev("content_block_start", index=idx, content_block={"type": "text", "text": ""})
            if idx == 0:
                ev("ping")
            words = block["text"].split(" ")
            for i, word in enumerate(words):
                piece = word if i == len(words) - 1 else word + " "
                ev("content_block_delta", index=idx, delta={"type": "text_delta", "text": piece})
        else:
            ev("content_block_start", index=idx, content_block={**block, "input": {}})
            raw = json.dumps(block["input"])
            for piece in ("", raw[:5], raw[5:]):
                ev("content_block_delta", index=idx, delta={"type": "input_json_delta", "partial_json": piece})
        ev("content_block_stop", index=idx)
    ev("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
       usage={"output_tokens": ANTHROPIC_USAGE["output_tokens"]})
    ev("message_stop")
    return await mock._sse(writer, events, h, h.get("x-mock-fault", ""))


# --- Gemini -------------------------------------------------------------------------------

def _gemini_answer(model: str) -> dict:
    """generateContent answer."""
    return {"candidates": [{"content": {"parts": [{"text": "Hello from Gemini!"}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": GEMINI_USAGE, "modelVersion": model, "responseId": "mock-gemini-1"}


def _gemini_events(model: str) -> list[str]:
    """streamGenerateContent?alt=sse chunks; running usage on each, the full one on the last."""
    return [f"data: {json.dumps(chunk)}\r\n\r\n" for chunk in _gemini_chunks(model)]


def _gemini_chunks(model: str) -> list[dict]:
    """The chunks of a streamGenerateContent answer (without alt=sse: one JSON array of them)."""
    pieces = ["Hello ", "from ", "Gemini!"]
    out = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        cand: dict[str, Any] = {"content": {"parts": [{"text": piece}], "role": "model"}, "index": 0}
        usage = GEMINI_USAGE if last else {"promptTokenCount": 8, "totalTokenCount": 8 + i + 1}
        if last:
            cand["finishReason"] = "STOP"
        out.append({"candidates": [cand], "usageMetadata": usage, "modelVersion": model,
                    "responseId": "mock-gemini-1"})
    return out


# --- Replicate ----------------------------------------------------------------------------

def _predictions(mock: Any) -> dict[str, dict]:
    """Per-mock prediction state (id -> prediction and poll count)."""
    return mock.__dict__.setdefault("replicate_predictions", {})


def _replicate_finish(mock: Any, pred: dict) -> None:
    """Mark a prediction finished (succeeded, or failed for a "broken" model) with its output and metrics."""
    pred["status"] = "succeeded"
    pred["completed_at"] = "2026-01-01T00:00:02Z"
    if "llama" in pred["model"]:
        pred["output"] = ["Hello", " from", " Llama"]
        pred["metrics"] = {"predict_time": 0.5, "input_token_count": 11, "output_token_count": 3,
                           "tokens_per_second": 6.0}
    elif "broken" in pred["model"]:
        pred.update(status="failed", error="CUDA out of memory", output=None, metrics={"predict_time": 0.1})
    elif "inline" in pred["model"]:
        pred["output"] = ["data:image/png;base64," + base64.b64encode(PNG).decode()]
        pred["metrics"] = {"predict_time": 0.4}
    else:
        ext = "mp3" if "music" in pred["model"] else "png"
        name = "expired-0" if "expired" in pred["model"] else "out-0"
        pred["output"] = [f"{mock.url}/replicate-files/{pred['id']}/{name}.{ext}"]
        pred["metrics"] = {"predict_time": 1.2}


async def _replicate_create(mock: Any, model: str, payload: dict, h: dict[str, str], writer) -> bool:
    """Create a prediction (finished at once with Prefer: wait)."""
    state = _predictions(mock)
    pid = f"mockpred{len(state) + 1}{int(time.time() * 1000) % 100000}"
    pred = {"id": pid, "model": model, "version": "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637",
            "input": payload.get("input", {}), "logs": "", "output": None, "error": None, "status": "starting",
            "created_at": "2026-01-01T00:00:00Z", "metrics": {},
            "urls": {"get": f"https://api.replicate.com/v1/predictions/{pid}",
                     "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel"}}
    state[pid] = {"pred": pred, "polls": 0}
    if h.get("prefer", "").startswith("wait"):
        _replicate_finish(mock, pred)
        await mock._send(writer, 201, json.dumps(pred).encode())
        return True
    await mock._send(writer, 201, json.dumps(pred).encode())
    return True


async def _replicate_get(mock: Any, pid: str, writer) -> bool:
    """Poll a prediction: processing first, then succeeded."""
    entry = _predictions(mock).get(pid)
    if entry is None:
        await mock._send(writer, 404, json.dumps({"title": "Not found", "detail": "Not found.",
                                                  "status": 404}).encode(), "application/problem+json")
        return True
    entry["polls"] += 1
    pred = entry["pred"]
    if entry["polls"] == 1:
        pred["status"] = "processing"
    else:
        _replicate_finish(mock, pred)
    await mock._send(writer, 200, json.dumps(pred).encode())
    return True
