"""Usage, model, stream reassembly and time to first token per provider (the ingest's parsing)."""

import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from logs.pipeline.rows import _stream_read
from providers import Provider, registry
from providers.openai import OpenAI
from wire.jsonutil import json_or_none
from wire.sse import sse_events


def get(name: str) -> Provider:
    return registry().get(name)


def events_of(text: str) -> list:
    """(event name, parsed data) of every event of a raw SSE text, as the ingest hands them to providers."""
    return [(e.name, json_or_none(e.data)) for e in sse_events(text)]


def sse(*events: tuple[str | None, dict], sep: str = "\n\n") -> str:
    """Raw SSE text of (event name, data) pairs."""
    out = []
    for name, data in events:
        head = f"event: {name}\n" if name else ""
        out.append(f"{head}data: {json.dumps(data)}{sep}")
    return "".join(out)


def test_openai_chat_usage_with_details():
    usage = get("openai").usage({"model": "gpt-4o-2024-08-06", "usage": {
        "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 20}}})
    assert asdict(usage) == {"model": "gpt-4o-2024-08-06", "input_tokens": 100, "output_tokens": 50,
                             "cached_tokens": 60, "reasoning_tokens": 20, "total_tokens": 150,
                             "cache_write_tokens": None, "price_counts": (), "price_context": (), "refused": ()}


def test_audio_tokens_are_read_for_their_price():
    """Audio costs several times text: chat with audio, a realtime response.done, Gemini's modality details."""
    chat = get("openai").usage({"model": "gpt-4o-audio-preview", "usage": {
        "prompt_tokens": 100, "completion_tokens": 50, "prompt_tokens_details": {"audio_tokens": 80},
        "completion_tokens_details": {"audio_tokens": 40}}})
    assert dict(chat.price_counts) == {"input_audio_tokens": 80, "output_audio_tokens": 40}
    done = get("openai").realtime_read("upstream", {"type": "response.done", "response": {"usage": {
        "input_tokens": 1000, "output_tokens": 1000, "total_tokens": 2000,
        "input_token_details": {"cached_tokens": 100, "audio_tokens": 800, "cached_tokens_details": {"audio_tokens": 50}},
        "output_token_details": {"text_tokens": 100, "audio_tokens": 900}}}}).usage
    assert dict(done.price_counts) == {"input_audio_tokens": 800, "cache_audio_read_tokens": 50,
                                       "output_audio_tokens": 900}
    gemini = get("gemini").usage({"modelVersion": "gemini-2.5-flash", "usageMetadata": {
        "promptTokenCount": 100, "candidatesTokenCount": 10, "totalTokenCount": 110,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 30}, {"modality": "AUDIO", "tokenCount": 70}]}})
    assert dict(gemini.price_counts) == {"input_audio_tokens": 70}
    # A transcription's answer (gpt-4o-transcribe) names its details input_token_details, as realtime does.
    heard = get("openai").usage({"text": "Hello.", "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 45,
                                                          "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
                                                          "total_tokens": 59}})
    assert (heard.input_tokens, dict(heard.price_counts)) == (14, {"input_audio_tokens": 14})


def test_a_realtime_model_is_the_servers_word():
    """session.updated is the server's event: a client sending one names no model."""
    event = {"type": "session.updated", "session": {"model": "my-free-model"}}
    assert get("openai").realtime_read("client", event).model is None
    assert get("openai").realtime_read("upstream", event).model == "my-free-model"


def test_openai_embeddings_have_no_output_count():
    usage = get("openai").usage({"model": "text-embedding-3-small", "usage": {"prompt_tokens": 3, "total_tokens": 3}})
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (3, None, None)


def test_missing_usage_is_none_not_zero():
    usage = get("openai").usage({"model": "m"})
    assert all(getattr(usage, k) is None for k in ("input_tokens", "output_tokens", "total_tokens", "cached_tokens"))
    assert get("anthropic").usage({"usage": {"input_tokens": True}}).input_tokens is None


