"""OpenAI: chat completions, Responses API, embeddings, images, audio; the wire format others copy."""

import base64
import binascii
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, unquote

from providers import turns
from providers.base import AudioChunk, EmbeddedFile, Payload, Provider, RealtimeRead, RequestTags, StreamEvent, \
    Turn, Usage, UsageUnknowable, int_of, names_without, str_of, strings_of, sub, usage_make

MAX_TOOL_CALLS = 256  # a tool-call index is untrusted input: never grow a list to its size
IMAGE_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}
# Dated or versioned names price like their family: gpt-4o-mini-2024-07-18 -> gpt-4o-mini.
# Ollama's ":latest" tag names the same model as no tag.
VERSION_SUFFIXES = (re.compile(r"-\d{4}-\d{2}-\d{2}$"), re.compile(r"-latest$"),
                    re.compile(r"-preview(-\d{2}-\d{2})?$"), re.compile(r":latest$"))
# Streams that report usage only when asked (stream_options.include_usage).
USAGE_INJECT_ENDPOINTS = ("/chat/completions", "/completions")
STREAM_FIELDS = ("stream", "stream_options")  # what usage_inject reads and writes
USAGE_FORMATS = ("json", "verbose_json", "diarized_json")  # a transcription's answers that report usage
CONVERSATION_ENDPOINTS = ("/chat/completions", "/responses", "/completions")
# Where OpenAI-compatible servers put a reasoning model's thinking in a chat message or delta: Groq and
# OpenRouter `reasoning`, vLLM and DeepSeek `reasoning_content`. Thinking is content (time to first token).
REASONING_FIELDS = ("reasoning", "reasoning_content")
# Realtime API: audio formats by their session names (beta: "pcm16"; GA: {"type": "audio/pcm", "rate": 24000}).
REALTIME_CODECS = {"pcm16": "pcm16", "audio/pcm": "pcm16", "g711_ulaw": "ulaw", "audio/pcmu": "ulaw",
                   "g711_alaw": "alaw", "audio/pcma": "alaw"}
REALTIME_OUTPUT_AUDIO = ("response.output_audio.delta", "response.audio.delta")


def chat_chunks_reassemble(chunks: list[dict]) -> dict[str, Any]:
    """Rebuild a chat completion (content, tool calls, finish reason, usage) from its chunks; a legacy
    completion (text) from text_completion chunks."""
    legacy = any(chunk.get("object") == "text_completion" for chunk in chunks)
    result: dict[str, Any] = {"object": "text_completion" if legacy else "chat.completion", "choices": []}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key in ("id", "model", "created", "system_fingerprint", "service_tier"):  # the tier prices it
            if chunk.get(key) is not None:
                result[key] = chunk[key]
        if chunk.get("usage"):
            result["usage"] = chunk["usage"]
        elif isinstance(chunk.get("x_groq"), dict) and chunk["x_groq"].get("usage"):
            result["usage"] = chunk["x_groq"]["usage"]  # Groq reports a stream's usage only there
        if chunk.get("error"):  # an error in the stream itself (OpenRouter: a chunk with error and choices)
            result["error"] = chunk["error"]
        choice_list = chunk.get("choices")
        for choice in choice_list if isinstance(choice_list, list) else []:
            if isinstance(choice, dict):  # broken upstreams: skip what is not a choice
                _choice_add(choices, choice)
    result["choices"] = [choices[i] for i in sorted(choices)]
    return result


