"""The shipped model policy hook: models outside the allow-list refused as the provider would, max_tokens capped."""

import json

import anthropic
import httpx
import openai
import pytest

from logs.models import Response

pytestmark = pytest.mark.django_db(transaction=True)
POLICY = "gateway_hooks.model_policy.ModelPolicy"
KEY = "sk-" + "policyTESTkey0123456789abcdef"


@pytest.fixture
def policy(settings):
    settings.GATEWAY_HOOKS = [POLICY]
    settings.MODEL_POLICY_ALLOW = ["gpt-4o-mini", "claude-3-5-haiku*"]
    settings.MODEL_POLICY_MAX_TOKENS = 100


def test_a_model_outside_the_list_is_refused_in_the_providers_shape(policy, upstream, gateway, log_flush):
    client = anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        client.messages.create(model="claude-opus-4", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert "not allowed by this gateway" in str(exc.value)
    oa = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        oa.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert upstream.received == []
    log_flush()
    resp = Response.objects.get(request__model="gpt-4o")
    assert resp.status_code == 403 and resp.outcome == "gateway_error"
    assert resp.steps[0] == {"step": "hooks", "hook": POLICY, "decision": "answered", "status": 403}


def test_a_form_upload_names_its_model_too(policy, upstream, gateway):
    """A multipart request (an image edit) is judged by its model field like a JSON body."""
    oa = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        oa.images.edit(model="dall-e-2", image=("a.png", b"\x89PNG\r\n", "image/png"), prompt="red")
    assert "'dall-e-2' is not allowed" in str(exc.value)
    assert upstream.received == []


def test_max_tokens_is_lowered_to_the_ceiling(policy, upstream, gateway, log_flush):
    client = anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)
    client.messages.create(model="claude-3-5-haiku-latest", max_tokens=4000,
                           messages=[{"role": "user", "content": "hi"}])
    assert json.loads(upstream.received[-1].body)["max_tokens"] == 100
    oa = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
    assert json.loads(upstream.received[-1].body)["max_tokens"] == 50  # under the ceiling: untouched
    log_flush()
    lowered = Response.objects.get(request__model="claude-3-5-haiku-latest")
    assert next(s for s in lowered.steps if s["decision"] == "metadata")["metadata"] == {
        "max_tokens_lowered": {"max_tokens": 4000}}
    assert Response.objects.get(request__model="gpt-4o-mini").forwarded is None
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "gpt-4o-mini", "messages": [], "max_completion_tokens": 100000.0})
    assert r.status_code == 200 and json.loads(upstream.received[-1].body)["max_completion_tokens"] == 100


def test_an_anthropic_thinking_budget_is_kept_below_the_lowered_limit(policy, settings, upstream, gateway, log_flush):
    """Extended thinking's budget_tokens must stay below max_tokens: a request lowered to the ceiling with its
    budget left above it was refused by Anthropic (400), though the client had sent a valid one."""
    settings.MODEL_POLICY_MAX_TOKENS = 4096
    client = anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)
    with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=16000,
                                thinking={"type": "enabled", "budget_tokens": 10000},
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        stream.get_final_message()
    sent = json.loads(upstream.received[-1].body)
    assert sent["max_tokens"] == 4096 and sent["thinking"] == {"type": "enabled", "budget_tokens": 4095}
    log_flush()
    resp = Response.objects.get(request_id=stream.response.headers["x-gateway-request-id"])
    assert next(s for s in resp.steps if s["decision"] == "metadata")["metadata"] == {
        "max_tokens_lowered": {"max_tokens": 16000, "thinking.budget_tokens": 10000}}
    thinking, messages = {"type": "enabled", "budget_tokens": 2000}, [{"role": "user", "content": "hi"}]
    client.messages.create(model="claude-3-5-haiku-latest", max_tokens=8000, thinking=thinking, messages=messages)
    assert json.loads(upstream.received[-1].body)["thinking"]["budget_tokens"] == 2000  # below it already
    settings.MODEL_POLICY_MAX_TOKENS = 1000  # no budget fits below it (1024 at least): the upstream judges
    client.messages.create(model="claude-3-5-haiku-latest", max_tokens=8000, thinking=thinking, messages=messages)
    sent = json.loads(upstream.received[-1].body)
    assert sent["max_tokens"] == 1000 and sent["thinking"]["budget_tokens"] == 2000


def test_gemini_output_limit(policy, settings, upstream, gateway):
    settings.MODEL_POLICY_ALLOW = []
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 999}}
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.0-flash:generateContent", json=body,
                   headers={"x-goog-api-key": "AIza" + "y" * 35})
    assert r.status_code == 200
    assert json.loads(upstream.received[-1].body)["generationConfig"]["maxOutputTokens"] == 100
    body = {"contents": [{"parts": [{"text": "hi"}]}], "generation_config": {"max_output_tokens": 999}}
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.0-flash:generateContent", json=body,
                   headers={"x-goog-api-key": "AIza" + "y" * 35})  # the REST API's other spelling
    assert json.loads(upstream.received[-1].body)["generation_config"]["max_output_tokens"] == 100


def test_a_batch_is_judged_by_each_of_its_requests(policy, upstream, gateway, log_flush):
    client = anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)
    ask = {"max_tokens": 99999, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        client.messages.batches.create(requests=[{"custom_id": "a", "params": {"model": "claude-3-5-haiku-latest", **ask}},
                                                 {"custom_id": "b", "params": {"model": "claude-opus-4-1", **ask}}])
    assert "'claude-opus-4-1' is not allowed" in str(exc.value) and upstream.received == []
    try:
        client.messages.batches.create(requests=[{"custom_id": "a", "params": {"model": "claude-3-5-haiku-latest",
                                                                                 **ask}}])
    except anthropic.NotFoundError:
        pass  # the mock has no batches: what counts is what it was sent
    sent = json.loads(upstream.received[-1].body)
    assert sent["requests"][0]["params"]["max_tokens"] == 100
    oa = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:  # its models are in a file the gateway never reads
        oa.batches.create(input_file_id="file-1", endpoint="/v1/chat/completions", completion_window="24h")
    assert "uploaded file" in str(exc.value) and len(upstream.received) == 1