def test_anthropic_usage_adds_cache_reads_and_writes_to_input():
    usage = get("anthropic").usage({"model": "claude-sonnet-4-20250514", "usage": {
        "input_tokens": 20, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 300, "output_tokens": 7}})
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens, usage.total_tokens) == (
        420, 300, 7, 427)


def test_gemini_usage_counts_thoughts_as_output():
    usage = get("gemini").usage({"modelVersion": "gemini-2.5-pro", "usageMetadata": {
        "promptTokenCount": 10, "candidatesTokenCount": 4, "thoughtsTokenCount": 30, "totalTokenCount": 44}})
    assert (usage.model, usage.input_tokens, usage.output_tokens, usage.reasoning_tokens,
            usage.total_tokens, usage.cached_tokens) == ("gemini-2.5-pro", 10, 34, 30, 44, None)


def test_gemini_usage_without_candidates_count():
    usage = get("gemini").usage({"usageMetadata": {"promptTokenCount": 10, "totalTokenCount": 10}})
    assert usage.output_tokens == 0 and usage.model is None


def test_replicate_usage_from_metrics():
    usage = get("replicate").usage({"model": "meta/meta-llama-3-8b-instruct", "metrics": {
        "input_token_count": 11, "output_token_count": 3, "predict_time": 0.5}})
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 3, 14)


@pytest.mark.parametrize("name, endpoint, body, model, stream", [
    ("openai", "/v1/chat/completions", {"model": "gpt-4o", "stream": True}, "gpt-4o", True),
    ("anthropic", "/anthropic/v1/messages", {"model": "claude-sonnet-4"}, "claude-sonnet-4", False),
    ("gemini", "/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", None, "gemini-2.5-flash", True),
    ("gemini", "/gemini/v1/tunedModels/my-tune:generateContent", {}, "my-tune", False),
    ("replicate", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions", {"input": {}},
     "black-forest-labs/flux-schnell", False),
    ("replicate", "/replicate/v1/predictions", {"version": "meta/llama:5599ed", "stream": True}, "meta/llama", True),
    ("replicate", "/replicate/v1/predictions", {"version": "5599ed30"}, "5599ed30", False),
    ("replicate", "/replicate/v1/models/a/b/versions/39ed52f2/trainings", {"destination": "me/x"}, "a/b", False),
    ("replicate", "/replicate/v1/models/a/b/versions/39ed52f2/predictions", {"input": {}}, "a/b", False),
    ("replicate", "/replicate/v1/models/a%2Fb/predictions", {"input": {}}, "a/b", False),
    ("openai", "/v1/models", None, None, False),
])
def test_request_model_and_stream(name, endpoint, body, model, stream):
    p = get(name)
    assert (p.request_model(endpoint, body), p.stream_requested(endpoint, body)) == (model, stream)


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
    events = events_of(text)
    msg = get("anthropic").stream_reassemble(events)
    assert len(events) == 9 and msg["stop_reason"] == "tool_use"
    assert msg["content"] == [{"type": "thinking", "thinking": "Hmm", "signature": "sig"},
                              {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}]
    usage = get("anthropic").usage(msg)
    assert (usage.input_tokens, usage.output_tokens, usage.model) == (5, 42, "claude-opus-4-1-20250805")


def test_anthropic_cut_stream_keeps_partial_tool_input():
    text = sse(("message_start", {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 3}}}),
               ("content_block_start", {"type": "content_block_start", "index": 0,
                                        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
               ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                        "delta": {"type": "input_json_delta", "partial_json": '{"a": '}}))
    msg = get("anthropic").stream_reassemble(events_of(text))
    assert msg["content"][0]["input_raw"] == '{"a": '
    assert get("anthropic").usage(msg).output_tokens is None


