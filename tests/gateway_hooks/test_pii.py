"""The shipped PII hook: e-mail addresses, phone numbers and card numbers never leave; the log keeps the mapping."""

import gzip
import json

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types

from gateway_hooks.pii import Masker, luhn_ok
from logs.models import Request, Response

PII = "gateway_hooks.pii.PiiMask"


@pytest.mark.parametrize("text,masked", [
    ("mail jane.doe+x@example.co.uk now", "mail [EMAIL_1] now"),
    ("card 4111 1111 1111 1111 ok", "card [CARD_1] ok"),
    ("card 4111-1111-1111-1111", "card [CARD_1]"),
    ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE_1] or [PHONE_2]"),
    ("order 4111 1111 1111 1112 is not a card", "order 4111 1111 1111 1112 is not a card"),  # fails Luhn
    ("version 1.2.3 in 2024, id 12345", "version 1.2.3 in 2024, id 12345"),
    ("a@b.io and a@b.io again", "[EMAIL_1] and [EMAIL_1] again"),
    ("+33 6 12 34 56 78, +61 4 1234 5678, +353 1 234 5678", "[PHONE_1], [PHONE_2], [PHONE_3]"),
    ("+44 7 700 900 123", "[PHONE_1]"),
    ("at 2024-11-30 12:00 from 192.168.100.200", "at 2024-11-30 12:00 from 192.168.100.200"),
    ("josé@example.com, jürgen@müller.de", "[EMAIL_1], [EMAIL_2]"),  # non-ASCII addresses were sent as they were
    ("id 550e8400-e29b-41d4-a716-446655440000 on 10.0.19045.2965", "id 550e8400-e29b-41d4-a716-446655440000 on "
                                                                   "10.0.19045.2965"),  # a UUID, a version
    ("8 000 000 000 people", "8 000 000 000 people"),  # a number grouped by spaces
    ("see https://cdn.example.com/u/4155550123/photo.png or call 415 555 0123",
     "see https://cdn.example.com/u/4155550123/photo.png or call [PHONE_1]"),  # a URL as it is
])
def test_masker_text(text, masked):
    assert Masker().text(text) == masked


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005") and not luhn_ok("4111111111111112")


def test_only_prompt_text_is_searched():
    payload = {"model": "gpt-4o", "user": "jane@example.com",
               "messages": [{"role": "user", "content": [
                   {"type": "text", "text": "I am jane@example.com"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,4111111111111111"}}]}]}
    masker = Masker()
    out = masker.walk(payload)
    assert out["user"] == "jane@example.com"  # not a prompt
    assert out["messages"][0]["content"][0]["text"] == "I am [EMAIL_1]"
    assert out["messages"][0]["content"][1] == payload["messages"][0]["content"][1]
    assert masker.mapping == {"[EMAIL_1]": "jane@example.com"}


def test_a_tool_calls_arguments_are_searched_whatever_their_names():
    card = "4111 1111 1111 1111"
    anthropic_ = {"messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "mail",
                                                                  "input": {"to": "jane@example.com",
                                                                            "body": {"card": card}}}]}]}
    openai_ = {"messages": [{"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "mail", "arguments": json.dumps({"to": "jane@example.com", "phone": "+1 415 555 0100"})}}]}]}
    gemini = {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "mail", "args": {"to": "jane@example.com"}}}]},
                           {"role": "user", "parts": [{"functionResponse": {"name": "mail", "response": {
                               "sent_to": "jane@example.com"}}}]}]}
    for payload in (anthropic_, openai_, gemini):
        masker = Masker()
        out = json.dumps(masker.walk(payload))
        assert "jane@example.com" not in out and "[EMAIL_1]" in out and "4111" not in out and "415 555" not in out
        assert "toolu_1" in out or "call_1" in out or '"name": "mail"' in out  # ids and names stay


