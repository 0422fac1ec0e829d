"""The provider registry: routes, upstream URLs, configured providers, credentials, error shapes."""

import json

import httpx
import openai
import pytest
from django.core.exceptions import ImproperlyConfigured

from logs.models import Request, Response
from logs.redact import key_fingerprint
from logs.usage import WIRES
from proxy.forward import _credential
from proxy.providers import (BUILTIN_PROVIDERS, anthropic_error, configured_providers_parse, gemini_error,
                             provider_match, provider_prefixes, providers_all, replicate_error)


@pytest.mark.parametrize("path, provider, upstream_path", [
    ("/v1/chat/completions", "openai", "/v1/chat/completions"),
    ("/openai/v1/models", "openai", "/v1/models"),
    ("/anthropic/v1/messages", "anthropic", "/v1/messages"),
    ("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini",
     "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
    ("/replicate/v1/predictions/abc", "replicate", "/v1/predictions/abc"),
])
def test_builtin_routes(path, provider, upstream_path):
    found, upstream = provider_match(path)
    assert (found.name, upstream) == (provider, upstream_path)


def test_unclaimed_paths_match_nothing():
    assert provider_match("/anthropic/v2/messages") is None
    assert provider_match("/groq/v1/chat/completions") is None  # not configured


def test_upstream_urls_come_from_settings(settings):
    settings.ANTHROPIC_UPSTREAM_URL = "https://anthropic.example/"
    found, _ = provider_match("/anthropic/v1/messages")
    assert found.upstream_url == "https://anthropic.example"


def test_every_builtin_has_a_known_wire_and_distinct_prefixes():
    prefixes = [p for prov in BUILTIN_PROVIDERS for p in prov.prefixes]
    assert len(prefixes) == len(set(prefixes))
    assert all(prov.wire in WIRES for prov in BUILTIN_PROVIDERS)


def test_configured_providers(settings):
    settings.GATEWAY_PROVIDERS = ["groq=https://api.groq.com/openai", " ollama=http://127.0.0.1:11434 "]
    found, upstream = provider_match("/groq/v1/chat/completions")
    assert (found.name, found.upstream_url, upstream, found.wire) == (
        "groq", "https://api.groq.com/openai", "/v1/chat/completions", "openai")
    found, _ = provider_match("/ollama/v1/models")
    assert found.upstream_url == "http://127.0.0.1:11434"
    assert {"/groq/v1/", "/ollama/v1/"} <= set(provider_prefixes())
    assert [p.name for p in providers_all()][-2:] == ["groq", "ollama"]


@pytest.mark.parametrize("entries", [["groq"], ["Groq!=https://x"], ["openai=https://x"], ["v1=https://x"],
                                     ["a=https://x", "a=https://y"], ["a=ftp://x"]])
def test_bad_configured_providers_are_refused(entries):
    with pytest.raises(ImproperlyConfigured):
        configured_providers_parse(tuple(entries))


def test_credentials_per_provider():
    anthropic_p = provider_match("/anthropic/v1/messages")[0]
    gemini_p = provider_match("/gemini/v1beta/models/m:generateContent")[0]
    assert _credential(anthropic_p, [("X-Api-Key", "sk-ant-1")]) == "sk-ant-1"
    assert _credential(gemini_p, [("x-goog-api-key", "AIza1")]) == "AIza1"
    assert _credential(gemini_p, [], "alt=sse&key=AIza2") == "AIza2"
    replicate_p = provider_match("/replicate/v1/predictions")[0]
    assert _credential(replicate_p, [("Authorization", "Token r8_abc")]) == "r8_abc"
    assert _credential(replicate_p, [("Authorization", "Bearer r8_abc")]) == "r8_abc"  # same key, same fingerprint


def test_error_shapes():
    assert json.loads(anthropic_error("boom", kind="api_error", status=502)) == {
        "type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert json.loads(gemini_error("boom", status=504)) == {
        "error": {"code": 504, "message": "boom", "status": "DEADLINE_EXCEEDED"}}
    assert json.loads(replicate_error("boom", status=502))["detail"] == "boom"


@pytest.mark.django_db(transaction=True)
def test_configured_provider_end_to_end(gateway, upstream, settings, log_flush):
    settings.GATEWAY_PROVIDERS = [f"groq={upstream.url}/openai"]
    c = openai.OpenAI(api_key="gsk_TESTkey0123456789abcdef", base_url=f"{gateway.url}/groq/v1", max_retries=0)
    out = c.chat.completions.create(model="llama-3.3-70b-versatile", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "Hello! How can I help you today?"
    assert upstream.received[-1].path == "/openai/v1/chat/completions"
    log_flush()
    req = Request.objects.get()
    resp = Response.objects.get(request=req)
    assert req.provider == "groq" and req.endpoint == "/groq/v1/chat/completions"
    assert (resp.input_tokens, resp.output_tokens) == (12, 9)
    assert resp.cost_usd is None  # no groq prices shipped: unknown, not 0
    assert req.key_fingerprint == key_fingerprint("gsk_TESTkey0123456789abcdef")


@pytest.mark.django_db(transaction=True)
def test_unknown_prefix_names_the_known_ones(gateway, settings):
    settings.GATEWAY_PROVIDERS = ["groq=https://api.groq.com/openai"]
    r = httpx.post(f"{gateway.url}/mistral/v1/chat/completions", json={})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    for prefix in ("/v1/", "/anthropic/v1/", "/gemini/", "/replicate/v1/", "/groq/v1/"):
        assert prefix in message