def test_a_cut_stream_has_its_prompt_counted_and_its_output_unknown():
    # message_start's output_tokens (1) and a Gemini chunk's running counts are not the answer's:
    # priced, they made a cut stream's cost up (docs/usage.md: NULL when the output is unknown).
    start = {"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": {"input_tokens": 30,
                                                                                          "output_tokens": 1}}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
    cut = get("anthropic").usage(get("anthropic").stream_reassemble(events_of(sse(("message_start", start),
                                                                                  ("content_block_delta", delta)))))
    assert (cut.input_tokens, cut.output_tokens) == (30, None)
    ended = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}
    whole = get("anthropic").usage(get("anthropic").stream_reassemble(events_of(sse(
        ("message_start", start), ("content_block_delta", delta), ("message_delta", ended)))))
    assert (whole.input_tokens, whole.output_tokens) == (30, 1)  # the same 1, now the final count
    running = {"modelVersion": "gemini-2.5-flash", "candidates": [{"content": {"parts": [{"text": "Hel"}]}}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4}}
    cut = get("gemini").usage(get("gemini").stream_reassemble(events_of(sse((None, running)))))
    assert (cut.input_tokens, cut.output_tokens, cut.total_tokens) == (3, None, None)
    blocked = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3,
                                                                              "totalTokenCount": 3}}
    assert get("gemini").usage(get("gemini").stream_reassemble(events_of(sse((None, blocked))))).output_tokens == 0


def test_gemini_stream_reassembled_with_function_call():
    chunk = {"modelVersion": "gemini-2.5-flash"}
    text = sse((None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}],
                       "usageMetadata": {"promptTokenCount": 3}}),
               (None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
               (None, {**chunk, "candidates": [{"content": {"role": "model", "parts": [
                   {"functionCall": {"name": "f", "args": {"x": 1}}}]}, "finishReason": "STOP"}],
                       "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}),
               sep="\r\n\r\n")
    result = get("gemini").stream_reassemble(events_of(text))
    assert result["candidates"][0]["content"]["parts"] == [{"text": "Hello"},
                                                           {"functionCall": {"name": "f", "args": {"x": 1}}}]
    assert result["candidates"][0]["finishReason"] == "STOP"
    assert get("gemini").usage(result).total_tokens == 7


def ttft(provider: Provider, text: str, offsets: list[float] | None, ttfb_ms: float | None = None) -> float | None:
    """The ingest's TTFT for a stream whose i-th event ended offsets[i] ms after the exchange began."""
    resp = SimpleNamespace(ttfb_ms=ttfb_ms, ttft_ms=None, stream_result=None)
    _stream_read(resp, provider, text, offsets)
    assert resp.stream_result["events"] == len(sse_events(text))
    return resp.ttft_ms


def first_content(provider: Provider, text: str) -> int | None:
    """Index of the first event the provider says carries content."""
    return next((i for i, (name, payload) in enumerate(events_of(text)) if provider.event_has_content(name, payload)),
                None)


def test_ttft_is_the_first_content_event():
    text = sse((None, {"choices": [{"delta": {"role": "assistant", "content": ""}}]}),
               (None, {"choices": [{"delta": {"content": "Hi"}}]}),
               (None, {"choices": [{"delta": {}, "finish_reason": "stop"}]})) + "data: [DONE]\n\n"
    assert first_content(get("openai"), text) == 1
    assert ttft(get("openai"), text, [11.0, 60.0, 70.0, 71.0]) == 60.0
    assert ttft(get("openai"), text, [11.0, 60.0, 70.0, 71.0], ttfb_ms=70.0) == 70.0  # never before the first byte
    assert ttft(get("openai"), text, None) is None
    no_content = sse((None, {"choices": [{"delta": {"role": "assistant"}}]}))
    assert first_content(get("openai"), no_content) is None
    assert ttft(get("openai"), no_content, [1.0]) is None


def test_ttft_for_crlf_framed_gemini_and_anthropic_events():
    gem = sse((None, {"candidates": [{"content": {"parts": [{"text": ""}]}}]}),
              (None, {"candidates": [{"content": {"parts": [{"text": "x"}]}}]}), sep="\r\n\r\n")
    assert first_content(get("gemini"), gem) == 1
    assert ttft(get("gemini"), gem, [6.0, 10.0]) == 10.0
    for sep in ("\n\n", "\r\n\r\n"):
        ant = sse(("message_start", {"type": "message_start", "message": {}}), ("ping", {"type": "ping"}),
                  ("content_block_delta", {"type": "content_block_delta",
                                           "delta": {"type": "text_delta", "text": "a"}}), sep=sep)
        assert first_content(get("anthropic"), ant) == 2
        assert ttft(get("anthropic"), ant, [1.0, 2.0, 3.0]) == 3.0


def test_ttft_counts_comment_events_so_offsets_stay_aligned():
    text = ": keep-alive\n\n" + sse((None, {"choices": [{"delta": {"content": "Hi"}}]}))
    assert first_content(get("openai"), text) == 1
    assert ttft(get("openai"), text, [5.0, 40.0]) == 40.0


def test_responses_api_delta_counts_as_content():
    text = sse(("response.created", {"type": "response.created"}),
               ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "a"}))
    assert first_content(get("openai"), text) == 1
    assert ttft(get("openai"), text, [1.0, 2.0]) == 2.0