def test_anthropics_documents_and_citations_are_searched():
    """A plain-text document's text is its source's data (elsewhere base64, never searched), and its title and
    context are the user's; an assistant turn sent back quotes the document in its citations."""
    doc = "Contract of jane@example.com, card 4111 1111 1111 1111"
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x4155550123"}}
    payload = {"model": "claude-sonnet-4-5", "max_tokens": 100, "tools": [{"name": "t", "input_schema": {
        "type": "object", "title": "mail jane@example.com", "properties": {}}}], "messages": [
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": doc},
             "title": "jane@example.com's contract", "context": "from +1 415 555 0100", "citations": {"enabled": True}},
            {"type": "search_result", "source": "https://example.com/4155550123", "title": "about jane@example.com",
             "content": [{"type": "text", "text": "jane@example.com"}]},
            pdf, {"type": "text", "text": "Summarise"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It names a card.", "citations": [
            {"type": "char_location", "cited_text": "card 4111 1111 1111 1111", "document_index": 0,
             "document_title": "jane@example.com's contract", "start_char_index": 30, "end_char_index": 54}]}]},
        {"role": "user", "content": "Which?"}]}
    masker = Masker()
    out = masker.walk(payload)
    dumped = json.dumps(out["messages"])
    assert "jane@example.com" not in dumped and "4111" not in dumped and "415 555" not in dumped
    document = out["messages"][0]["content"][0]
    assert document["source"]["data"] == "Contract of [EMAIL_1], card [CARD_1]"
    assert (document["title"], document["context"]) == ("[EMAIL_1]'s contract", "from [PHONE_1]")
    assert out["messages"][0]["content"][1]["source"] == "https://example.com/4155550123"
    assert out["messages"][0]["content"][2] == pdf  # base64 as it is
    assert out["messages"][1]["content"][0]["citations"][0]["cited_text"] == "card [CARD_1]"
    assert out["tools"] == payload["tools"]  # a schema's title is no prompt


@pytest.mark.django_db(transaction=True)
def test_values_never_go_upstream_and_the_log_maps_them(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [PII]
    prompt = "I am jane@example.com, card 4111 1111 1111 1111, phone +1 415 555 0100."
    gemini = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.0-flash:generateContent", json=gemini,
                   headers={"x-goog-api-key": "AIza" + "x" * 35})
    assert r.status_code == 200
    sent = upstream.received[-1].body.decode()
    for value in ("jane@example.com", "4111 1111 1111 1111", "415 555 0100"):
        assert value not in sent
    assert json.loads(sent)["contents"][0]["parts"][0]["text"] == "I am [EMAIL_1], card [CARD_1], phone [PHONE_1]."
    log_flush()
    req = Request.objects.get(pk=r.headers["x-gateway-request-id"])
    resp = Response.objects.get(request=req)
    assert prompt in req.body  # the request as received
    meta = next(s for s in resp.steps if s["decision"] == "metadata")["metadata"]
    assert meta["pii_masked"] == {"[EMAIL_1]": "jane@example.com", "[CARD_1]": "4111 1111 1111 1111",
                                  "[PHONE_1]": "+1 415 555 0100"}
    assert "jane@example.com" not in json.dumps(resp.forwarded)


@pytest.mark.django_db(transaction=True)
def test_an_anthropic_sdk_streams_document_goes_masked(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [PII]
    client = anthropic.Anthropic(api_key="sk-ant-" + "x" * 30, base_url=f"{gateway.url}/anthropic", max_retries=0)
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                               "data": "Invoice for jane@example.com"}, "title": "Call +1 415 555 0100"}
    system = [{"type": "text", "text": "Hi 4111 1111 1111 1111"}]
    messages = [{"role": "user", "content": [document, {"type": "text", "text": "Sum up"}]}]
    with client.messages.stream(model="claude-sonnet-4-5", max_tokens=50, system=system, messages=messages) as stream:
        assert stream.get_final_message().content[0].text == "Hello from Claude!"
    sent = json.loads(upstream.received[-1].body)
    assert sent["messages"][0]["content"][0]["source"]["data"] == "Invoice for [EMAIL_1]"
    assert sent["messages"][0]["content"][0]["title"] == "Call [PHONE_1]" and sent["system"][0]["text"] == "Hi [CARD_1]"
    log_flush()
    resp = Response.objects.get(request_id=stream.response.headers["x-gateway-request-id"])
    meta = next(s for s in resp.steps if s["decision"] == "metadata")["metadata"]
    assert meta["pii_masked"] == {"[EMAIL_1]": "jane@example.com", "[CARD_1]": "4111 1111 1111 1111",
                                  "[PHONE_1]": "+1 415 555 0100"}