def _choice_add(choices: dict[int, dict[str, Any]], choice: dict) -> None:
    """Fold one streamed choice delta into its accumulated choice."""
    idx = choice.get("index", 0)
    idx = idx if isinstance(idx, int) else 0
    if "delta" not in choice and isinstance(choice.get("text"), str):  # legacy /v1/completions: text alone
        acc = choices.setdefault(idx, {"index": idx, "text": "", "finish_reason": None})
        acc["text"] = str(acc.get("text") or "") + choice["text"]
        if choice.get("finish_reason"):
            acc["finish_reason"] = choice["finish_reason"]
        return
    acc = choices.setdefault(idx, {"index": idx, "message": {"role": "assistant", "content": None},
                                   "finish_reason": None})
    delta = choice.get("delta")
    delta = delta if isinstance(delta, dict) else {}
    msg = acc.setdefault("message", {"role": "assistant", "content": None})
    if isinstance(delta.get("role"), str) and delta["role"]:
        msg["role"] = delta["role"]
    if isinstance(delta.get("content"), str):
        msg["content"] = (msg["content"] or "") + delta["content"]
    if isinstance(delta.get("refusal"), str):
        msg["refusal"] = (msg.get("refusal") or "") + delta["refusal"]
    for field in REASONING_FIELDS:  # compatible servers' thinking (Groq, vLLM, DeepSeek): kept as they name it
        if isinstance(delta.get(field), str):
            msg[field] = (msg.get(field) or "") + delta[field]
    tool_calls = delta.get("tool_calls")
    for call in tool_calls if isinstance(tool_calls, list) else []:
        if isinstance(call, dict):
            _tool_call_add(msg, call)
    if choice.get("finish_reason"):
        acc["finish_reason"] = choice["finish_reason"]


def _tool_call_add(msg: dict, call: dict) -> None:
    """Fold one streamed tool-call fragment into the message's tool calls."""
    calls = msg.setdefault("tool_calls", [])
    cidx = call.get("index", len(calls))
    if not isinstance(cidx, int) or not 0 <= cidx < MAX_TOOL_CALLS:
        return
    while len(calls) <= cidx:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    slot = calls[cidx]
    if call.get("id"):
        slot["id"] = call["id"]
    if call.get("type"):
        slot["type"] = call["type"]
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    slot["function"]["name"] += fn["name"] if isinstance(fn.get("name"), str) else ""
    slot["function"]["arguments"] += fn["arguments"] if isinstance(fn.get("arguments"), str) else ""


def _realtime_formats(session: Any) -> dict[str, tuple[str, int]]:
    """Audio formats a Realtime session declares, per track (beta and GA shapes)."""
    out = {}
    for track in ("input", "output"):
        fmt = sub(sub(sub(session, "audio"), track), "format")  # GA: audio.input.format {type, rate}
        if isinstance(fmt, dict) and REALTIME_CODECS.get(str(fmt.get("type"))):
            rate = fmt.get("rate") if isinstance(fmt.get("rate"), int) else 24000
            out[track] = (REALTIME_CODECS[str(fmt["type"])], rate)
        beta = sub(session, f"{track}_audio_format")  # beta: "pcm16", "g711_ulaw"...
        if isinstance(beta, str) and beta in REALTIME_CODECS:
            out[track] = (REALTIME_CODECS[beta], 24000 if REALTIME_CODECS[beta] == "pcm16" else 8000)
    return out


def _responses_item(item: Any) -> Turn | None:
    """A Responses API input or output item as a turn."""
    if isinstance(item, str):
        return {"role": "user", "parts": [turns.part("text", text=item)]}
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "message" or "role" in item:
        return {"role": item.get("role", "assistant"), "parts": turns.content_parts(item.get("content"))}
    if kind == "function_call":
        return {"role": "assistant", "parts": [turns.part("tool_call", name=item.get("name", ""),
                                                          call_id=item.get("call_id", ""),
                                                          text=turns.args_text(item.get("arguments", "")))]}
    if kind == "function_call_output":
        return {"role": "tool", "parts": [turns.part("tool_result", call_id=item.get("call_id", ""),
                                                     text=str(item.get("output", "")))]}
    if kind == "reasoning":
        summary = " ".join(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
        return {"role": "assistant", "parts": [turns.part("reasoning", text=summary or "(reasoning)")]}
    return {"role": "assistant", "parts": [turns.part("json", text=turns.args_text(item))]}


def _request_turns(payload: dict) -> list[Turn]:
    """The conversation a chat, Responses or completions request sent."""
    sent = turns.system_turn(payload)
    if isinstance(payload.get("messages"), list):
        sent += [turns.chat_message(m) for m in payload["messages"] if isinstance(m, dict)]
    elif "input" in payload:
        items = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
        sent += [t for t in (_responses_item(i) for i in items) if t]
    elif isinstance(payload.get("prompt"), str):
        sent.append({"role": "user", "parts": [turns.part("text", text=payload["prompt"])]})
    return sent


def _answer_turns(answer: Payload) -> list[Turn]:
    """The reply of a chat completion or a Responses object."""
    if not isinstance(answer, dict):
        return []
    if isinstance(answer.get("choices"), list):
        out = []
        for choice in answer["choices"]:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("message"), dict):
                turn = turns.chat_message(choice["message"])
            else:
                turn = {"role": "assistant", "parts": [turns.part("text", text=str(choice.get("text", "")))]}
            turn["finish"] = choice.get("finish_reason")
            out.append(turn)
        return out
    if isinstance(answer.get("output"), list):
        out = [t for t in (_responses_item(i) for i in answer["output"]) if t]
        if out:
            out[-1]["finish"] = answer.get("status")
        return out
    return []