def test_unknown_provider_reads_as_openai():
    for name in ("nope", "", None):
        provider = registry().get(name)
        assert isinstance(provider, OpenAI)
        assert provider.usage({"usage": {"prompt_tokens": 1, "completion_tokens": 2}}).total_tokens == 3
    assert registry().get("").name == "unknown"


def test_gemini_live_audio_in_google_genais_snake_case():
    """google-genai writes realtime_input / mime_type; the REST docs realtimeInput / mimeType: both are read."""
    for event in ({"realtime_input": {"audio": {"data": "AAA-", "mime_type": "audio/pcm;rate=16000"}}},
                  {"realtimeInput": {"mediaChunks": [{"data": "AAAA", "mimeType": "audio/pcm;rate=16000"}]}}):
        read = get("gemini").realtime_read("client", event)
        assert [c.track for c in read.audio] == ["input"] and read.formats["input"] == ("pcm16", 16000)


def test_gemini_live_names_its_model_in_its_setup_message_only():
    """Its upgrade names none: the setup's model is what a gateway key is held to (read as a path's, without models/)."""
    gemini = get("gemini")
    assert gemini.realtime_model_in_first_message("/ws/google.ai.generativelanguage.v1beta.GenerativeService."
                                                  "BidiGenerateContent")
    assert not get("openai").realtime_model_in_first_message("/v1/realtime")
    assert gemini.realtime_read("client", {"setup": {"model": "models/gemini-live-2.5-flash"}}).asks_model == (
        "gemini-live-2.5-flash")
    for event in ({"setup": {"generation_config": {}}}, {"realtimeInput": {"audioStreamEnd": True}}):
        assert gemini.realtime_read("client", event).asks_model is None
    assert gemini.realtime_read("upstream", {"setup": {"model": "models/x"}}).asks_model is None


def test_a_streamed_chat_keeps_its_service_tier_for_its_price():
    chunks = [{"object": "chat.completion.chunk", "model": "gpt-4o", "service_tier": "flex",
               "choices": [{"index": 0, "delta": {"content": "hi"}}]},
              {"object": "chat.completion.chunk", "model": "gpt-4o", "service_tier": "flex", "choices": [],
               "usage": {"prompt_tokens": 10, "completion_tokens": 2}}]
    answer = get("openai").stream_reassemble([(None, c) for c in chunks])
    assert get("openai").usage(answer).price_context == (("service_tier", "flex"),)


def test_an_anthropic_text_block_starting_with_null_citations_takes_its_citations():
    events = [{"type": "message_start", "message": {"type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                                                    "usage": {"input_tokens": 10, "output_tokens": 1}}},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "", "citations": None}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta", "citation": {"n": 1}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "cited"}},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}]
    answer = get("anthropic").stream_reassemble([(None, e) for e in events])
    assert answer["content"] == [{"type": "text", "text": "cited", "citations": [{"n": 1}]}]
    assert get("anthropic").usage(answer).output_tokens == 5  # the whole answer read, not dropped


