"""Google Gemini (generativelanguage.googleapis.com): generateContent, its stream and Google's error shape."""

import json
import re
from typing import Any
from urllib.parse import unquote

from providers import turns
from providers.base import AudioChunk, Payload, Provider, RealtimeRead, RequestTags, StreamEvent, Turn, Usage, \
    int_of, names_without, str_of, sub, usage_make
from providers.openai import OpenAI

MODEL_IN_PATH = re.compile(r"/(?:models|tunedModels)/([^/:]+)")
# Google's OpenAI-compatible endpoints (/v1beta/openai/chat/completions, ...) speak OpenAI's wire format:
# their requests, answers and streams are read as OpenAI's are.
OPENAI_COMPATIBLE = "/openai/"
_OPENAI_WIRE = OpenAI()
# gemini-2.0-flash-001 and gemini-2.5-pro-preview-05-06 price like gemini-2.0-flash / gemini-2.5-pro.
VERSION_SUFFIXES = (re.compile(r"-\d{3}$"), re.compile(r"-preview(-\d{2}-\d{2})?$"), re.compile(r"-latest$"))
RATE_IN_MIME = re.compile(r"rate=(\d+)")
GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _gemini_parts(parts: Any) -> list[dict[str, Any]]:
    """Gemini's parts as conversation pieces: text, thoughts, inline data (images shown), function calls and results."""
    out = []
    for p in parts if isinstance(parts, list) else []:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("text"), str):
            out.append(turns.part("reasoning" if p.get("thought") else "text", text=p["text"]))
        elif isinstance(p.get("inlineData") or p.get("inline_data"), dict):
            blob = p.get("inlineData") or p.get("inline_data")
            mime, data = str(blob.get("mimeType") or blob.get("mime_type") or ""), str(blob.get("data") or "")
            url = f"data:{mime};base64,{data}"
            if url.lower().startswith(turns.INLINE_IMAGE_PREFIXES):
                out.append(turns.part("image", text=f"(inline image, {len(data) * 3 // 4 // 1024:,} KB)", data_url=url))
            else:
                out.append(turns.part("media", text=f"({mime or 'binary'} data)"))
        elif isinstance(p.get("functionCall"), dict):
            call = p["functionCall"]
            out.append(turns.part("tool_call", name=call.get("name", ""), call_id=call.get("id", ""),
                                  text=turns.args_text(call.get("args"))))
        elif isinstance(p.get("functionResponse"), dict):
            result = p["functionResponse"]
            out.append(turns.part("tool_result", call_id=result.get("name", ""),
                                  text=turns.args_text(result.get("response"))))
        else:
            out.append(turns.part("json", text=turns.args_text(p)))
    return out


def _parts_merge(parts: list[dict[str, Any]], new: list[Any]) -> None:
    """Append streamed parts, joining consecutive text pieces of the same kind."""
    for part in new:
        if not isinstance(part, dict):
            continue
        last = parts[-1] if parts else None
        if ("text" in part and last is not None and "text" in last and isinstance(part["text"], str)
                and isinstance(last["text"], str) and bool(last.get("thought")) == bool(part.get("thought"))):
            last["text"] += part["text"]
            if part.get("thoughtSignature"):
                last["thoughtSignature"] = part["thoughtSignature"]
        else:
            parts.append(dict(part))


def _modality_counts(meta: Any) -> dict[str, int | None]:
    """usageMetadata's audio and image tokens (priced apart from text), from its per-modality details."""
    def count(modality: str, *names: str) -> int | None:
        for name in names:
            details = sub(meta, name)
            for d in details if isinstance(details, list) else []:
                if isinstance(d, dict) and d.get("modality") == modality:
                    return int_of(d, "tokenCount")
        return None

    output = ("candidatesTokensDetails", "responseTokensDetails")  # generateContent's, the Live API's
    return {"input_audio_tokens": count("AUDIO", "promptTokensDetails"),
            "cache_audio_read_tokens": count("AUDIO", "cacheTokensDetails"),
            "output_audio_tokens": count("AUDIO", *output),
            "input_image_tokens": count("IMAGE", "promptTokensDetails"),
            "output_image_tokens": count("IMAGE", *output)}