class OpenAI(Provider):
    name = "openai"
    label = "OpenAI"
    # /openai/v1/x and /v1/x both go to {upstream}/v1/x.
    prefixes = ("/openai/v1/", "/v1/")
    upstream_env = "OPENAI_UPSTREAM_URL"
    upstream_default = "https://api.openai.com"
    prices_id = "openai"
    credential_subprotocols = ("openai-insecure-api-key.",)  # the Realtime API's key from a browser
    stateful_posts = re.compile(r"^/v1/(?:batches|files|uploads|fine_tuning|vector_stores|assistants|threads|containers"
                                r"|evals|conversations|realtime|organization|projects|videos|chatkit)(?:/|$)|/cancel$")
    # Those that run a model: the generating endpoints (images and moderations have a default model, a
    # compatible server such as vLLM its served one), a thread's run (its assistant's), realtime session
    # secrets (the session's), videos, fine-tuning jobs.
    model_posts = re.compile(r"^/v1/(?:chat/completions|completions|responses(?:/compact)?|embeddings|moderations"
                             r"|images/(?:generations|edits|variations)|audio/(?:speech|transcriptions|translations)"
                             r"|realtime/(?:sessions|client_secrets|transcription_sessions|calls/[^/]+/accept)"
                             r"|threads(?:/[^/]+)?/runs|videos(?:/[^/]+/remix|/edits|/extensions)?|fine_tuning/jobs)/?$")
    # Those whose use the log never sees: batches, fine-tuning jobs, the Realtime API's client secrets (a browser
    # then talks to OpenAI directly) and WebRTC or SIP calls (their media goes to OpenAI, not through the gateway),
    # speech (its answer is audio, or events the log does not add up).
    unmetered_posts = re.compile(r"^/v1/(?:batches|fine_tuning/jobs|realtime/(?:client_secrets|sessions"
                                 r"|transcription_sessions|calls(?:/[^/]+/accept)?)|audio/speech)/?$")
    # Transcriptions and translations report their usage in JSON (or a stream) only: as text, SRT or VTT, none.
    usage_format_posts = re.compile(r"^/v1/audio/(?:transcriptions|translations)/?$")
    # Those that run none (what the SDKs send: files, uploads, vector stores, assistants and threads kept upstream,
    # a stored completion's metadata, token counts, cancels, the administration API). Agents, evals' runs, graders'
    # runs and ChatKit sessions run models the gateway cannot read: not here.
    free_posts = re.compile(r"^/v1/(?:files|uploads(?:/[^/]+/(?:parts|complete))?"
                            r"|vector_stores(?:/[^/]+(?:/files(?:/[^/]+)?|/file_batches)?)?|assistants(?:/[^/]+)?"
                            r"|threads(?:/[^/]+(?:/messages(?:/[^/]+)?|/runs/[^/]+(?:/submit_tool_outputs)?)?)?"
                            r"|chat/completions/[^/]+|responses/input_tokens|conversations(?:/[^/]+(?:/items)?)?"
                            r"|containers(?:/[^/]+/files)?|skills(?:/[^/]+(?:/versions)?)?|evals(?:/[^/]+)?"
                            r"|fine_tuning/jobs/[^/]+/(?:pause|resume)|fine_tuning/alpha/graders/validate"
                            r"|audio/(?:voices|voice_consents(?:/[^/]+)?)|realtime/calls/[^/]+/(?:hangup|refer|reject)"
                            r"|organization/.+|projects/.+|vaults(?:/.+)?|webhook_endpoints(?:/.+)?)/?$|/cancel/?$")

    def request_model(self, endpoint: str, payload: Payload) -> str | None:
        """The body's model; a realtime session secret names it in its session (/v1/realtime/client_secrets)."""
        return str_of(payload, "model") or str_of(sub(payload, "session"), "model")

    def batch_models(self, endpoint: str, payload: Payload) -> list[str | None] | None:
        """POST /v1/batches names a JSONL file of requests: their models are in it, not in the request."""
        if endpoint.rstrip("/").endswith("/batches") and isinstance(payload, dict):
            return []
        return None

    def usage_withheld(self, endpoint: str, payload: Payload) -> str:
        """A transcription or translation asked for text, SRT or VTT (its usage is in JSON answers and streams)."""
        if not self.usage_format_posts.search(endpoint) or self.stream_requested(endpoint, payload):
            return ""
        form = sub(payload, "response_format")
        if form is None and isinstance(payload, dict) and "response_format" in payload:  # a form's, unread
            return ("its response_format cannot be read (sent twice, or not as UTF-8 text): it may ask for text, SRT "
                    "or VTT, whose answers report no usage")
        if form is None or (isinstance(form, str) and form.strip().lower() in USAGE_FORMATS):
            return ""
        return f"its answer in response_format {json.dumps(form)} reports no usage (json does)"

    def stream_requested(self, endpoint: str, payload: Payload) -> bool:
        """`stream: true`, or a form's stream field (audio transcriptions are multipart uploads)."""
        stream = sub(payload, "stream")
        return stream is True or (isinstance(stream, str) and stream.strip().lower() == "true")

    def request_tags(self, endpoint: str, payload: Payload) -> RequestTags:
        """`user` (chat, Responses, embeddings...), `metadata` (string pairs) and `prompt_cache_key` (kept as metadata)."""
        metadata = strings_of(sub(payload, "metadata"))
        if cache_key := str_of(payload, "prompt_cache_key"):
            metadata.setdefault("prompt_cache_key", cache_key)
        return RequestTags(user=str_of(payload, "user"), metadata=metadata)

    def error_text(self, answer: Payload) -> str | None:
        """{"error": ...}, or the {"object": "error", "message": ...} of compatible servers (vLLM), or FastAPI's
        {"detail": ...} that servers built on it answer for a path they do not serve (a base URL given with
        its /v1) or a body that fails their validation: a string, or a list of {"loc", "msg"}."""
        said = super().error_text(answer)
        if not said and sub(answer, "object") == "error":
            said = str_of(answer, "message")
        if not said:
            detail = sub(answer, "detail")
            first = detail[0] if isinstance(detail, list) and detail else None
            if isinstance(detail, str) and detail:
                said = detail[:500]
            elif str_of(first, "msg"):
                where = sub(first, "loc")
                place = ".".join(str(p) for p in where) if isinstance(where, list) else ""
                said = f"{place}: {first['msg']}"[:500] if place else str_of(first, "msg")
        return said

    def usage(self, answer: Payload) -> Usage:
        """Chat/completions naming (prompt/completion) and Responses API naming (input/output)."""
        u = sub(answer, "usage")
        # Transcriptions name it input_token_details: their audio tokens are priced apart.
        details_in = sub(u, "prompt_tokens_details") or sub(u, "input_tokens_details") or sub(u, "input_token_details")
        details_out = sub(u, "completion_tokens_details") or sub(u, "output_tokens_details")
        tier = sub(answer, "service_tier")  # default, flex, priority, scale: each priced apart
        inp, out = int_of(u, "prompt_tokens", "input_tokens"), int_of(u, "completion_tokens", "output_tokens")
        reasoning, total = int_of(details_out, "reasoning_tokens"), int_of(u, "total_tokens")
        if out is not None and reasoning and (reasoning > out or (inp is not None and total == inp + out + reasoning)):
            # xAI's Grok (an OpenAI-compatible server) counts reasoning apart from completion_tokens (its total
            # adds them up) and bills both as output: the log's output count holds every generated token.
            out += reasoning
        return usage_make(sub(answer, "model"), inp, out, int_of(details_in, "cached_tokens"), reasoning, total,
                          priced={"input_audio_tokens": int_of(details_in, "audio_tokens"),
                                  "output_audio_tokens": int_of(details_out, "audio_tokens"),
                                  "input_image_tokens": int_of(details_in, "image_tokens"),
                                  "output_image_tokens": int_of(details_out, "image_tokens")},
                          price_context=(("service_tier", tier),) if isinstance(tier, str) and tier else ())

    def stream_reassemble(self, events: list[StreamEvent]) -> Payload:
        """Chat/completions chunks rebuilt into a completion, or the Responses API's final object."""
        final, chunks = None, []
        for name, payload in events:
            if not isinstance(payload, dict):
                continue
            kind = payload.get("type") or name or ""
            kind = kind if isinstance(kind, str) else ""
            if kind in ("response.completed", "response.failed", "response.incomplete") and isinstance(
                    payload.get("response"), dict):
                final = payload["response"]
            elif kind == "transcript.text.done":  # a streamed transcription: its text and usage
                final = payload
            elif ("choices" in payload or str(payload.get("object", "")).endswith("chunk")
                  or isinstance(payload.get("error"), dict)):
                chunks.append(payload)
        if final is not None:
            return final
        return chat_chunks_reassemble(chunks) if chunks else None

    def stream_cut(self, tail: bytes, result: Payload) -> bool:
        """A chat/completions stream that ended before `data: [DONE]` with no finish_reason in any choice.
        Some compatible servers omit [DONE]: a finish_reason ends the answer too. Other streams (Responses
        API, transcriptions) and a stream that reported its own error are not judged here."""
        if self.stream_ended(tail) or not isinstance(result, dict) or result.get("error") \
                or result.get("object") not in ("chat.completion", "text_completion"):
            return False
        choices = result.get("choices")
        return isinstance(choices, list) and not any(isinstance(c, dict) and c.get("finish_reason") for c in choices)

    def event_has_content(self, name: str | None, payload: Payload) -> bool:
        """A chat/completions delta with text, refusal or a tool call; Responses API *.delta events."""
        if not isinstance(payload, dict):
            return False
        kind = payload.get("type") or name or ""
        if isinstance(kind, str) and kind.startswith("response.") and kind.endswith(".delta"):
            return True
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            if (delta.get("content") or delta.get("refusal") or delta.get("tool_calls") or choice.get("text")
                    or any(delta.get(field) for field in REASONING_FIELDS)):
                return True
        return False

    def conversation(self, endpoint: str, request: Payload, answer: Payload) -> list[Turn]:
        """Chat completions, Responses and legacy completions."""
        if not any(p in endpoint for p in CONVERSATION_ENDPOINTS):
            return []
        sent = _request_turns(request) if isinstance(request, dict) else []
        return turns.exchange_turns(sent, _answer_turns(answer))

    def embedded_files(self, answer: Payload) -> list[EmbeddedFile]:
        """b64_json images of an images answer (generations, edits, variations)."""
        items = sub(answer, "data")
        if not isinstance(items, list):
            return []
        fmt = answer.get("output_format") or "png"
        ctype = IMAGE_TYPES.get(fmt, "image/png") if isinstance(fmt, str) else "image/png"
        found = []
        for idx, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("b64_json"), str):
                continue
            try:
                data = base64.b64decode(item["b64_json"], validate=True)
            except (binascii.Error, ValueError):
                continue
            found.append(EmbeddedFile(f"image{idx}", ctype, data, item, "b64_json"))
        return found

    def price_names(self, model: str) -> list[str]:
        """The name, then its family without a date or -latest / -preview suffix."""
        return names_without(model, VERSION_SUFFIXES)

    def realtime_model(self, endpoint: str, query: str) -> str | None:
        """The Realtime API names the model in the upgrade's query: /v1/realtime?model=... (None when it names two:
        servers differ on which of them they take, so a key limited to models saw one and the upstream ran another)."""
        found = parse_qs(query, keep_blank_values=True).get("model")  # an empty one too: a server may take it
        return found[0][:255] if found and found[0] and len(set(found)) == 1 else None

    def realtime_read(self, direction: str, event: Payload) -> RealtimeRead:
        """The Realtime API: audio appends and deltas, turn ends, session formats, response.done usage."""
        read = RealtimeRead()
        kind = sub(event, "type")
        if direction == "client" and kind == "input_audio_buffer.append" and isinstance(sub(event, "audio"), str):
            read.audio.append(AudioChunk("input", event, "audio"))
        elif kind in REALTIME_OUTPUT_AUDIO and isinstance(sub(event, "delta"), str):
            read.audio.append(AudioChunk("output", event, "delta"))
        elif kind in ("input_audio_buffer.commit", "input_audio_buffer.committed"):
            read.ends.append("input")
        elif kind == "response.done":
            read.ends.append("output")
            response = sub(event, "response")
            usage = sub(response, "usage")
            if isinstance(usage, dict):
                details_in = sub(usage, "input_token_details")
                read.usage = usage_make(None, int_of(usage, "input_tokens"), int_of(usage, "output_tokens"),
                                        int_of(details_in, "cached_tokens"), None, int_of(usage, "total_tokens"),
                                        priced={"input_audio_tokens": int_of(details_in, "audio_tokens"),
                                                "cache_audio_read_tokens": int_of(
                                                    sub(details_in, "cached_tokens_details"), "audio_tokens"),
                                                "output_audio_tokens": int_of(sub(usage, "output_token_details"),
                                                                              "audio_tokens")})
        elif kind == "session.update" and direction == "client":
            model = sub(sub(event, "session"), "model")
            read.asks_model = model if isinstance(model, str) else None
        elif kind in ("session.created", "session.updated") and direction == "upstream":  # the server's word only
            session = sub(event, "session")
            read.model = sub(session, "model") if isinstance(sub(session, "model"), str) else None
            read.formats = _realtime_formats(session)
        return read

    realtime_error_events = True

    def realtime_error(self, message: str, *, kind: str, code: str, event_id: str | None = None) -> str | None:
        """The Realtime API's `error` server event: the SDKs yield it as an ErrorEvent (they raise nothing)."""
        return json.dumps({"type": "error", "event_id": f"event_gateway_{uuid.uuid4().hex[:20]}", "error": {
            "type": kind, "code": code, "message": message, "param": None, "event_id": event_id}})

    def usage_injectable(self, method: str, upstream_path: str) -> bool:
        """Chat completions and completions: their streams report usage only when asked. Read percent-decoded, as
        the upstream routes it (/v1/chat/completion%73 is chat completions, and escaped the option)."""
        return method == "POST" and unquote(upstream_path).rstrip("/").endswith(USAGE_INJECT_ENDPOINTS)

    def usage_inject(self, method: str, upstream_path: str, payload: Payload) -> Payload | None:
        """A streamed chat/completions body with stream_options.include_usage set, when it was not."""
        if not self.usage_injectable(method, upstream_path):
            return None
        if isinstance(payload, dict) and (other := next((k for k in payload if k.lower() in STREAM_FIELDS
                                                           and k not in STREAM_FIELDS), None)):
            # Go's JSON (Ollama, many compatible servers) matches field names in any case: "Stream": true streams
            # there, and the gateway, reading "stream", would not ask it for its usage.
            raise UsageUnknowable(f"this request names '{other}' (a server matching field names in any case may read "
                                  "it as 'stream' or 'stream_options', and stream without its usage)")
        # As the gateway reads a stream request (a compatible server such as vLLM takes "stream": "true" too).
        if not isinstance(payload, dict) or not self.stream_requested(upstream_path, payload):
            return None
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            return None  # malformed: let the upstream answer it unchanged
        if (options or {}).get("include_usage"):
            return None  # the client asked: it gets the usage chunk
        return {**payload, "stream_options": {**(options or {}), "include_usage": True}}

    def injected_event(self, payload: Payload) -> bool:
        """The usage-only chunk: no choices, a usage object."""
        return isinstance(payload, dict) and payload.get("choices") == [] and isinstance(payload.get("usage"), dict)