def test_a_compatible_servers_reasoning_is_content_and_shown():
    """Groq / OpenRouter `reasoning`, vLLM / DeepSeek `reasoning_content`: thinking counts for time to first token."""
    think = {"choices": [{"index": 0, "delta": {"reasoning": "thinking..."}}]}
    assert get("openai").event_has_content(None, think)
    answer = get("openai").stream_reassemble([(None, think), (None, {"choices": [{"index": 0, "delta": {
        "content": "42"}, "finish_reason": "stop"}]})])
    assert answer["choices"][0]["message"]["reasoning"] == "thinking..."
    turns = get("openai").conversation("/v1/chat/completions", {"messages": []}, answer)
    assert [p["kind"] for p in turns[-1]["parts"]] == ["reasoning", "text"]


def test_anthropic_thinking_and_server_tools_are_shown_as_such():
    answer = {"type": "message", "role": "assistant", "content": [
        {"type": "thinking", "thinking": "let me search", "signature": "x"}, {"type": "redacted_thinking", "data": "y"},
        {"type": "server_tool_use", "id": "srv_1", "name": "web_search", "input": {"query": "weather"}},
        {"type": "web_search_tool_result", "tool_use_id": "srv_1", "content": [
            {"type": "web_search_result", "title": "Weather", "url": "https://w.example", "encrypted_content": "zz"}]},
        {"type": "text", "text": "Sunny"}]}
    turns = get("anthropic").conversation("/v1/messages", {"messages": []}, answer)
    parts = turns[-1]["parts"]
    assert [p["kind"] for p in parts] == ["reasoning", "reasoning", "tool_call", "tool_result", "text"]
    assert parts[3]["text"] == "Weather https://w.example"


def test_a_gemini_stream_without_alt_sse_is_one_json_array_read_as_one_answer():
    chunks = [{"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "modelVersion": "gemini-2.5-flash",
               "usageMetadata": {"promptTokenCount": 8}},
              {"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
               "modelVersion": "gemini-2.5-flash",
               "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 2, "totalTokenCount": 10}}]
    usage = get("gemini").usage(chunks)
    assert (usage.model, usage.input_tokens, usage.output_tokens) == ("gemini-2.5-flash", 8, 2)
    turns = get("gemini").conversation("/v1beta/models/gemini-2.5-flash:streamGenerateContent", {"contents": []}, chunks)
    assert turns[-1]["parts"] == [{"kind": "text", "text": "Hello"}]


def test_an_openai_realtime_upgrade_naming_its_model_twice_names_none():
    """Servers differ on which of two model parameters they take: an empty second one was dropped here, and a
    server taking the last did not run the model the gateway key was held to."""
    openai_ = get("openai")
    assert openai_.realtime_model("/v1/realtime", "model=gpt-realtime") == "gpt-realtime"
    for query in ("model=gpt-realtime&model=gpt-4o-realtime-preview", "model=gpt-realtime&model=",
                  "model=&model=gpt-realtime", "model=gpt-realtime&mod%65l=x"):
        assert openai_.realtime_model("/v1/realtime", query) is None, query


def test_a_negative_figure_hidden_in_a_sum_is_refused():
    """Anthropic's input and Gemini's output add figures up: a negative one made a plausible count (-100 + 200 cache
    reads: 100 input tokens), so the exchange was priced from usage the upstream got wrong."""
    claude = get("anthropic").usage({"model": "claude-sonnet-4-5", "usage": {
        "input_tokens": -100, "cache_read_input_tokens": 200, "output_tokens": 5}})
    assert claude.input_tokens is None and claude.output_tokens == 5
    assert claude.refused == ("input_tokens (negative)",)
    gemini = get("gemini").usage({"modelVersion": "gemini-2.0-flash", "usageMetadata": {
        "promptTokenCount": 10, "candidatesTokenCount": 20, "thoughtsTokenCount": -5}})
    assert gemini.output_tokens is None and gemini.refused == ("thoughtsTokenCount (negative)",
                                                                "reasoning_tokens (negative)")
