"""Usage, model and stream reassembly per wire format (the writer thread's parsing)."""

import json

import pytest

from logs.usage import WIRES, ttft_compute, wire_get


def sse(*events: tuple[str | None, dict], sep: str = "\n\n") -> str:
    """Raw SSE text of (event name, data) pairs."""
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}{sep}")
    return "".join(out)


def test_openai_chat_usage_with_details():
    usage = WIRES["openai"].answer_usage({"model": "gpt-4o-2024-08-06", "usage": {
        "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 20}}})
    assert usage == {"model": "gpt-4o-2024-08-06", "input_tokens": 100, "output_tokens": 50, "cached_tokens": 60,
                     "reasoning_tokens": 20, "total_tokens": 150}


def test_openai_embeddings_have_no_output_count():
    usage = WIRES["openai"].answer_usage({"model": "text-embedding-3-small",
                                          "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    assert (usage["input_tokens"], usage["output_tokens"], usage["cached_tokens"]) == (3, None, None)


def test_missing_usage_is_none_not_zero():
    usage = WIRES["openai"].answer_usage({"model": "m"})
    assert all(usage[k] is None for k in ("input_tokens", "output_tokens", "total_tokens", "cached_tokens"))
    assert WIRES["anthropic"].answer_usage({"usage": {"input_tokens": True}})["input_tokens"] is None


def test_anthropic_usage_adds_cache_reads_and_writes_to_input():
    usage = WIRES["anthropic"].answer_usage({"model": "claude-sonnet-4-20250514", "usage": {
        "input_tokens": 20, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 300, "output_tokens": 7}})
    assert (usage["input_tokens"], usage["cached_tokens"], usage["output_tokens"], usage["total_tokens"]) == (
        420, 300, 7, 427)


def test_gemini_usage_counts_thoughts_as_output():
    usage = WIRES["gemini"].answer_usage({"modelVersion": "gemini-2.5-pro", "usageMetadata": {
        "promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 30, "totalTokenCount": 44}})
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"], usage["reasoning_tokens"],
            usage["total_tokens"], usage["cached_tokens"]) == ("gemini-2.5-pro", 10, 34, 30, 44, None)


def test_gemini_usage_without_candidates_count():
    usage = WIRES["gemini"].answer_usage({"usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}})
    assert usage["output_tokens"] == 0 and usage["model"] is None


def test_replicate_usage_from_metrics():
    usage = WIRES["replicate"].answer_usage({"model": "meta/meta-llama-3-8b-instruct", "metrics": {
        "input_token_count": 11, "output_token_count": 3, "predict_time": 0.5}})
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (11, 3, 14)


@pytest.mark.parametrize("wire, endpoint, body, model, stream", [
    ("openai", "/v1/chat/completions", {"model": "gpt-4o", "stream": True}, "gpt-4o", True),
    ("anthropic", "/anthropic/v1/messages", {"model": "claude-sonnet-4"}, "claude-sonnet-4", False),
    ("gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", None, "gemini-2.5-flash", True),
    ("gemini", "/gemini/v1/tunedModels/my-tune:generateContent", {}, "my-tune", False),
    ("replicate", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions", {"input": {}},
     "black-forest-labs/flux-schnell", False),
    ("replicate", "/replicate/v1/predictions", {"version": "meta/llama:5599ed", "stream": True}, "meta/llama", True),
    ("replicate", "/replicate/v1/predictions", {"version": "5599ed30"}, "5599ed30", False),
    ("openai", "/v1/models", None, None, False),
])
def test_request_model_and_stream(wire, endpoint, body, model, stream):
    w = WIRES[wire]
    assert (w.request_model(endpoint, body), w.stream_requested(endpoint, body)) == (model, stream)


def test_anthropic_stream_reassembled_with_thinking_and_tool_use():
    text = sse(
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-4-1-20250805",
            "content": [], "stop_reason": None,
            "usage": {"input_tokens": 5, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "thinking", "thinking": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "thinking_delta", "thinking": "Hmm"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "signature_delta", "signature": "sig"}}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                 "delta": {"type": "input_json_delta", "partial_json": "[1, 2]}"}}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 42}}),
        ("message_stop", {"type": "message_stop"}),
    )
    out = WIRES["anthropic"].stream_reassemble(text)
    msg = out["result"]
    assert out["events"] == 9 and msg["stop_reason"] == "tool_use"
    assert msg["content"] == [{"type": "thinking", "thinking": "Hmm", "signature": "sig"},
                              {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}]
    usage = WIRES["anthropic"].answer_usage(msg)
    assert (usage["input_tokens"], usage["output_tokens"], usage["model"]) == (5, 42, "claude-opus-4-1-20250805")


def test_anthropic_cut_stream_keeps_partial_tool_input():
    text = sse(("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
               ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}))
    msg = WIRES["anthropic"].stream_reassemble(text)["result"]
    assert msg["content"][0]["input_raw"] == '{"a": '
    assert WIRES["anthropic"].answer_usage(msg)["output_tokens"] is None


def test_gemini_stream_reassembled_with_function_call():
    chunk = {"modelVersion": "gemini-2.5-flash"}
    text = sse((None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
                       "usageMetadata": {"promptTokenCount": 3}}),
               (None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
               (None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [
                   {"functionCall": {"name": "f", "args": {"x": 1}}}]}, "finishReason": "STOP"}],
                       "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}),
               sep="\r\n\r\n")
    result = WIRES["gemini"].stream_reassemble(text)["result"]
    assert result["candidates"][0]["content"]["parts"] == [{"text": "Hello"},
                                                           {"functionCall": {"name": "f", "args": {"x": 1}}}]
    assert result["candidates"][0]["finishReason"] == "STOP"
    assert WIRES["gemini"].answer_usage(result)["total_tokens"] == 7


def test_ttft_is_the_first_content_event():
    text = sse((None, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
               (None, {"choices": [{"delta": {"content": "Hi"}}]}),
               (None, {"choices": [{"delta": {}, "finish_reason": "stop"}]})) + "data: [DONE]\n\n"
    assert ttft_compute(WIRES["openai"], text, [1.0, 50.0, 60.0, 61.0], base_ms=10.0) == 60.0
    assert ttft_compute(WIRES["openai"], text, [1.0, 50.0, 60.0, 61.0], base_ms=10.0, ttfb_ms=70.0) == 70.0
    assert ttft_compute(WIRES["openai"], text, None, base_ms=10.0) is None
    no_content = sse((None, {"choices": [{"delta": {"role": "assistant"}}]}))
    assert ttft_compute(WIRES["openai"], no_content, [1.0], base_ms=0.0) is None


def test_ttft_for_crlf_framed_gemini_and_anthropic_events():
    gem = sse((None, {"candidates": [{"content": {"parts": [{"text": ""}]}}]}),
              (None, {"candidates": [{"content": {"parts": [{"text": "x"}]}}]}), sep="\r\n\r\n")
    assert ttft_compute(WIRES["gemini"], gem, [5.0, 9.0], base_ms=1.0) == 10.0
    ant = sse(("message_start", {"type": "message_start", "message": {}}), ("ping", {"type": "ping"}),
              ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "a"}}))
    assert ttft_compute(WIRES["anthropic"], ant, [1.0, 2.0, 3.0], base_ms=0.0) == 3.0


def test_responses_api_delta_counts_as_content():
    text = sse(("response.created", {"type": "response.created"}),
               ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "a"}))
    assert ttft_compute(WIRES["openai"], text, [1.0, 2.0], base_ms=0.0) == 2.0


def test_unknown_wire_falls_back_to_openai():
    assert wire_get(None).name == "openai" and wire_get("nope").name == "openai"
