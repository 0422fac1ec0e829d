"""Builds logged exchanges (rows and files) directly, for admin, export and retention tests."""

import json
from datetime import datetime, timedelta, timezone

from django.core.files.storage import storages

from logs.ids import uuid7
from logs.models import BinaryFile, Request, Response
from logs.outcomes import Outcome
from logs.storage import extension_for, payload_name, payload_save_bytes
from testing.media import png_bytes

PNG = png_bytes(4, 4)
WAV = b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00@\x1f\x00\x00\x80>\x00\x00\x02\x00\x10\x00data\x00\x00\x00\x00"
AUTH = [["Authorization", "Bearer sk-…9f2c"], ["Content-Type", "application/json"], ["User-Agent", "OpenAI/Python"]]


def exchange_make(*, endpoint: str = "/v1/chat/completions", model: str | None = "gpt-4o-mini",
                  provider: str = "openai", status: int | None = 200, outcome: str = Outcome.COMPLETED,
                  body: dict | str | None = None, resp_body: dict | str | None = None, when: datetime | None = None,
                  stream: bool = False, stream_result: dict | None = None, offsets: list | None = None,
                  response: bool = True, headers: list | None = None, tokens: tuple[int, int] | None = None,
                  method: str = "POST", key_fp: str = "", gateway_key: str = "",
                  content_type: str = "application/json", end_user: str | None = None,
                  session_id: str | None = None, metadata: dict | None = None, **usage) -> Request:
    """One exchange: a request row and (unless response=False) its response row.

    `usage` sets further response fields (answering model, cached/reasoning tokens, cost_usd...).
    """
    when = when or datetime.now(timezone.utc)
    if body is None:
        body = {"model": model, "messages": [{"role": "user", "content": "hello there"}]}
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    req = Request.objects.create(
        id=uuid7(when.timestamp()), provider=provider, endpoint=endpoint, method=method, headers=headers or AUTH,
        body=text, body_size=len(text or ""), content_type=content_type, model=model,
        stream_requested=stream, created_at=when, key_fingerprint=key_fp, gateway_key=gateway_key,
        end_user=end_user, session_id=session_id, metadata=metadata)
    if response:
        rtext = resp_body if isinstance(resp_body, str) or resp_body is None else json.dumps(resp_body)
        is_error = outcome != Outcome.COMPLETED or (status or 0) >= 400
        fields = dict(
            request=req, status_code=status, outcome=outcome, is_error=is_error, body=rtext,
            body_size=len(rtext or ""), is_stream=stream, stream_result=stream_result, event_offsets_ms=offsets,
            duration_ms=120.5, ttfb_ms=40.2, model=model, headers=[["content-type", "application/json"]],
            content_type="text/event-stream" if stream else "application/json",
            input_tokens=tokens[0] if tokens else None, output_tokens=tokens[1] if tokens else None,
            total_tokens=sum(tokens) if tokens else None, created_at=when + timedelta(milliseconds=120))
        Response.objects.create(**{**fields, **usage})
    return Request.objects.select_related("response").get(pk=req.pk)


def file_attach(req: Request, data: bytes, content_type: str, ext: str, *, to_response: bool = True,
                filename: str = "", role: str | None = None) -> BinaryFile:
    """Store bytes in the payload store (named as the ingest names files) and add their binary_files row."""
    file_id = uuid7(req.created_at.timestamp())
    name = payload_name(req.provider, req.created_at.timestamp(), file_id.hex, content_type)
    name = payload_save_bytes(name.removesuffix(extension_for(content_type)) + ext, data)
    resp = getattr(req, "response", None) if to_response else None
    return BinaryFile.objects.create(
        id=file_id, request=req, response=resp, file=name, content_type=content_type, size=len(data),
        filename=filename,
        role=role or (BinaryFile.Role.RESPONSE_IMAGE if to_response else BinaryFile.Role.REQUEST_PART),
        created_at=req.created_at)


def streamed_chat(when: datetime | None = None) -> Request:
    """A streamed chat completion whose reply includes text and a tool call."""
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me check "}}]},
              {"choices": [{"index": 0, "delta": {"content": "the weather."}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_7", "type": "function",
                                                                  "function": {"name": "get_weather",
                                                                               "arguments": "{\"city\": \"Paris\"}"}}]},
                            "finish_reason": "tool_calls"}]}]
    raw = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    result = {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Let me check the weather.",
        "tool_calls": [{"id": "call_7", "type": "function",
                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}}]}
    return exchange_make(stream=True, resp_body=raw, stream_result={"events": 4, "result": result},
                         offsets=[41.0, 55.5, 80.25, 90.0], when=when,
                         body={"model": "gpt-4o-mini", "stream": True, "messages": [
                             {"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Weather in Paris?"}]})


def stored(name: str) -> bytes | None:
    """A file's bytes read back through the payload store (None when the store does not have it)."""
    store = storages["payloads"]
    if not store.exists(name):
        return None
    with store.open(name, "rb") as f:
        return f.read()