# usageMetadata's counts of the prompt side (promptTokenCount, cachedContentTokenCount, their details).
PROMPT_USAGE = ("prompt", "cachedContent", "cacheTokens", "toolUsePrompt")


class Gemini(Provider):
    name = "gemini"
    label = "Google Gemini"
    # The google-genai SDK adds the API version itself (/v1beta/models/...), so the prefix is bare.
    prefixes = ("/gemini/",)
    upstream_prefix = "/"
    path_versions = ("v1", "v1beta", "v1alpha")
    upstream_env = "GEMINI_UPSTREAM_URL"
    upstream_default = "https://generativelanguage.googleapis.com"
    prices_id = "google"
    credential_headers = ("x-goog-api-key", "authorization")
    credential_query = ("key",)
    stateful_posts = re.compile(r"^/(?:upload/)?v1(?:alpha|beta)?/(?:openai/)?(?:files|cachedContents|tunedModels|corpora|fileSearchStores"
                                r"|batches|operations)(?:/|$)|:(?:batchGenerateContent|asyncBatchEmbedContent|cancel"
                                r"|predictLongRunning)$")
    # The Interactions API runs the model (or the agent) its body names; the OpenAI-compatible endpoints, theirs.
    model_posts = re.compile(r"^/v1(?:alpha|beta)?/(?:interactions|cachedContents|openai/(?:chat/completions"
                             r"|completions|embeddings|images/generations|audio/speech))/?$")
    # Those whose use the log never sees: batches (their results come in an operation, later) and ephemeral Live
    # tokens (their holder talks to Google directly; google-genai posts to auth_tokens), the OpenAI-compatible
    # speech (its answer is audio).
    unmetered_posts = re.compile(r":(?:batchGenerateContent|asyncBatchEmbedContent)$"
                                 r"|^/v1(?:alpha|beta)?/(?:authTokens|auth_tokens|openai/audio/speech)/?$")
    # Those that run none: a file's upload (its start and its bytes, /upload/v1beta/files), a file registered, a
    # file store made, cancels. Every generating method names its model in the path (models/{model}:...); file
    # stores' imports (an embedding model), tuning and ephemeral Live tokens (authTokens) are not here.
    free_posts = re.compile(r"^/(?:upload/)?v1(?:alpha|beta)?/(?:files(?::register)?|openai/files|fileSearchStores)/?$"
                            r"|:cancel$")
    # Google's system parameters sent as headers that change the answer (cloud.google.com/apis/docs/system-parameters):
    # the Cloud project billed and whose quota and settings apply; the fields kept in the answer (a field mask's
    # answer lacks the others); the method the request is read as.
    answer_headers = ("x-goog-user-project", "x-goog-fieldmask", "x-http-method-override")
    # files.upload: the start call answers with the URL the bytes go to (upload, finalize).
    link_headers = ("x-goog-upload-url",)

    def credential_pair(self, credential: str) -> tuple[str, str]:
        """Its SDK's own header."""
        return "x-goog-api-key", credential

    def error_body(self, message: str, *, kind: str = "gateway_error", status: int = 500) -> bytes:
        """{"error": {code, message, status}}."""
        return json.dumps({"error": {"code": status, "message": message,
                                     "status": GOOGLE_STATUS.get(status, "INTERNAL")}}).encode()

    def stream_ended(self, tail: bytes) -> bool:
        """Gemini's last chunk is the one with a finishReason (its OpenAI-compatible streams end as OpenAI's)."""
        return b'"finishReason"' in tail or _OPENAI_WIRE.stream_ended(tail)

    def stream_cut(self, tail: bytes, result: Payload) -> bool:
        """A stream whose candidates never got a finishReason (a blocked prompt, an error chunk are not judged);
        an OpenAI-compatible endpoint's stream as OpenAI's."""
        if isinstance(result, dict) and "choices" in result:
            return _OPENAI_WIRE.stream_cut(tail, result)
        if not isinstance(result, dict) or result.get("error") or sub(result.get("promptFeedback"), "blockReason"):
            return False
        cands = result.get("candidates")
        return isinstance(cands, list) and bool(cands) and not any(
            isinstance(c, dict) and c.get("finishReason") for c in cands)

    def stream_error_event(self, message: str) -> bytes:
        """A data line holding Gemini's error body: google-genai raises APIError for a chunk that is one (it
        cannot read an `event:` line)."""
        return b"data: " + self.error_body(message, status=502) + b"\n\n"

    def content_policy_answer(self, endpoint: str, query: str, payload: Payload) -> tuple[int, str, bytes]:
        """A prompt Gemini's safety filter blocks: a 200 with no candidates and promptFeedback.blockReason.

        The SDK raises nothing: the answer's text is empty and prompt_feedback says why. Streamed
        (:streamGenerateContent), it is the stream's only event (alt=sse) or a one-element array. The
        OpenAI-compatible endpoints answer as OpenAI does (the OpenAI SDK raises its BadRequestError).
        """
        if OPENAI_COMPATIBLE in endpoint:
            return _OPENAI_WIRE.content_policy_answer(endpoint, query, payload)
        answer = {"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
            {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
            {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "HIGH", "blocked": True},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}]},
            "usageMetadata": {"promptTokenCount": 0, "totalTokenCount": 0}}
        model = self.request_model(endpoint, payload)
        if model:
            answer["modelVersion"] = model
        if not self.stream_requested(endpoint, payload):
            return 200, "application/json; charset=UTF-8", json.dumps(answer).encode()
        if "alt=sse" in query:
            return 200, "text/event-stream", b"data: " + json.dumps(answer).encode() + b"\r\n\r\n"
        return 200, "application/json; charset=UTF-8", json.dumps([answer]).encode()

    def request_model(self, endpoint: str, payload: Payload) -> str | None:
        """Gemini names the model in the path: /v1beta/models/{model}:generateContent; its OpenAI-compatible
        endpoints, the Interactions API and a cached content's creation in the body ("gemini-2.5-flash" or
        "models/gemini-2.5-flash")."""
        found = MODEL_IN_PATH.search(endpoint)
        if found:
            return found.group(1)[:255]
        model = str_of(payload, "model")
        return model.removeprefix("models/")[:255] if model else None

    def stream_requested(self, endpoint: str, payload: Payload) -> bool:
        """Gemini streams by method name (:streamGenerateContent); its OpenAI-compatible endpoints by `stream`."""
        if OPENAI_COMPATIBLE in endpoint:
            return _OPENAI_WIRE.stream_requested(endpoint, payload)
        return ":streamGenerateContent" in endpoint

    def request_tags(self, endpoint: str, payload: Payload) -> RequestTags:
        """The OpenAI-compatible endpoints' `user` and `metadata`."""
        if OPENAI_COMPATIBLE in endpoint:
            return _OPENAI_WIRE.request_tags(endpoint, payload)
        return super().request_tags(endpoint, payload)

    def usage(self, answer: Payload) -> Usage:
        """usageMetadata: thoughts are billed as output; tool-use prompt tokens as input. An OpenAI-compatible
        endpoint's answer (`usage`, no usageMetadata) is read as OpenAI's."""
        if isinstance(answer, dict) and "usageMetadata" not in answer and isinstance(answer.get("usage"), dict):
            return _OPENAI_WIRE.usage(answer)
        answer = self._chunks_merged(answer)
        m = sub(answer, "usageMetadata")
        prompt, tool = int_of(m, "promptTokenCount"), int_of(m, "toolUsePromptTokenCount")
        candidates, thoughts = int_of(m, "candidatesTokenCount"), int_of(m, "thoughtsTokenCount")
        total = int_of(m, "totalTokenCount")
        inp = prompt + (tool or 0) if prompt is not None else None
        out = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
        if out is None and total is not None and inp is not None:
            out = total - inp  # Gemini omits candidatesTokenCount when nothing was generated
        return usage_make(sub(answer, "modelVersion"), inp, out, int_of(m, "cachedContentTokenCount"), thoughts,
                          total, priced=_modality_counts(m),
                          parts={"input_tokens": {"promptTokenCount": prompt, "toolUsePromptTokenCount": tool},
                                 "output_tokens": {"candidatesTokenCount": candidates,
                                                   "thoughtsTokenCount": thoughts}})

    def error_text(self, answer: Payload) -> str | None:
        """{"error": {...}}; :streamGenerateContent without alt=sse answers an error too as one JSON array, [{"error":
        {...}}]: its message is the array's first error's."""
        read = super().error_text
        if isinstance(answer, list):
            return next((said for chunk in answer if (said := read(chunk))), None)
        return read(answer)

    def failure_text(self, answer: Payload) -> str | None:
        """:streamGenerateContent without alt=sse answers 200 with one JSON array: a chunk of it that is an error
        (the model overloaded mid-answer) says the answer failed."""
        return self.error_text(self._chunks_merged(answer)) if isinstance(answer, list) else None

    def _chunks_merged(self, answer: Payload) -> Payload:
        """:streamGenerateContent without alt=sse answers one JSON array of its chunks: read as one answer."""
        if isinstance(answer, list):
            return self.stream_reassemble([(None, chunk) for chunk in answer])
        return answer

    def stream_reassemble(self, events: list[StreamEvent]) -> Payload:
        """A GenerateContentResponse rebuilt from streamed chunks (usageMetadata: the last one; an error a chunk
        reported mid-stream, as its `error`); an OpenAI-compatible endpoint's chunks as OpenAI's."""
        if any(isinstance(p, dict) and ("choices" in p or str(p.get("object", "")).endswith("chunk")) for _, p in events):
            return _OPENAI_WIRE.stream_reassemble(events)
        result: dict[str, Any] = {}
        candidates: dict[int, dict[str, Any]] = {}
        for _, p in events:
            if not isinstance(p, dict):
                continue
            for key in ("usageMetadata", "modelVersion", "responseId", "promptFeedback", "error"):
                if p.get(key) is not None:
                    result[key] = p[key]
            cands = p.get("candidates")
            for cand in cands if isinstance(cands, list) else []:
                if not isinstance(cand, dict):
                    continue
                idx = cand.get("index", 0)
                idx = idx if isinstance(idx, int) else 0
                acc = candidates.setdefault(idx, {"index": idx, "content": {"role": "model", "parts": []}})
                content = cand.get("content") if isinstance(cand.get("content"), dict) else {}
                if content.get("role"):
                    acc["content"]["role"] = content["role"]
                parts = content.get("parts")
                _parts_merge(acc["content"]["parts"], parts if isinstance(parts, list) else [])
                for key, value in cand.items():
                    if key not in ("content", "index") and value is not None:
                        acc[key] = value
        if not candidates and not result:
            return None
        result["candidates"] = [candidates[i] for i in sorted(candidates)]
        usage = result.get("usageMetadata")
        if isinstance(usage, dict) and candidates and not any("finishReason" in c for c in result["candidates"]):
            # A chunk's counts run as the answer grows: before the last (finishReason) only the
            # prompt's are final, and a cut stream's output count is unknown.
            result["usageMetadata"] = {k: v for k, v in usage.items() if k.startswith(PROMPT_USAGE)}
        return result

    def conversation(self, endpoint: str, request: Payload, answer: Payload) -> list[Turn]:
        """generateContent / streamGenerateContent: systemInstruction, contents, and the first candidate's reply;
        the OpenAI-compatible chat as OpenAI's."""
        if OPENAI_COMPATIBLE in endpoint:
            return _OPENAI_WIRE.conversation(endpoint, request, answer)
        if ":generatecontent" not in endpoint.lower() and ":streamgeneratecontent" not in endpoint.lower():
            return []
        answer = self._chunks_merged(answer)
        sent: list[Turn] = []
        if isinstance(request, dict):
            system = request.get("systemInstruction") or request.get("system_instruction")
            if isinstance(system, dict):
                sent.append({"role": "system", "parts": _gemini_parts(system.get("parts"))})
            contents = request.get("contents")
            for content in contents if isinstance(contents, list) else []:
                if isinstance(content, dict):
                    sent.append({"role": content.get("role") or "user", "parts": _gemini_parts(content.get("parts"))})
        reply: list[Turn] = []
        candidates = answer.get("candidates") if isinstance(answer, dict) else None
        if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict):
            content = candidates[0].get("content") if isinstance(candidates[0].get("content"), dict) else {}
            # Gemini calls the assistant "model": shown as the assistant, as every other provider's reply.
            reply = [{"role": "assistant", "parts": _gemini_parts(content.get("parts")),
                      "finish": candidates[0].get("finishReason")}]
        return turns.exchange_turns(sent, reply)

    def event_has_content(self, name: str | None, payload: Payload) -> bool:
        """A chunk whose candidates hold a non-empty part (text or function call), or an OpenAI-compatible
        endpoint's chunk with content."""
        if isinstance(payload, dict) and "choices" in payload:
            return _OPENAI_WIRE.event_has_content(name, payload)
        cands = sub(payload, "candidates")
        for cand in cands if isinstance(cands, list) else []:
            parts = sub(sub(cand, "content"), "parts")
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and (part.get("text") or part.get("functionCall")):
                    return True
        return False

    def realtime_model_in_first_message(self, endpoint: str) -> bool:
        """A Live API session (BidiGenerateContent, its Constrained form for ephemeral tokens) names its model only in
        its first message, {"setup": {"model": "models/..."}}; any other WebSocket of Google's is held to the same."""
        return True

    def realtime_read(self, direction: str, event: Payload) -> RealtimeRead:
        """The Live API (BidiGenerateContent): realtimeInput audio, modelTurn inlineData, turnComplete, usage."""
        read = RealtimeRead()
        if direction == "client":  # google-genai writes its messages' fields in snake_case, the REST docs camelCase
            model = sub(sub(event, "setup"), "model")  # the session's first message names its model
            if isinstance(model, str):  # as a path's models/{model} is read: a key's model list names it bare
                read.model = read.asks_model = model.removeprefix("models/")
            realtime = sub(event, "realtimeInput") or sub(event, "realtime_input")
            chunks = sub(realtime, "mediaChunks") or sub(realtime, "media_chunks")
            blobs = [sub(realtime, "audio"), *(chunks if isinstance(chunks, list) else [])]
            self._audio_blobs(read, "input", [b for b in blobs if isinstance(b, dict)])
            return read
        content = sub(event, "serverContent")
        parts = sub(sub(content, "modelTurn"), "parts")
        self._audio_blobs(read, "output", [sub(p, "inlineData") for p in parts if isinstance(sub(p, "inlineData"), dict)]
                          if isinstance(parts, list) else [])
        if sub(content, "turnComplete") is True:
            read.ends += ["input", "output"]
        meta = sub(event, "usageMetadata")
        if isinstance(meta, dict):
            read.usage = usage_make(None, int_of(meta, "promptTokenCount"), int_of(meta, "responseTokenCount"),
                                    int_of(meta, "cachedContentTokenCount"), int_of(meta, "thoughtsTokenCount"),
                                    int_of(meta, "totalTokenCount"), priced=_modality_counts(meta))
        return read

    @staticmethod
    def _audio_blobs(read: RealtimeRead, track: str, blobs: list[dict]) -> None:
        """Base64 PCM blobs ({"mimeType": "audio/pcm;rate=16000", "data": ...}) of one track."""
        for blob in blobs:
            mime = str(blob.get("mimeType") or blob.get("mime_type") or "")
            if mime.startswith("audio/pcm") and isinstance(blob.get("data"), str):
                rate = RATE_IN_MIME.search(mime)
                read.formats[track] = ("pcm16", int(rate.group(1)) if rate else 16000 if track == "input" else 24000)
                read.audio.append(AudioChunk(track, blob, "data"))

    def price_names(self, model: str) -> list[str]:
        """The name without "models/", then its family without a version or preview suffix."""
        return names_without(model.removeprefix("models/"), VERSION_SUFFIXES)

    def usage_injectable(self, method: str, upstream_path: str) -> bool:
        """Its OpenAI-compatible chat and completions streams, which report usage only when asked, as OpenAI's (a
        key counting tokens or spend counted none of them); generateContent's streams always report it."""
        return OPENAI_COMPATIBLE in unquote(upstream_path) and _OPENAI_WIRE.usage_injectable(method, upstream_path)

    def usage_inject(self, method: str, upstream_path: str, payload: Payload) -> Payload | None:
        """As OpenAI's, on the OpenAI-compatible endpoints."""
        return _OPENAI_WIRE.usage_inject(method, upstream_path, payload) \
            if self.usage_injectable(method, upstream_path) else None

    def injected_event(self, payload: Payload) -> bool:
        """As OpenAI's: the usage-only chunk."""
        return _OPENAI_WIRE.injected_event(payload)
