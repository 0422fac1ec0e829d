"""The provider registry: routes, upstream URLs, configured providers, credentials, error shapes."""

import json
from decimal import Decimal

import httpx
import openai
import pytest

import providers
from logs.models import Request, Response
from logs.redaction.redact import key_fingerprint
from providers import RESERVED_NAMES, Provider, builtin, registry
from providers.openai import OpenAI
from proxy.paths import NoRoute, route_find, upstream_base


@pytest.mark.parametrize("path, provider, upstream_path", [
    ("/v1/chat/completions", "openai", "/v1/chat/completions"),
    ("/openai/v1/models", "openai", "/v1/models"),
    ("/anthropic/v1/messages", "anthropic", "/v1/messages"),
    ("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini",
     "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
    ("/replicate/v1/predictions/abc", "replicate", "/v1/predictions/abc"),
])
def test_builtin_routes(path, provider, upstream_path):
    found, upstream = registry().match(path)
    assert (found.name, upstream) == (provider, upstream_path)


def test_unclaimed_paths_match_nothing():
    assert registry().match("/anthropic/v2/messages") is None
    assert registry().match("/groq/v1/chat/completions") is None  # not configured


def test_upstream_urls_come_from_settings(settings):
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "anthropic": "https://anthropic.example/"}
    found, _ = registry().match("/anthropic/v1/messages")
    assert upstream_base(found) == "https://anthropic.example"
    assert route_find("/anthropic/v1/messages").upstream_base == "https://anthropic.example"


def test_every_builtin_is_a_provider_with_its_url_setting_and_distinct_prefixes(settings):
    prefixes = [p for prov in builtin() for p in prov.prefixes]
    assert len(prefixes) == len(set(prefixes))
    assert all(isinstance(prov, Provider) and prov.upstream_env for prov in builtin())
    assert {prov.name for prov in builtin()} <= set(settings.UPSTREAM_URLS)
    assert not {prov.name for prov in builtin()} & RESERVED_NAMES


def test_configured_providers(settings):
    settings.GATEWAY_PROVIDERS = ["groq=https://api.groq.com/openai", " ollama=http://127.0.0.1:11434 "]
    route = route_find("/groq/v1/chat/completions")
    assert (route.provider.name, route.upstream_base, route.upstream_path) == (
        "groq", "https://api.groq.com/openai", "/v1/chat/completions")
    assert isinstance(route.provider, OpenAI)  # read as an OpenAI-compatible server
    assert route_find("/ollama/v1/models").upstream_base == "http://127.0.0.1:11434"
    configured = registry(settings.GATEWAY_PROVIDERS)
    assert {"/groq/v1/", "/ollama/v1/"} <= set(configured.prefixes())
    assert [p.name for p in configured.providers][-2:] == ["groq", "ollama"]
    with pytest.raises(NoRoute):
        route_find("/mistral/v1/chat/completions")


@pytest.mark.parametrize("entries", [["groq"], ["Groq!=https://x"], ["openai=https://x"], ["v1=https://x"],
                                     ["a=https://x", "a=https://y"], ["a=ftp://x"]])
def test_bad_configured_providers_are_refused(entries):
    with pytest.raises(ValueError):
        registry(entries)


def test_a_bad_name_is_refused_with_the_rule_the_parser_applies():
    """The message said "lowercase letters" while `Groq=...` is taken (read as groq): a user with an upper-case
    name would look for the wrong mistake."""
    assert registry(["Groq=https://x"]).get("groq") is not None
    with pytest.raises(ValueError, match=r"\(name: letters \(read as lowercase\), digits, - or _\)$"):
        registry(["my.srv=https://x"])


@pytest.mark.parametrize("url", ["https://api.groq.com/openai/v1", "http://127.0.0.1:8000/v1/"])
def test_a_base_url_given_with_its_v1_is_refused_saying_what_to_write(url):
    """Servers document their base URL with /v1; the gateway adds it, so every call went to /v1/v1/ (a 404)."""
    with pytest.raises(ValueError, match=r"leave /v1 out of the URL.*: local=(https://api\.groq\.com/openai|"
                                         r"http://127\.0\.0\.1:8000)$"):
        registry([f"local={url}"])
    assert registry(["local=https://example.com/v1beta/openai"]).get("local").upstream_default.endswith("/openai")


def test_registered_provider_is_routed_until_unregistered():
    class Plugin(Provider):
        name = "plugin-test"
        prefixes = ("/plugin-test/v1/",)

    providers.register(Plugin())
    try:
        found, upstream = registry().match("/plugin-test/v1/things")
        assert (found.name, upstream) == ("plugin-test", "/v1/things")
        with pytest.raises(ValueError):
            providers.register(Plugin())  # its name and prefix are taken
    finally:
        providers.unregister("plugin-test")
    assert registry().match("/plugin-test/v1/things") is None


def test_credentials_per_provider():
    anthropic_p = registry().match("/anthropic/v1/messages")[0]
    gemini_p = registry().match("/gemini/v1beta/models/m:generateContent")[0]
    assert anthropic_p.credential([("X-Api-Key", "sk-ant-1")]) == "sk-ant-1"
    assert gemini_p.credential([("x-goog-api-key", "AIza1")]) == "AIza1"
    assert gemini_p.credential([], "alt=sse&key=AIza2") == "AIza2"
    replicate_p = registry().match("/replicate/v1/predictions")[0]
    assert replicate_p.credential([("Authorization", "Token r8_abc")]) == "r8_abc"
    assert replicate_p.credential([("Authorization", "Bearer r8_abc")]) == "r8_abc"  # same key, same fingerprint


def test_error_shapes():
    assert json.loads(registry().get("anthropic").error_body("boom", kind="api_error", status=502)) == {
        "type": "error", "error": {"type": "api_error", "message": "boom"}}
    assert json.loads(registry().get("gemini").error_body("boom", status=504)) == {
        "error": {"code": 504, "message": "boom", "status": "DEADLINE_EXCEEDED"}}
    assert json.loads(registry().get("replicate").error_body("boom", status=502))["detail"] == "boom"
    assert json.loads(registry().get("openai").error_body("boom", kind="api_error", status=502)) == {
        "error": {"message": "boom", "type": "api_error", "param": None, "code": None}}


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
    # Named like its genai-prices provider, a compatible server is priced: $0.59 in, $0.79 out per million.
    assert resp.cost_usd == Decimal("0.00001419") and resp.price_source.startswith("genai-prices ")
    assert req.key_fingerprint == key_fingerprint("gsk_TESTkey0123456789abcdef")


@pytest.mark.django_db(transaction=True)
def test_unknown_prefix_names_the_known_ones(gateway, settings):
    settings.GATEWAY_PROVIDERS = ["groq=https://api.groq.com/openai"]
    r = httpx.post(f"{gateway.url}/mistral/v1/chat/completions", json={})
    assert r.status_code == 404
    message = r.json()["error"]["message"]
    for prefix in ("/v1/", "/anthropic/v1/", "/gemini/", "/replicate/v1/", "/groq/v1/"):
        assert prefix in message


def test_a_query_without_its_credential_keeps_the_rest_as_sent():
    # Gemini's ?key=, its name percent-encoded too (as servers decode it); other parameters byte for byte.
    gemini = registry().get("gemini")
    assert gemini.query_without_credential("alt=sse&key=AIzaX&%6Bey=AIzaY&$fields=a%2Cb&keys=1") == \
        "alt=sse&$fields=a%2Cb&keys=1"
    assert gemini.query_without_credential("") == "" and registry().get("openai").query_without_credential("key=1") == "key=1"