@pytest.mark.django_db(transaction=True)
def test_a_system_prompts_placeholders_stay_the_same_turn_after_turn(settings, upstream, gateway):
    """The SDKs write the system prompt after the messages: numbered in that order, its placeholder changed
    as the conversation grew, so an earlier answer's [EMAIL_2] (the support address) meant the user's new
    address on the next turn, and the system prompt Anthropic and Gemini cache as a prefix changed every turn."""
    settings.GATEWAY_HOOKS = [PII]
    claude = anthropic.Anthropic(api_key="sk-ant-" + "x" * 30, base_url=f"{gateway.url}/anthropic", max_retries=0)
    gemini = genai.Client(api_key="AIza" + "x" * 35, http_options=types.HttpOptions(base_url=f"{gateway.url}/gemini"))
    system = "Forward complaints to support@acme.example"
    turns = [["I am jane@example.com"], ["I am jane@example.com", "Noted.", "Also write to bob@example.com"]]
    sent = []
    for texts in turns:
        messages = [{"role": "assistant" if i % 2 else "user", "content": t} for i, t in enumerate(texts)]
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=50, system=system, messages=messages)
        sent.append(json.loads(upstream.received[-1].body)["system"])
        contents = [types.Content(role="model" if i % 2 else "user", parts=[types.Part(text=t)])
                    for i, t in enumerate(texts)]
        gemini.models.generate_content(model="gemini-2.5-flash", contents=contents,
                                       config=types.GenerateContentConfig(system_instruction=system))
        sent.append(json.loads(upstream.received[-1].body)["systemInstruction"]["parts"][0]["text"])
    assert sent == ["Forward complaints to [EMAIL_1]"] * 4


def test_a_compressed_prompt_is_masked_too(settings, upstream, gateway):
    """A gzip-encoded body is masked as its decoded JSON and goes upstream decoded (it went out unmasked);
    one with nothing to mask goes as it came, encoding and all."""
    settings.GATEWAY_HOOKS = [PII]
    headers = {"Authorization": "Bearer sk-" + "x" * 30, "Content-Type": "application/json",
               "Content-Encoding": "gzip"}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "mail jane@example.com"}]}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=gzip.compress(json.dumps(chat).encode()),
                   headers=headers)
    assert r.status_code == 200
    got = upstream.received[-1]
    assert got.header("content-encoding") is None
    assert json.loads(got.body)["messages"][0]["content"] == "mail [EMAIL_1]"
    plain = gzip.compress(json.dumps({**chat, "messages": [{"role": "user", "content": "hi"}]}).encode())
    assert httpx.post(f"{gateway.url}/v1/chat/completions", content=plain, headers=headers).status_code == 200
    got = upstream.received[-1]
    assert got.header("content-encoding") == "gzip" and got.body == plain


def test_the_responses_apis_input_list_is_read_as_messages_not_a_tools_input():
    """Its items' ids and image URLs go as they are; its texts and a function's output are searched."""
    payload = {"model": "gpt-4o", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "I am jane@example.com"},
                                     {"type": "input_image", "image_url": "https://cdn.example.com/u/4155550123.png"}]},
        {"type": "function_call", "call_id": "call-123456789", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call-123456789", "output": "phone +1 415 555 0100"}]}
    masker = Masker()
    out = masker.walk(payload)
    assert out["input"][0]["content"][0]["text"] == "I am [EMAIL_1]"
    assert out["input"][0]["content"][1] == payload["input"][0]["content"][1]
    assert out["input"][1]["call_id"] == out["input"][2]["call_id"] == "call-123456789"
    assert out["input"][2]["output"] == "phone [PHONE_1]"
    replicate = masker.walk({"input": {"prompt": "mail jane@example.com", "image": "https://x.example/9876543210.png"}})
    assert replicate == {"input": {"prompt": "mail [EMAIL_1]", "image": "https://x.example/9876543210.png"}}
