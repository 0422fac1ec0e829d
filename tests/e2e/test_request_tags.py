"""End to end: users, sessions and metadata, sent by the official SDKs through a live gateway.

The gateway's tag headers reach the log, never the upstream; the providers' own body fields
(OpenAI `user`, `metadata`, `prompt_cache_key`; Anthropic `metadata.user_id`) are read too.
"""

import json

import anthropic
import openai
import pytest

from logs.models import Request

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "e2eTESTkey0123456789abcdefTAGS"  # fake; split so no key-like literal
TAGS = {"X-Gateway-Session-Id": "sess-42", "X-Gateway-User": "alice@example.com",
        "X-Gateway-Meta-Team": "search", "X-Gateway-Meta-Env": "staging"}


def _steps(req: Request) -> list:
    return req.response.steps or []


def test_openai_headers_stored_and_kept_from_upstream(gateway, upstream, log_flush):
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0, default_headers=TAGS)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    sent = upstream.received[-1]
    assert sent.header("authorization") == f"Bearer {KEY}"  # positive control: headers are readable there
    for name in TAGS:
        assert sent.header(name) is None
    log_flush()
    req = Request.objects.select_related("response").get(endpoint="/v1/chat/completions")
    assert (req.end_user, req.session_id) == ("alice@example.com", "sess-42")
    assert req.metadata == {"team": "search", "env": "staging"}
    # The log shows the change: the request row keeps the headers as received, the step says
    # what it removed, and the forwarded headers do not have them.
    received = {k.lower() for k, _ in req.headers}
    assert {"x-gateway-user", "x-gateway-session-id", "x-gateway-meta-team"} <= received
    step = next(s for s in _steps(req) if s["step"] == "tags")
    assert "removed header x-gateway-user" in step["changed"]
    forwarded = {k.lower() for k, _ in req.response.forwarded["headers"]}
    assert "authorization" in forwarded and not any(k.startswith("x-gateway-") for k in forwarded)


def test_openai_body_fields(gateway, upstream, log_flush):
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   user="bob", metadata={"ticket": "T-9"}, store=True,
                                   extra_body={"prompt_cache_key": "conv-7"})
    # Body fields are the provider's own: they go upstream untouched, and nothing is logged as changed.
    assert json.loads(upstream.received[-1].body)["user"] == "bob"
    log_flush()
    req = Request.objects.select_related("response").get(endpoint="/v1/chat/completions")
    assert req.end_user == "bob" and req.session_id is None
    assert req.metadata == {"ticket": "T-9", "prompt_cache_key": "conv-7"}
    assert not any(s["step"] == "tags" for s in _steps(req))


def test_header_wins_over_body(gateway, log_flush):
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-User": "carol", "X-Gateway-Meta-Ticket": "from-header"})
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                   user="bob", metadata={"ticket": "T-9", "other": "x"}, store=True)
    log_flush()
    req = Request.objects.get(endpoint="/v1/chat/completions")
    assert req.end_user == "carol"
    assert req.metadata == {"ticket": "from-header", "other": "x"}


def test_anthropic_metadata_user_id_and_session(gateway, upstream, log_flush):
    client = anthropic.Anthropic(api_key="sk-ant-" + "e2eTESTkey0123456789abcdTAGS", max_retries=0,
                                 base_url=f"{gateway.url}/anthropic",
                                 default_headers={"X-Gateway-Session-Id": "run-1"})
    client.messages.create(model="claude-sonnet-4-20250514", max_tokens=50, metadata={"user_id": "user-77"},
                           messages=[{"role": "user", "content": "hi"}])
    assert upstream.received[-1].header("x-gateway-session-id") is None
    log_flush()
    req = Request.objects.get(endpoint="/anthropic/v1/messages")
    assert (req.end_user, req.session_id, req.metadata) == ("user-77", "run-1", None)
