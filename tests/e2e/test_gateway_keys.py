"""Gateway keys end to end: who is refused (401, 403, 429), what the client and the log see, SDK errors."""

import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from keys.crypto import credential_encrypt
from keys.models import GatewayKey
from keys.selectors import caches_clear
from keys.services import KeyLimits, key_create, key_revoke
from logs.models import Request, Response
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)
from tests.hold.conftest import until
from tests.sqlite_writes import locked_retry

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
PROVIDER_KEY = "sk-" + "prov" + "0123456789abcdefghijklmn"


def _chat(gateway, secret: str | None, **headers) -> httpx.Response:
    if secret is not None:
        headers["X-Gateway-Key"] = secret
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                      headers={"Authorization": f"Bearer {PROVIDER_KEY}", **headers}, timeout=10)


def _logged(log_flush, response: httpx.Response) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(id=response.headers["x-gateway-request-id"])
    return req, Response.objects.get(request=req)


def test_keys_required_once_one_exists(gateway, upstream, log_flush, make_key):
    assert _chat(gateway, None).status_code == 200  # no key yet: open
    key, secret = make_key("team-a")
    missing = _chat(gateway, None)
    assert missing.status_code == 401 and "requires an access key" in missing.json()["error"]["message"]
    unknown = _chat(gateway, "gk-" + "x" * 43)
    assert unknown.status_code == 401 and "Invalid gateway key" in unknown.json()["error"]["message"]
    ok = _chat(gateway, secret)
    assert ok.status_code == 200
    assert len(upstream.received) == 2  # the open call and the good one; refusals never went upstream
    assert upstream.received[-1].header("x-gateway-key") is None
    req, resp = _logged(log_flush, ok)
    assert req.gateway_key == key.label == f"team-a (fp {key.fingerprint})"
    assert secret not in json.dumps(req.headers) and secret not in (req.body or "")
    _, refused = _logged(log_flush, missing)
    assert refused.status_code == 401 and refused.outcome == "gateway_error"


def test_the_first_key_is_checked_before_the_gateway_rereads_whether_keys_exist(gateway, upstream, log_flush):
    # The gateway read "no keys" a moment ago and trusts that for up to a second; a key created
    # since is still looked up when presented, its limits applied (CI once saw 21 of 30 admitted
    # under rpm=10 across two instances right after `gateway_key create`).
    assert _chat(gateway, None).status_code == 200
    key, secret = locked_retry(key_create, name="first", limits=KeyLimits(rpm=1))  # no cache cleared: as another process
    first, second = _chat(gateway, secret), _chat(gateway, secret)
    assert first.status_code == 200 and first.headers["ratelimit"] == '"requests";r=0;t=61'
    assert second.status_code == 429 and "limit of 1 requests per minute" in second.json()["error"]["message"]
    assert len(upstream.received) == 2 and upstream.received[-1].header("x-gateway-key") is None
    req, _ = _logged(log_flush, first)
    assert req.gateway_key == key.label
    assert _chat(gateway, "gk-" + "z" * 43).status_code == 401  # keys exist now: an unknown one is refused


def test_revoked_and_expired_keys_are_refused(gateway, upstream, log_flush, make_key):
    _, secret = make_key("old", expires_at=datetime.now(timezone.utc) - timedelta(days=1))
    r = _chat(gateway, secret)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    _, secret = make_key("gone")
    assert _chat(gateway, secret).status_code == 200
    locked_retry(key_revoke, name="gone")  # the gateway may be reading keys: retried on "table is locked"
    caches_clear()  # what a second does on every worker (tests/e2e/test_gateway_keys_procs.py waits for it)
    gone = _chat(gateway, secret)
    assert gone.status_code == 401 and "'gone' has been revoked" in gone.json()["error"]["message"]
    assert len(upstream.received) == 1
    for answer, name in ((r, "old"), (gone, "gone")):  # the log names the key refused
        req, resp = _logged(log_flush, answer)
        assert req.gateway_key.startswith(f"{name} (fp ") and resp.status_code == 401
        assert secret not in json.dumps(req.headers)


def test_allow_unkeyed_keeps_unkeyed_traffic(gateway, upstream, settings, make_key):
    make_key("team-a")
    settings.GATEWAY_ALLOW_UNKEYED = True
    assert _chat(gateway, None).status_code == 200
    assert _chat(gateway, "gk-" + "y" * 43).status_code == 401  # a key presented is still checked


def test_static_keys_keep_working_without_limits(gateway, upstream, settings, make_key):
    settings.GATEWAY_API_KEYS = ["ops:gk-static-0123456789abcdef"]
    _, secret = make_key("team-a", rpm=1)
    for _ in range(3):
        r = _chat(gateway, "gk-static-0123456789abcdef")
        assert r.status_code == 200 and "ratelimit" not in r.headers
    caches_clear()  # a second later: what this worker knew about keys is stale, the limits still hold
    assert _chat(gateway, secret).status_code == 200
    assert _chat(gateway, secret).status_code == 429


def test_provider_and_model_allow_lists(gateway, upstream, log_flush, make_key):
    _, secret = make_key("narrow", providers=["anthropic"], rpm=5)
    r = _chat(gateway, secret)
    assert r.status_code == 403 and "may not call provider 'openai'" in r.json()["error"]["message"]
    assert r.headers["ratelimit-policy"] == '"requests";q=5;w=60'  # a limited key's answers all say so
    _, secret = make_key("mini", models=["gpt-4o-mini"])
    assert _chat(gateway, secret).status_code == 200
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "gpt-4o"},
                   headers={"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert r.status_code == 403 and "may not use model 'gpt-4o'" in r.json()["error"]["message"]
    assert len(upstream.received) == 1
    _, resp = _logged(log_flush, r)
    assert resp.status_code == 403 and resp.outcome == "gateway_error"


def test_rpm_refusal_with_the_sdks(gateway, upstream, log_flush, make_key):
    """The official SDKs raise RateLimitError; every answer to the key carries the RateLimit fields."""
    _, secret = make_key("two-a-minute", rpm=2)
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    raw = client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.headers["ratelimit-policy"] == '"requests";q=2;w=60'
    assert raw.headers["ratelimit"].startswith('"requests";r=1;t=')
    client.chat.completions.create(**CHAT)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(**CHAT)
    headers = caught.value.response.headers
    assert 59 <= int(headers["retry-after"]) <= 61  # the one-second buckets: a slot frees 60 to 61 s on
    assert headers["ratelimit-policy"] == '"requests";q=2;w=60'
    assert headers["ratelimit"].startswith('"requests";r=0;t=')
    assert "over its limit of 2 requests per minute" in caught.value.message
    assert len(upstream.received) == 2
    log_flush()
    refused = Response.objects.get(request_id=caught.value.response.headers["x-gateway-request-id"])
    assert refused.outcome == "rate_limited" and refused.status_code == 429
    assert refused.steps[0]["decision"] == "refused" and refused.steps[0]["limit"] == "requests"

    _, secret = make_key("claude-once", rpm=1)
    claude = anthropic.Anthropic(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/anthropic", max_retries=0,
                                 default_headers={"X-Gateway-Key": secret})
    message = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    claude.messages.create(**message)
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(**message)
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] and caught.value.response.headers["ratelimit"]


def _refusal_awaited(client: openai.OpenAI, ended: float) -> openai.RateLimitError | None:
    """The refusal of a chat request sent again and again for 5 s after `ended` (time.monotonic()), once the
    key's spend is re-read; None if none came."""
    while time.monotonic() - ended < 5:
        try:
            client.chat.completions.create(**CHAT)
        except openai.RateLimitError as exc:
            return exc
    return None


def test_budget_spent_by_a_streamed_exchange_refuses_the_next(gateway, upstream, log_flush, make_key):
    """Within 2 s of the stream's end (its usage logged, the key's cached spend re-read), the next call is refused."""
    _, secret = make_key("tiny", budget_usd=Decimal("0.000001"), budget_period="day")
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    stream = client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    ended = time.monotonic()
    assert chunks[-1].usage.total_tokens > 0
    caught = _refusal_awaited(client, ended)
    assert caught is not None and time.monotonic() - ended < 2.0
    log_flush()
    first = Response.objects.filter(request__gateway_key__startswith="tiny (").order_by("created_at").first()
    assert first.is_stream and first.cost_usd > Decimal("0.000001") and first.price_source.startswith("genai-prices")
    message = caught.message
    assert "used its budget of $0.000001 per day" in message and "resets at" in message
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d 00:00")
    assert tomorrow in message
    headers = caught.response.headers
    assert '"budget";q=1;qu="usd-micros";w=86400' in headers["ratelimit-policy"]
    assert '"budget";r=0;t=' in headers["ratelimit"]
    assert 0 < int(headers["retry-after"]) <= 86400
    # Hours away: the SDKs must not wait for it (openai-node slept the Retry-After out): told not to retry.
    assert headers["x-should-retry"] == "false"
    retrying = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=2,
                             default_headers={"X-Gateway-Key": secret})
    log_flush()
    before = Request.objects.filter(gateway_key__startswith="tiny (").count()
    with pytest.raises(openai.RateLimitError):
        retrying.chat.completions.create(**CHAT)
    log_flush()
    assert Request.objects.filter(gateway_key__startswith="tiny (").count() == before + 1  # no retry


@pytest.mark.parametrize("base, model", [("/v1", "gpt-4o-mini"), ("/gemini/v1beta/openai", "gemini-2.0-flash"),
                                         ("/groq/v1", "llama-3.1-8b-instant")])
def test_a_stream_that_does_not_ask_for_its_usage_still_spends_the_budget(gateway, upstream, log_flush, make_key,
                                                                          settings, base, model):
    """A stream reports its usage only when the client asks (include_usage): left out, the exchange had no tokens
    and no cost, so a key's budget never counted any stream. Its usage is now asked for and hidden from the client:
    on Gemini's OpenAI-compatible endpoint too (it was not asked there) and on an OpenAI-compatible server."""
    settings.GATEWAY_PROVIDERS = ["groq=" + upstream.url]
    _, secret = make_key("streamer", budget_usd=Decimal("0.000001"), budget_period="day")
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}{base}", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    chunks = list(client.chat.completions.create(model=model, messages=CHAT["messages"], stream=True))
    ended = time.monotonic()
    assert chunks and all(c.usage is None for c in chunks)  # the client gets the stream it asked for
    assert json.loads(upstream.received[-1].body)["stream_options"] == {"include_usage": True}
    refused = None
    while refused is None and time.monotonic() - ended < 5:
        answer = _chat(gateway, secret)
        refused = answer if answer.status_code == 429 else None
    assert refused is not None and "used its budget" in refused.json()["error"]["message"]
    log_flush()
    first = Response.objects.filter(request__gateway_key__startswith="streamer (").order_by("created_at").first()
    assert first.is_stream and first.usage_injected and first.cost_usd >= Decimal("0.000001")


@pytest.mark.parametrize("field", ["Stream", "STREAM_OPTIONS"])
def test_a_counting_key_is_refused_a_stream_field_in_another_case(gateway, upstream, log_flush, make_key, field):
    """Go's JSON (Ollama, many compatible servers) matches field names in any case: "Stream": true streamed there
    while the gateway, reading "stream", did not ask it for its usage, and a key counting tokens counted nothing."""
    _, secret = make_key("tokens", tpm=100000)
    body = {**CHAT, field: True if field == "Stream" else {"include_usage": False}, "stream": False}
    if field == "Stream":
        del body["stream"]
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}", "X-Gateway-Key": secret}
    sent = len(upstream.received)
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10)
    assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
    message = answer.json()["error"]["message"]
    assert f"this request names '{field}'" in message and "name the field in lower case" in message
    assert "gateway key 'tokens', which counts its spend or tokens" in message
    assert len(upstream.received) == sent  # never forwarded
    _, resp = _logged(log_flush, answer)
    assert resp.outcome == "gateway_error" and {"step": "stream_usage", "decision": "refused: the body cannot be read",
                                                 "reason": message} in resp.steps
    assert _chat(gateway, secret).status_code == 200  # the lower-case fields, as the SDKs send them


def test_a_counting_key_is_refused_a_stream_field_sent_twice(gateway, upstream, log_flush, make_key):
    """{"stream": true, "stream": false} read as no stream here (Python's json keeps the last) streamed without
    its usage on a server taking the first, and a key counting tokens counted nothing."""
    _, secret = make_key("tokens", tpm=100000)
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}", "X-Gateway-Key": secret, "Content-Type": "application/json"}
    body = json.dumps(CHAT)[:-1].encode() + b', "stream": true, "stream": false}'
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers=headers, timeout=10)
    assert answer.status_code == 400 and "JSON repeats a key" in answer.json()["error"]["message"], answer.text
    assert upstream.received == []
    assert _chat(gateway, secret).status_code == 200  # each field once, as the SDKs send them


def test_a_client_that_leaves_before_the_usage_chunk_still_spends_the_budget(gateway, upstream, log_flush, make_key):
    """Hanging up at the finish_reason chunk, before the usage chunk, left the exchange without tokens or cost:
    a key's budget and tokens per minute never counted it. Its answer is now read to the end for its usage."""
    _, secret = make_key("leaver", budget_usd=Decimal("0.000001"), budget_period="day")
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    headers = {"Authorization": f"Bearer {PROVIDER_KEY}", "X-Gateway-Key": secret, "x-mock-delay-ms": "150"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=10) as r:
        rid = r.headers["x-gateway-request-id"]
        for line in r.iter_lines():
            if '"finish_reason": "stop"' in line or '"finish_reason":"stop"' in line:
                break  # the whole text is here; leave before the usage chunk
    left = time.monotonic()

    def logged():
        log_flush()
        return Response.objects.filter(request_id=rid).first()

    resp = until(logged, 5)
    assert resp.outcome == "client_aborted" and resp.total_tokens and resp.cost_usd > Decimal("0.000001")
    assert {"step": "gateway_key", "decision": "answer read to its end after the client left",
            "why": "the key counts this answer's tokens or spend"} in resp.steps
    refused = None
    while refused is None and time.monotonic() - left < 5:
        answer = _chat(gateway, secret)
        refused = answer if answer.status_code == 429 else None
    assert refused is not None and "used its budget" in refused.json()["error"]["message"]


def test_a_client_that_gives_up_waiting_for_an_answer_still_spends_the_budget(gateway, upstream, log_flush, make_key):
    # The upstream answers after a second; the client gives up first. The provider bills the answer all the
    # same: with a key that counts spend, the gateway waits for it and counts it (the upstream saw one call).
    _, secret = make_key("impatient", budget_usd=Decimal("1"), budget_period="day")
    def impatient_call(key: str) -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=0.3, headers={
                "Authorization": f"Bearer {PROVIDER_KEY}", "X-Gateway-Key": key, "x-mock-fault": "stall",
                "x-mock-stall-s": "1"})

    def logged(name):
        log_flush()
        return Response.objects.filter(request__gateway_key__startswith=f"{name} (").first()

    impatient_call(secret)
    resp = until(lambda: logged("impatient"), 5)
    assert resp.outcome == "client_aborted" and resp.status_code == 200 and resp.cost_usd > 0
    _, plain = make_key("unlimited")  # no budget, no tokens per minute: closed at once, as ever
    impatient_call(plain)
    resp = until(lambda: logged("unlimited"), 5)
    assert resp.outcome == "client_aborted" and resp.status_code is None and resp.cost_usd is None


def test_budget_spent_then_a_pause_refuses_the_next(gateway, upstream, log_flush, make_key):
    """After a pause, the key's spend as read before the pause is not trusted: the first call 2 s after the
    exchange that spent the budget is refused (a worker that had no other call of the key meanwhile)."""
    _, secret = make_key("pause", budget_usd=Decimal("0.000001"), budget_period="day")
    assert _chat(gateway, secret).status_code == 200  # the key's spend read (nothing) before this call went up
    ended = time.monotonic()
    log_flush()  # its cost is in the log
    time.sleep(max(0.0, 2.0 - (time.monotonic() - ended)))
    refused = _chat(gateway, secret)
    assert refused.status_code == 429 and "used its budget of $0.000001 per day" in refused.json()["error"]["message"]
    assert len(upstream.received) == 1


def test_tokens_per_minute(gateway, upstream, log_flush, make_key):
    _, secret = make_key("tokens", tpm=30)
    first = _chat(gateway, secret)  # the mock answers 21 tokens
    assert first.headers["ratelimit"] == '"tokens";r=30;t=0'
    log_flush()
    caches_clear()
    assert _chat(gateway, secret).headers["ratelimit"] == '"tokens";r=9;t=60'
    log_flush()
    caches_clear()
    r = _chat(gateway, secret)
    assert r.status_code == 429 and "limit of 30 tokens per minute (42 in the last minute)" in r.json()["error"]["message"]
    assert 55 <= int(r.headers["retry-after"]) <= 61  # tokens leave the window in whole seconds (docs/keys.md)


def test_key_holding_the_provider_credential(gateway, upstream, log_flush, make_key):
    """The client sends the gateway key as its api_key; the provider key never leaves the server."""
    stored = "sk-" + "stored" + "abcdefghijklmnopqrstuv"
    _, secret = make_key("wrapped", credential=stored, providers=["openai"])
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.url}/v1", max_retries=0)
    assert client.chat.completions.create(**CHAT).choices
    got = upstream.received[-1]
    assert got.header("authorization") == f"Bearer {stored}"
    assert secret.encode() not in got.head
    # The credential is OpenAI's: a client pointing another SDK at the gateway with this key never sends it
    # there (an OpenAI key went to Anthropic and Google).
    claude = anthropic.Anthropic(api_key=secret, base_url=f"{gateway.url}/anthropic", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert len(upstream.received) == 1
    log_flush()
    for req in Request.objects.filter(gateway_key__startswith="wrapped (", response__status_code=200):
        resp = Response.objects.get(request=req)
        dumped = json.dumps([req.headers, req.body, resp.headers, resp.body, resp.steps, resp.forwarded])
        assert secret not in dumped and stored not in dumped
        assert resp.steps[-1]["decision"] == "provider credential swapped in"
        sent = {k.lower(): v for k, v in resp.forwarded["headers"]}  # what went upstream, masked
        assert (sent.get("authorization") or sent["x-api-key"]).endswith(stored[-4:])
    # Nothing went upstream: nothing is logged as forwarded (a step answered after the swap).
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                   headers={"Authorization": f"Bearer {secret}", "X-Gateway-Cache": "banana"})
    assert r.status_code == 400
    _, resp = _logged(log_flush, r)
    assert resp.forwarded is None
    # An upstream that echoes the credential back does not put it in the log either.
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                   headers={"Authorization": f"Bearer {secret}", "x-mock-fault": "echo-auth"})
    # Nor in the client's: the stored credential never leaves the server (the rest comes as sent).
    assert r.status_code == 401 and "Incorrect API key provided: Bearer " in r.json()["error"]["message"]
    assert stored not in r.text and stored not in str(r.headers) and stored[-4:] in r.headers["x-echo-auth"]
    assert int(r.headers["content-length"]) == len(r.content)
    _, resp = _logged(log_flush, r)
    assert stored not in json.dumps([resp.headers, resp.body]) and "Incorrect API key" in resp.body
    assert resp.steps[-1] == {"step": "gateway_key", "decision": "stored provider credential masked in the answer",
                              "echoes": 2}  # the body and the echo header (the cookie holds a part)
    # A client asking for a compressed answer got the echo inside gzip, which the mask cannot read and the
    # client's HTTP client decodes: the credential, whole. The upstream is asked for a plain answer.
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={
        "Authorization": f"Bearer {secret}", "x-mock-fault": "echo-auth", "x-mock-gzip": "1",
        "Accept-Encoding": "gzip"})
    assert r.status_code == 401 and "Incorrect API key provided: Bearer " in r.json()["error"]["message"]
    assert stored not in r.text and upstream.received[-1].header("accept-encoding") == "identity"


def test_a_stored_credential_echoed_in_an_event_stream_reaches_the_client_masked(scripted, gateway, log_flush,
                                                                                   make_key, settings):
    """An error event quoting the key the stream was sent with (a compatible server's, whole) handed the gateway
    key's holder the stored provider credential: event streams passed unmasked. The stream's usage chunk, asked
    for by the gateway for a key with a budget, is still hidden from a client that did not ask for it."""
    stored = "sk-" + "stored" + "abcdefghijklmnopqrstuv"
    _, secret = make_key("wrapped-sse", credential=stored, providers=["openai"], budget_usd=Decimal("5"))
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
    usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    error = {"error": {"message": f"Invalid key {stored} for this request", "type": "invalid_request_error"}}
    stream = "".join(f"data: {json.dumps(e)}\n\n" for e in (chunk, error, usage)) + "data: [DONE]\n\n"
    at = stream.index(stored) + 7  # the echo split across two reads
    scripted.answer = lambda request: (200, [("content-type", "text/event-stream")],
                                       [stream[:at].encode(), stream[at:].encode()])
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.url}/v1", max_retries=0)
    with client.chat.completions.with_streaming_response.create(**CHAT, stream=True) as answer:
        got = answer.read().decode()
    assert stored not in got and f"Invalid key {'*' * (len(stored) - 4)}{stored[-4:]} for this request" in got
    assert '"usage"' not in got and got.count("data: ") == 3 and got.endswith("data: [DONE]\n\n")
    assert json.loads(scripted.requests[0].content)["stream_options"] == {"include_usage": True}
    _, resp = _logged(log_flush, answer.http_response)
    assert stored not in resp.body and {"step": "gateway_key", "decision": "stored provider credential masked in the "
                                        "answer", "echoes": 1} in resp.steps
    assert resp.input_tokens == 5  # its usage counted against the budget


def test_a_stored_gemini_credential_replaces_the_clients_key_in_the_query(gateway, upstream, log_flush, make_key):
    """Gemini also takes its key as ?key=: a client that sends the gateway key in X-Gateway-Key and its own
    Google key in the query had its own key sent to Google beside the stored one (whose account answered?)."""
    stored, own = "AIza" + "stored" + "0123456789abcdefghijklmnopq", "AIza" + "client" + "0123456789abcdefghijklmnopq"
    _, secret = make_key("gem", credential=stored, providers=["gemini"])
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?alt=json&key={own}&$fields=x",
                   json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"X-Gateway-Key": secret}, timeout=10)
    assert r.status_code == 200
    got = upstream.received[-1]
    assert got.header("x-goog-api-key") == stored and got.query == "alt=json&$fields=x"
    assert own.encode() not in got.head and secret.encode() not in got.head
    _, resp = _logged(log_flush, r)
    assert resp.forwarded["query"] == "alt=json&$fields=x"
    assert "query: the client's key parameter removed" in resp.steps[-1]["changed"]


def test_a_key_made_before_its_credential_had_to_name_a_provider_is_refused(gateway, upstream, make_key):
    # Keys made before then hold a credential and name no provider: refused everywhere until one is set.
    # (The rows are written before any request: the in-process gateway's key reads would race the writes.)
    legacy, secret = make_key("legacy", providers=["openai"])
    GatewayKey.objects.filter(pk=legacy.pk).update(
        allowed_providers=[], provider_credential=credential_encrypt("sk-" + "legacy" + "0123456789abcdefghijk"))
    caches_clear()
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 403 and "does not name the one provider" in r.json()["error"]["message"]
    assert upstream.received == []


def test_a_gateway_key_without_credential_in_the_provider_header(gateway, upstream, make_key):
    _, secret = make_key("plain")
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 401 and "holds no provider credential" in r.json()["error"]["message"]
    assert upstream.received == []


@pytest.mark.parametrize("unkeyed", [False, True])
def test_a_gateway_key_in_any_other_header_is_refused_not_forwarded(gateway, upstream, make_key, settings, unkeyed):
    # Headers other than X-Gateway-Key and the provider's credential header go upstream as they are:
    # x-api-key to OpenAI (beside the same key in X-Gateway-Key), or any header with unkeyed traffic allowed.
    settings.GATEWAY_ALLOW_UNKEYED = unkeyed
    _, secret = make_key("elsewhere")
    for headers in ({"X-Gateway-Key": secret, "x-api-key": secret}, {"X-Custom-Token": f"Token {secret}"},
                    {"Cookie": f"a=1; gk={secret}"}):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401 and "not in the" in r.json()["error"]["message"], headers
        assert secret not in r.text
    assert upstream.received == []


def test_a_gateway_key_in_the_query_string_is_refused_not_forwarded(gateway, upstream, make_key):
    _, secret = make_key("query")
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={secret}",
                   json={"contents": []})
    assert r.status_code == 401 and "not in the query string" in r.json()["error"]["message"]
    assert r.json()["error"]["status"] == "UNAUTHENTICATED"  # Gemini's own error shape
    assert upstream.received == []


def test_a_gateway_secret_never_goes_upstream_beside_x_gateway_key(gateway, upstream, make_key):
    """With X-Gateway-Key also sent: a gk- secret where the provider key goes, or in any query string, is refused
    (it was forwarded as it came)."""
    _, plain = make_key("plain")
    _, other = make_key("other")
    same = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                      headers={"X-Gateway-Key": plain, "Authorization": f"Bearer {plain}"})
    assert same.status_code == 401 and "holds no provider credential" in same.json()["error"]["message"]
    two = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                     headers={"X-Gateway-Key": plain, "Authorization": f"Bearer {other}"})
    assert two.status_code == 401 and "Two different gateway keys" in two.json()["error"]["message"]
    assert plain not in two.text and other not in two.text
    gemini = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={other}",
                        json={"contents": []}, headers={"X-Gateway-Key": plain}, timeout=10)
    openai_query = httpx.get(f"{gateway.url}/v1/models?after={other}", timeout=10,
                             headers={"X-Gateway-Key": plain, "Authorization": f"Bearer {PROVIDER_KEY}"})
    for r in (gemini, openai_query):
        assert r.status_code == 401 and "not in the query string" in r.json()["error"]["message"]
    assert upstream.received == []
    ok = _chat(gateway, plain)  # the usual way still works
    assert ok.status_code == 200 and upstream.received[-1].header("authorization") == f"Bearer {PROVIDER_KEY}"


def test_a_key_limited_to_models_judges_a_form_upload_by_its_model_field(gateway, upstream, make_key):
    _, secret = make_key("images", models=["dall-e-2"])
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    image = ("a.png", b"\x89PNG\r\n", "image/png")
    assert client.images.edit(model="dall-e-2", image=image, prompt="red").data  # was refused as "too large"
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.images.edit(model="gpt-image-1", image=image, prompt="red")
    assert "may not use model 'gpt-image-1'" in str(exc.value)
    assert len(upstream.received) == 1


def test_a_key_limited_to_models_refuses_a_request_that_leaves_the_model_to_the_upstream(gateway, upstream, make_key):
    # An image request naming no model ran OpenAI's default image model, a thread's run its assistant's, a realtime
    # session secret the model of its session: a key limited to gpt-4o-mini let them all through, unpriced.
    _, secret = make_key("mini-only", models=["gpt-4o-mini", "gemini-2.0-flash"])
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.images.generate(prompt="a cat")
    assert "names none (the upstream would choose one)" in str(exc.value)
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"}
    refused = [
        ("/v1/images/generation%73", {"prompt": "a cat"}),  # the upstream decodes it: images/generations
        ("/openai/v1/threads/thread_1/runs", {"assistant_id": "asst_1"}),
        ("/v1/realtime/client_secrets", {"session": {"type": "realtime", "model": "gpt-realtime"}}),
        ("/v1/chat/completions", {**CHAT, "MODEL": "gpt-4o"}),  # Go's JSON (Ollama) reads it as the model
        ("/gemini/v1beta/interactions", {"model": "gemini-2.5-pro", "input": "hi"}),
    ]
    for path, body in refused:
        r = httpx.post(f"{gateway.url}{path}", json=body, headers=headers)
        assert r.status_code == (400 if "MODEL" in body else 403), (path, r.text)  # two model fields: bad input
    assert upstream.received == []
    # What runs no model, or names an allowed one, goes as before.
    assert httpx.get(f"{gateway.url}/v1/models", headers=headers).status_code == 200
    assert client.files.create(file=("a.jsonl", b"{}", "application/jsonl"), purpose="batch").id
    assert client.chat.completions.create(**CHAT).choices
    assert len(upstream.received) == 3


def test_a_budgeted_key_cannot_mint_keys_that_spend_out_of_the_gateways_sight(gateway, upstream, make_key, log_flush):
    # A realtime session secret (ephemeral key) or a WebRTC call is used from the browser straight at the provider:
    # a key with a budget that could mint them spent without limit, none of it in the log.
    _, budgeted = make_key("budgeted", budget_usd=Decimal("5"), tpm=100000)
    _, free = make_key("free")
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": budgeted})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.realtime.client_secrets.create(session={"type": "realtime", "model": "gpt-realtime"})
    assert "talk to the upstream directly" in str(exc.value)
    headers = {"X-Gateway-Key": budgeted, "Authorization": f"Bearer {PROVIDER_KEY}"}
    for path in ("/v1/realtime/client_secret%73", "/v1/realtime/sessions", "/v1/realtime/calls",
                 "/gemini/v1alpha/auth_tokens"):
        r = httpx.post(f"{gateway.url}{path}", content=b"{}", headers=headers)
        assert r.status_code == 403, (path, r.text)
    assert upstream.received == []
    # A key without a budget or a token limit mints them as before.
    r = httpx.post(f"{gateway.url}/v1/realtime/client_secrets", json={"session": {"type": "realtime"}},
                   headers={"X-Gateway-Key": free, "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert r.status_code != 403 and len(upstream.received) == 1
    log_flush()
    assert Response.objects.filter(status_code=403, outcome="gateway_error").count() == 5


def test_a_form_upload_naming_its_model_twice_is_refused(gateway, upstream, make_key):
    # The gateway read the first model field, FastAPI servers (vLLM) and Starlette take the last.
    _, secret = make_key("ears", models=["whisper-1"])
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"}
    audio = {"file": ("a.wav", b"RIFF0000WAVE", "audio/wav")}
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", files=audio,
                   data={"model": ["whisper-1", "gpt-4o-transcribe"]}, headers=headers)
    assert r.status_code == 403 and "names none" in r.json()["error"]["message"]
    assert upstream.received == []
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", files=audio, data={"model": "whisper-1"}, headers=headers)
    assert r.status_code != 403 and len(upstream.received) == 1


HIDDEN_MODEL = [
    # Werkzeug and python-multipart (vLLM) read name*=UTF-8''model as a second model field, and take it.
    (b"name=\"x\"; name*=UTF-8''model\r\n\r\ngpt-4o-transcribe", "names none"),
    # Werkzeug takes a bare line break before the boundary: it reads a model field inside the gateway's pad field,
    # and takes that first one.
    (b"name=\"x\"\r\n\r\nx\n--B\nContent-Disposition: form-data; name=\"model\"\n\ngpt-4o-transcribe",
     "holds the form's boundary"),
    # Two Content-Disposition headers (the second after a bare line break, or not): Werkzeug takes the first.
    (b"name=\"model\"\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\ngpt-4o-transcribe", "names none"),
    (b"name=\"model\"\nContent-Disposition: form-data; name=\"x\"\r\n\r\ngpt-4o-transcribe", "names none"),
]


@pytest.mark.parametrize("hidden, refusal", HIDDEN_MODEL)
def test_a_form_that_lenient_servers_read_another_model_from_is_refused(gateway, upstream, make_key, hidden, refusal):
    # The gateway judged the form by its plain model field, and the server ran the other one.
    _, secret = make_key("ears", models=["whisper-1"])
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}",
               "Content-Type": "multipart/form-data; boundary=B"}
    form = (b"--B\r\nContent-Disposition: form-data; %s\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF0000WAVE\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--B--\r\n")
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=form % hidden, headers=headers)
    # A part holding the boundary is bad input (400); a form whose model field hides names none (403).
    assert r.status_code == (403 if refusal == "names none" else 400) and refusal in r.json()["error"]["message"]
    assert upstream.received == []
    plain = form % b"name=\"language\"\r\n\r\nen"
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=plain, headers=headers)
    assert r.status_code != 403 and len(upstream.received) == 1


def test_a_form_under_two_content_types_is_refused(gateway, upstream, make_key):
    # The gateway read the last one's boundary (Django joins the two), Starlette (vLLM) takes the first: the
    # form in the other's preamble, naming another model, was the one the upstream ran.
    _, secret = make_key("ears", models=["whisper-1"])
    form = (b"--X\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n--X--\r\n"
            b"--Y\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--Y--\r\n")
    headers = [("X-Gateway-Key", secret), ("Authorization", f"Bearer {PROVIDER_KEY}"),
               ("Content-Type", "multipart/form-data; boundary=X"), ("Content-Type", "multipart/form-data; boundary=Y")]
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=form, headers=headers)
    assert r.status_code == 400 and "more than one Content-Type" in r.json()["error"]["message"], r.text
    assert upstream.received == []
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", content=form, headers=headers[:2] + headers[3:])
    assert r.status_code != 403 and len(upstream.received) == 1


@pytest.mark.parametrize("body", [
    b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}',
    b'{"model": "gpt-4o", "mod\\u0065l": "gpt-4o-mini", "messages": []}',  # the same key, escaped
    b' \n{"session": {"model": "gpt-4o"}, "session": {"model": "gpt-4o-mini"}}',
    '\ufeff{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}'.encode("utf-8"),  # a BOM, which json reads
    '{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}'.encode("utf-16"),  # and UTF-16
])
def test_a_json_body_naming_its_model_twice_is_refused(gateway, upstream, make_key, body):
    # The gateway read the last value (Python's json, orjson); a server whose parser keeps the first (RapidJSON,
    # as realtime messages were already judged) ran the model the key may not use.
    _, secret = make_key("mini-only", models=["gpt-4o-mini"])
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}", "Content-Type": "application/json"}
    path = "/v1/realtime/client_secrets" if b"session" in body else "/v1/chat/completions"
    r = httpx.post(f"{gateway.url}{path}", content=body, headers=headers)
    assert r.status_code == 400 and "repeats a key" in r.json()["error"]["message"], r.text
    assert upstream.received == []
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers,
                   content=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "model"}]}')
    assert r.status_code == 200 and len(upstream.received) == 1


_OPENAI_SHAPE = ("/v1/chat/completions", lambda j: j["error"]["type"] == "invalid_request_error")
_ANTHROPIC_SHAPE = ("/anthropic/v1/messages", lambda j: j["type"] == "error" and j["error"]["type"] == "invalid_request_error")
_GEMINI_SHAPE = ("/gemini/v1beta/openai/chat/completions", lambda j: j["error"]["status"] == "INVALID_ARGUMENT")


# A key counting tokens reads the body where a stream reports its usage only when asked (OpenAI's wire): an
# Anthropic stream always reports it, so that body is not its to read.
@pytest.mark.parametrize("path, shape, limits, step", [
    (*_OPENAI_SHAPE, {"models": ["gpt-4o-mini"]}, "gateway_key"),
    (*_ANTHROPIC_SHAPE, {"models": ["gpt-4o-mini"]}, "gateway_key"),
    (*_GEMINI_SHAPE, {"models": ["gpt-4o-mini"]}, "gateway_key"),
    (*_OPENAI_SHAPE, {"tpm": 100000}, "stream_usage"),
    (*_GEMINI_SHAPE, {"tpm": 100000}, "stream_usage"),
])
@pytest.mark.parametrize("body, problem", [
    (b'{"model": "gpt-4o-mini", "messages": [', "cannot be read as JSON"),
    (b'{"model": "gpt-4o-mini", "model": "gpt-4o", "stream": true, "messages": []}', "repeats a key"),
])
def test_a_body_a_key_must_read_and_cannot_is_bad_input(gateway, upstream, log_flush, make_key, path, shape, limits,
                                                      step, body, problem):
    """A malformed body, or one repeating a key, was refused 403 (permission) to a key limited to models, while the
    same body without the key got the upstream's 400 (and a key counting tokens forwarded a malformed one, which a
    lenient server may stream without its usage): a 400 in the provider's shape, naming the problem and the step."""
    _, secret = make_key("reader", **limits)
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}", "x-api-key": PROVIDER_KEY,
               "Content-Type": "application/json"}
    r = httpx.post(f"{gateway.url}{path}", content=body, headers=headers)
    assert r.status_code == 400 and shape(r.json()), r.text
    assert problem in r.text and "gateway key 'reader'" in r.text
    assert upstream.received == []
    _, resp = _logged(log_flush, r)
    assert resp.outcome == "gateway_error" and resp.steps[-1]["step"] == step
    assert resp.steps[-1]["decision"] == "refused: the body cannot be read"


def test_a_keyed_request_has_its_body_read_once_by_every_step(gateway, upstream, make_key, monkeypatch):
    """The key step and the stream usage step each parsed the body and checked it for repeated keys (the costly
    half, a pure-Python parse); the cache, asked, now checks it too: all three ask the exchange's one reading."""
    from wire import jsonutil

    checks = []
    check = jsonutil._PAIRS_DECODER.decode
    monkeypatch.setattr(jsonutil._PAIRS_DECODER, "decode", lambda text: checks.append(text) or check(text))
    _, secret = make_key("both", models=["gpt-4o-mini"], tpm=100000)
    r = _chat(gateway, secret, **{"X-Gateway-Cache": "60"})
    assert r.status_code == 200 and r.headers["x-gateway-cache"] == "MISS"
    assert len(checks) == 1 and '"gpt-4o-mini"' in checks[0]  # positive control: it read this body


def test_a_key_limited_to_models_judges_each_request_of_a_batch(gateway, upstream, make_key):
    _, secret = make_key("batcher", models=["claude-haiku-4-5", "gpt-4o-mini"])
    headers = {"X-Gateway-Key": secret, "x-api-key": "sk-ant-" + "x" * 30, "anthropic-version": "2023-06-01"}

    def batch(*models: str, path: str = "/anthropic/v1/messages/batches") -> httpx.Response:
        requests = [{"custom_id": f"r{i}", "params": {"model": m, "max_tokens": 5,
                                                        "messages": [{"role": "user", "content": "hi"}]}}
                    for i, m in enumerate(models)]
        return httpx.post(f"{gateway.url}{path}", json={"requests": requests}, headers=headers, timeout=10)

    r = batch("claude-haiku-4-5", "claude-opus-4-1")
    assert r.status_code == 403 and "may not use model 'claude-opus-4-1'" in r.json()["error"]["message"]
    # The path as the upstream routes it: a letter percent-encoded named no batch, and its models went unread.
    r = batch("claude-opus-4-1", path="/anthropic/v1/messages/batche%73")
    assert r.status_code == 403 and "may not use model 'claude-opus-4-1'" in r.json()["error"]["message"]
    r = httpx.post(f"{gateway.url}/v1/batche%73", timeout=10, json={
        "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers={"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert r.status_code == 403 and "models are in its uploaded file" in r.json()["error"]["message"]
    assert upstream.received == []
    batch("claude-haiku-4-5")  # allowed: forwarded (the mock has no batches route)
    assert upstream.received[-1].path == "/v1/messages/batches"
    r = httpx.post(f"{gateway.url}/v1/batches", timeout=10, json={
        "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        headers={"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"})
    assert r.status_code == 403 and "models are in its uploaded file" in r.json()["error"]["message"]
    assert len(upstream.received) == 1


def test_a_stored_credential_that_no_longer_decrypts(gateway, upstream, settings, make_key):
    _, secret = make_key("rotated", credential="sk-" + "old" + "0123456789abcdefghijkl", providers=["openai"])
    settings.SECRET_KEY = "rotated-secret-key"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 500 and "SECRET_KEY changed" in r.json()["error"]["message"]
    assert upstream.received == []
    # Retrying cannot help until an administrator sets the credential again: the SDKs, which retry a 500
    # twice by default, raise at the first answer (they sent every call three times).
    sent = []
    client = openai.OpenAI(api_key=secret, base_url=f"{gateway.url}/v1",
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1 and upstream.received == []


def test_a_compressed_body_is_judged_by_the_model_it_names(gateway, upstream, make_key):
    # Read compressed, it named no model: a key limited to gpt-4o-mini let gpt-4o through.
    import gzip

    _, secret = make_key("mini", models=["gpt-4o-mini"])
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"X-Gateway-Key": secret, "Authorization": "Bearer sk-client", "Content-Type": "application/json"}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=gzip.compress(body),
                   headers={**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 403 and "may not use model 'gpt-4o'" in r.json()["error"]["message"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"\x1f\x8bnot gzip",
                   headers={**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "cannot be decoded" in r.json()["error"]["message"]
    assert upstream.received == []


def test_a_compressed_body_is_not_decoded_past_its_bound_to_read_its_model(gateway, upstream, make_key):
    # 20 KB of gzip naming 20 MiB of JSON was decoded and parsed whole on the event loop to read its model
    # (a 3 KB zstd body, 100 MB): a few such requests froze every exchange of the worker for seconds.
    import gzip

    _, secret = make_key("mini", models=["gpt-4o-mini"])
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"a" * (20 << 20) + b'"}]}'
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=gzip.compress(body), timeout=30, headers={
        "X-Gateway-Key": secret, "Authorization": "Bearer sk-client", "Content-Type": "application/json",
        "Content-Encoding": "gzip"})
    assert r.status_code == 400 and "more than 16 MiB decoded" in r.json()["error"]["message"]
    assert upstream.received == []


def test_a_hung_redis_refuses_limited_keys_at_once_after_one_timeout_and_leaves_others_alone(
        gateway, upstream, log_flush, make_key, settings, hung_redis, monkeypatch):
    from keys import store

    port, accepted = hung_redis
    monkeypatch.setitem(store._redis_away, "until", 0.0)
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": f"redis://127.0.0.1:{port}/0",
                                   "OPTIONS": {"socket_timeout": 0.3, "socket_connect_timeout": 0.3}}}
    _, limited = make_key("limited", rpm=1000)
    _, free = make_key("free")
    first = _chat(gateway, limited)
    assert first.status_code == 503 and len(accepted) == 1
    err = first.json()["error"]
    assert err["message"] == "Gateway key limits cannot be checked: Redis is unavailable (TimeoutError). Retry shortly."
    assert first.headers["retry-after"] == "2" and first.headers["ratelimit-policy"] == '"requests";q=1000;w=60'
    # For the next REDIS_AWAY_SECONDS, no request waits on Redis: refused without connecting again.
    assert [_chat(gateway, limited).status_code for _ in range(5)] == [503] * 5 and len(accepted) == 1
    assert _chat(gateway, free).status_code == 200  # a key without limits never needs Redis
    _, resp = _logged(log_flush, first)
    assert resp.outcome == "gateway_error" and "limit store: TimeoutError: Timeout reading" in resp.error_message


def test_a_redis_that_cannot_be_reached_is_said_on_the_console_at_start_without_its_password(
        upstream, transactional_db, log_flush, make_key, settings, caplog, monkeypatch):
    """A dead CACHE_URL was silent at start: the operator learnt of it from clients' 503s. It is one warning
    line at start (and not one per failing request), without the URL's password; requests still get their 503
    in their provider's own error shape."""
    from keys import store
    from tests.conftest import LiveGateway, _free_port

    monkeypatch.setitem(store._redis_away, "until", 0.0)
    monkeypatch.setitem(store._redis_away, "detail", "")
    port = _free_port()  # nothing listens there
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": f"redis://ops:s3cretpw@127.0.0.1:{port}/13"}}
    _, limited = make_key("limited", rpm=1000)
    caplog.set_level("WARNING")
    live = LiveGateway()
    try:
        said = [r.getMessage() for r in caplog.records if r.name == "keys.store"]
        assert len(said) == 1 and said[0].startswith(f"Redis (CACHE_URL redis://127.0.0.1:{port}/13) cannot be reached "
                                                     "(ConnectionError"), said
        assert "requests of gateway keys with limits are refused with 503" in said[0]
        monkeypatch.setitem(store._redis_away, "until", 0.0)  # past the pause: the request tries Redis itself
        r = httpx.post(f"{live.url}/anthropic/v1/messages", timeout=10, headers={
            "X-Gateway-Key": limited, "x-api-key": "sk-ant-x", "anthropic-version": "2023-06-01"},
            json={"model": "claude-3-5-haiku-latest", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "api_error" and "Redis is unavailable" in r.json()["error"]["message"]
        assert len([r for r in caplog.records if r.name == "keys.store"]) == 1  # the same outage: said once
        assert "s3cretpw" not in caplog.text
    finally:
        log_flush()
        live.stop()


def test_a_key_limited_to_models_holds_replicate_trainings_and_encoded_paths_to_them(gateway, upstream, make_key):
    """A training runs (and bills) a model named in the path; an encoded slash names the same model to a
    server that decodes it. Neither named a model the key check could read, so both went through."""
    _, secret = make_key("llama-only", models=["meta/llama-3-8b"])
    headers = {"X-Gateway-Key": secret, "Authorization": "Bearer r8_" + "prov0123456789"}
    refused = [httpx.post(f"{gateway.url}/replicate/v1{path}", json={"input": {"prompt": "x"}, "destination": "me/x"},
                          headers=headers, timeout=10)
               for path in ("/models/stability-ai/sdxl/versions/39ed52f2/trainings",
                            "/models/stability-ai%2Fsdxl/predictions", "/models/stability-ai/sd%78l/predictions")]
    assert [r.status_code for r in refused] == [403] * 3
    assert all("may not use model 'stability-ai/sdxl'" in r.json()["detail"] for r in refused)
    assert len(upstream.received) == 0
    allowed = httpx.post(f"{gateway.url}/replicate/v1/models/meta/llama-3-8b/versions/39ed52f2/trainings",
                         json={"input": {}, "destination": "me/x"}, headers=headers, timeout=10)
    assert allowed.status_code != 403 and len(upstream.received) == 1


def test_a_budget_key_whose_usage_cannot_be_read_is_refused_503_without_the_drivers_words(
        gateway, upstream, log_flush, make_key, monkeypatch):
    """The key's spend is read from the log's tables: a database that went down after the key was found, or one
    not yet migrated by an upgrade (no deleted_spend table), failed the step with a 500 that handed the client
    the driver's message (a PostgreSQL host and port)."""
    from django.db import OperationalError

    from keys import limits

    def down(key):
        raise OperationalError('connection to server at "10.9.8.7", port 5432 failed: Connection refused')

    monkeypatch.setattr(limits, "key_usage", down)
    _, secret = make_key("budgeted", budget_usd=Decimal("5"), budget_period="total")
    r = _chat(gateway, secret)
    assert r.status_code == 503
    assert r.json()["error"]["message"] == ("Gateway key limits cannot be checked: the database cannot be read "
                                            "(OperationalError; is it up, and migrated?). Retry shortly.")
    assert r.headers["retry-after"] and upstream.received == []
    _, resp = _logged(log_flush, r)
    assert resp.outcome == "gateway_error" and "10.9.8.7" in resp.error_message  # the reason is in the log


def test_a_key_with_a_budget_is_refused_a_model_without_a_price(gateway, upstream, log_flush, make_key, settings,
                                                                 tmp_path):
    # A model genai-prices does not know (a compatible server's local model, DALL-E, Imagen, a Replicate model)
    # was answered unpriced: its cost was nothing against the budget while the provider billed it, so a key with a
    # $0.000001 budget spent without limit. Now refused before going upstream, naming the way to allow it.
    _, secret = make_key("budgeted", budget_usd=Decimal("0.000001"), budget_period="day")
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.chat.completions.create(model="my-local-llama", messages=CHAT["messages"])
    message = str(exc.value)
    assert "model 'my-local-llama' has no price" in message and "PRICE_TABLE_PATH" in message
    assert "a price of 0 is allowed" in message
    assert exc.value.response.headers["ratelimit-policy"].startswith('"budget"')
    _, resp = _logged(log_flush, exc.value.response)
    assert resp.status_code == 403 and resp.outcome == "gateway_error" and "has no price" in resp.error_message
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.images.generate(model="dall-e-2", prompt="a cat")
    with pytest.raises(openai.PermissionDeniedError) as exc:
        client.images.generate(prompt="a cat")  # the upstream's default model: its price unknown
    assert "names no model" in str(exc.value)
    with pytest.raises(openai.PermissionDeniedError) as exc:  # priced by the hour of audio, which the log never counts
        client.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF0000WAVE", "audio/wav"))
    assert "model 'whisper-1' has no price" in str(exc.value)
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"}
    refused = [
        ("/gemini/v1beta/models/imagen-4.0-generate-001:predict", {"instances": [{"prompt": "a cat"}]}),
        ("/replicate/v1/models/black-forest-labs/flux-schnell/predictions", {"input": {"prompt": "a cat"}}),
        ("/replicate/v1/predictions", {"input": {"prompt": "a cat"}}),  # no version: nothing to price
        ("/anthropic/v1/messages", {"model": "claude-unknown-9", "max_tokens": 5, "messages": CHAT["messages"]}),
    ]
    for path, body in refused:
        r = httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)
        assert r.status_code == 403, (path, r.text)
    assert upstream.received == []
    # Priced models, alias included (gpt-4o-2024-08-06 prices as gpt-4o), and what runs no model go as before.
    assert client.chat.completions.create(model="gpt-4o-2024-08-06", messages=CHAT["messages"]).choices
    assert client.files.create(file=("a.jsonl", b"{}", "application/jsonl"), purpose="batch").id
    assert len(upstream.received) == 2
    # A price in PRICE_TABLE_PATH, 0 included, allows the model; a key without a budget never needed one.
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"openai": {"my-local-llama": {"input": 0, "output": 0}}}))
    settings.PRICE_TABLE_PATH = str(table)
    assert client.chat.completions.create(model="my-local-llama", messages=CHAT["messages"]).choices
    _, free = make_key("free-spender")
    r = httpx.post(f"{gateway.url}/v1/images/generations", json={"model": "dall-e-2", "prompt": "a cat"},
                   headers={"X-Gateway-Key": free, "Authorization": f"Bearer {PROVIDER_KEY}"}, timeout=10)
    assert r.status_code == 200 and len(upstream.received) == 4


@pytest.mark.parametrize("limit", ["models", "budget", "tpm"])
def test_a_limited_key_may_post_only_where_the_gateway_knows_the_model(gateway, upstream, make_key, limit):
    # A POST to an endpoint the provider module did not list (one the upstream added since: agents, eval runs,
    # Gemini's ephemeral Live tokens) went through unchecked for a key limited to models, with a budget or a token
    # limit: it may run any model, at any price. Refused now; what the official SDKs send that runs no model goes as
    # before.
    limits = {"models": {"models": ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.0-flash"]},
              "budget": {"budget_usd": Decimal("5")}, "tpm": {"tpm": 100000}}[limit]
    _, secret = make_key(f"posts-{limit}", **limits)
    oa = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                       default_headers={"X-Gateway-Key": secret})
    an = anthropic.Anthropic(api_key="sk-ant-" + "x" * 30, base_url=f"{gateway.url}/anthropic", max_retries=0,
                             default_headers={"X-Gateway-Key": secret})
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}", "x-goog-api-key": "AIza" + "x" * 35}
    refused = [
        ("/v1/agents/sessions", {"agent_id": "agent_1"}),
        ("/v1/evals/eval_1/runs", {"data_source": {"type": "completions", "model": "gpt-4o"}}),
        ("/v1/brand_new_endpoint", {"model": "gpt-4o-mini"}),  # a model named does not make it known
        ("/v1/chatkit/sessions", {"workflow": {"id": "wf_1"}}),
        ("/anthropic/v1/sessions", {"agent": "agent_1"}),
        ("/anthropic/v1/deployments/dep_1/run", {}),
        ("/gemini/v1beta/tunedModels", {"baseModel": "models/gemini-1.5-flash-001-tuning"}),
        ("/gemini/v1beta/fileSearchStores/s1:importFile", {"fileName": "files/f1"}),  # runs an embedding model
        ("/replicate/v1/brand_new_endpoint", {"input": {}}),
    ]
    if limit == "models":  # a key counting spend is refused it as a credential used past the gateway (below)
        refused.append(("/gemini/v1beta/authTokens", {"uses": 1}))
    for path, body in refused:
        r = httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=10)
        assert r.status_code == 403 and "is not one whose model the gateway knows" in r.text, (path, r.text)
    assert upstream.received == []

    def reaches(call) -> None:
        sent = len(upstream.received)
        try:
            call()
        except (openai.NotFoundError, anthropic.NotFoundError):  # the mock serves few routes: it was forwarded
            pass
        assert len(upstream.received) == sent + 1

    reaches(lambda: oa.files.create(file=("a.jsonl", b"{}", "application/jsonl"), purpose="batch"))
    reaches(lambda: oa.uploads.create(bytes=1, filename="a.txt", mime_type="text/plain", purpose="assistants"))
    reaches(lambda: oa.uploads.parts.create("upload_1", data=b"x"))
    reaches(lambda: oa.uploads.complete("upload_1", part_ids=["part_1"]))
    reaches(lambda: oa.vector_stores.create(name="docs"))
    reaches(lambda: oa.vector_stores.files.create(vector_store_id="vs_1", file_id="file-1"))
    reaches(lambda: oa.vector_stores.file_batches.create(vector_store_id="vs_1", file_ids=["file-1"]))
    reaches(lambda: oa.vector_stores.file_batches.cancel("vsfb_1", vector_store_id="vs_1"))
    reaches(lambda: oa.batches.cancel("batch_1"))
    reaches(lambda: oa.fine_tuning.jobs.cancel("ftjob-1"))
    reaches(lambda: oa.responses.cancel("resp_1"))
    reaches(lambda: oa.beta.assistants.create(model="gpt-4o-mini"))
    reaches(lambda: oa.beta.threads.create())
    reaches(lambda: oa.beta.threads.messages.create("thread_1", role="user", content="hi"))
    reaches(lambda: oa.conversations.create())
    reaches(lambda: oa.chat.completions.update("chatcmpl-1", metadata={"team": "a"}))
    reaches(lambda: an.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}]))
    reaches(lambda: an.messages.batches.cancel("msgbatch_1"))
    reaches(lambda: an.beta.files.upload(file=("a.txt", b"x", "text/plain")))
    for path in ("/gemini/upload/v1beta/files", "/gemini/v1beta/batches/b1:cancel", "/replicate/v1/files",
                 "/replicate/v1/predictions/p1/cancel"):
        reaches(lambda: httpx.post(f"{gateway.url}{path}", json={}, headers=headers, timeout=10))


@pytest.mark.parametrize("limit", [{"budget_usd": Decimal("5")}, {"tpm": 100000}])
def test_a_key_counting_spend_or_tokens_is_refused_what_the_log_never_counts(gateway, upstream, make_key, limit):
    # A batch's results come later as a file the log does not price, a fine-tuning job is billed apart, and a
    # realtime client secret lets a browser talk to OpenAI directly: a key with a budget of $5 ran any number of
    # them with priced models, each counting nothing against its budget or its tokens.
    _, secret = make_key("counted", **limit)
    oa = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                       default_headers={"X-Gateway-Key": secret})
    an = anthropic.Anthropic(api_key="sk-ant-" + "x" * 30, base_url=f"{gateway.url}/anthropic", max_retries=0,
                             default_headers={"X-Gateway-Key": secret})
    calls = [
        lambda: oa.batches.create(input_file_id="file-1", endpoint="/v1/chat/completions", completion_window="24h"),
        lambda: oa.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file="file-1"),
        lambda: oa.realtime.client_secrets.create(session={"type": "realtime", "model": "gpt-realtime"}),
        lambda: oa.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hi"),  # audio, no usage
        lambda: an.messages.batches.create(requests=[{"custom_id": "r0", "params": {
            "model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}}]),
    ]
    for call in calls:
        with pytest.raises((openai.PermissionDeniedError, anthropic.PermissionDeniedError)) as exc:
            call()
        assert "it would count nothing" in str(exc.value)
    headers = {"X-Gateway-Key": secret, "x-goog-api-key": "AIza" + "x" * 35}
    for path in ("/gemini/v1beta/models/gemini-2.0-flash:batchGenerateContent", "/gemini/v1alpha/authTokens"):
        r = httpx.post(f"{gateway.url}{path}", json={}, headers=headers, timeout=10)
        assert r.status_code == 403 and "it would count nothing" in r.text, (path, r.text)
    assert upstream.received == []
    assert oa.chat.completions.create(**CHAT).choices  # what it counts goes as before


@pytest.mark.parametrize("limit", [{"budget_usd": Decimal("5")}, {"tpm": 100000}])
def test_a_key_counting_spend_or_tokens_is_refused_a_transcription_whose_answer_reports_no_usage(
        gateway, upstream, make_key, log_flush, limit):
    # Asked for text, SRT or VTT, a transcription's answer carries no usage: a key with a budget or a token limit
    # transcribed any amount of audio with gpt-4o-transcribe, counting nothing.
    _, secret = make_key("counted", **limit)
    oa = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                       default_headers={"X-Gateway-Key": secret})
    audio = ("a.mp3", b"ID3" + bytes(64), "audio/mpeg")
    for form in ("text", "srt", "vtt"):
        with pytest.raises(openai.PermissionDeniedError) as exc:
            oa.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio, response_format=form)
        assert f'response_format "{form}" reports no usage' in str(exc.value)
    assert upstream.received == []
    answer = oa.audio.transcriptions.with_raw_response.create(model="gpt-4o-transcribe", file=audio)  # JSON
    assert answer.parse().text == "Hello there." and len(upstream.received) == 1
    _, resp = _logged(log_flush, answer.http_response)
    assert (resp.input_tokens, resp.output_tokens) == (14, 45)
    # Its 14 input tokens are audio, priced as audio ($6 per million against $2.50 for text, genai-prices).
    from logs.pricing import cost_compute
    from providers.base import usage_make
    from providers import registry
    openai_provider = registry().match("/v1/audio/transcriptions")[0]
    as_audio = cost_compute(openai_provider, usage_make("gpt-4o-transcribe", 14, 45,
                                                        priced={"input_audio_tokens": 14})).cost
    as_text = cost_compute(openai_provider, usage_make("gpt-4o-transcribe", 14, 45)).cost
    assert resp.cost_usd == as_audio and as_audio > as_text


@pytest.mark.parametrize("fields", [
    {"response_format": ["json", "text"]},  # sent twice: Starlette's form (FastAPI servers) takes the last
    {"response_format": "t\xe9xt".encode("latin-1")},  # a value that is not UTF-8, read by no one here
])
def test_a_transcription_whose_response_format_cannot_be_read_is_refused_to_a_key_counting_tokens(
        gateway, upstream, make_key, fields):
    # The gateway left a form field it could not read out of the form, as if it had not been sent: the format
    # read as the default (JSON, which reports usage) and the upstream's text answer counted nothing.
    _, secret = make_key("counted", tpm=100000)
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"}
    audio = {"file": ("a.mp3", b"ID3" + bytes(64), "audio/mpeg")}
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", files=audio,
                   data={"model": "gpt-4o-transcribe", **fields}, headers=headers)
    assert r.status_code == 403 and "response_format" in r.json()["error"]["message"], r.text
    assert upstream.received == []


@pytest.mark.parametrize("limit", [{"tpm": 100000}, {"budget_usd": Decimal("5")}, {"models": ["gpt-4o-transcribe"]}])
def test_a_form_of_more_parts_than_the_gateway_reads_is_refused_to_a_limited_key(
        gateway, upstream, make_key, settings, limit):
    # Past LOG_MULTIPART_MAX_PARTS the form read as empty, as if none of its fields were sent: a key counting
    # tokens let a transcription padded with a thousand empty fields ask for text, whose answer reports no usage.
    settings.LOG_MULTIPART_MAX_PARTS = 20
    _, secret = make_key("counted", **limit)
    headers = {"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"}
    audio = {"file": ("a.mp3", b"ID3" + bytes(64), "audio/mpeg")}
    fields = {"model": "gpt-4o-transcribe", "response_format": "json"}
    padded = {**fields, "response_format": "text", **{f"pad{i}": "" for i in range(21)}}
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", files=audio, data=padded, headers=headers)
    assert r.status_code == 400 and "more than 20 parts" in r.json()["error"]["message"], r.text
    assert upstream.received == []
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", files=audio, data=fields, headers=headers)
    assert r.status_code == 200 and len(upstream.received) == 1  # a form of fewer parts is read as before


def test_a_large_body_is_judged_by_its_model_and_a_large_upload_passes(gateway, upstream, make_key):
    # Over 1 MiB a body was "too large to read its model": a key limited to models was refused a long prompt or a
    # file upload of 2 MiB, and a key with a budget let a long prompt to a model without a price through unread.
    _, limited = make_key("big-models", models=["gpt-4o-mini"])
    _, budget = make_key("big-budget", budget_usd=Decimal("5"))
    long_text = "word " * 450_000  # over 2 MiB of JSON

    def chat(secret: str, model: str) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": long_text}]}
        return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"X-Gateway-Key": secret, "Authorization": f"Bearer {PROVIDER_KEY}"})

    assert chat(limited, "gpt-4o-mini").status_code == 200
    r = chat(limited, "gpt-4o")
    assert r.status_code == 403 and "may not use model 'gpt-4o'" in r.text
    r = chat(budget, "my-local-llama")
    assert r.status_code == 403 and "model 'my-local-llama' has no price" in r.text
    assert len(upstream.received) == 1
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": limited})
    assert client.files.create(file=("a.jsonl", b"{}\n" * 800_000, "application/jsonl"), purpose="batch").id
    assert len(upstream.received) == 2


def test_an_answer_reporting_negative_usage_gives_no_budget_back(gateway, upstream, log_flush, make_key, tmp_path,
                                                                settings):
    """docs/keys.md: an exchange whose usage is unknown counts nothing. An upstream reporting prompt_tokens
    -1,000,000 cost -$0.15 in the log (priced by PRICE_TABLE_PATH), which the key's spend added up: its budget grew
    by 15 cents."""
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"openai": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}}))
    settings.PRICE_TABLE_PATH = str(table)
    _, secret = make_key("negative", budget_usd=Decimal("0.000001"), budget_period="day")
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": secret})
    client.chat.completions.create(**CHAT, extra_headers={"x-mock-usage": json.dumps({"prompt_tokens": -1_000_000})})
    client.chat.completions.create(**CHAT)  # $0.0000072: past the budget
    ended = time.monotonic()
    caught = _refusal_awaited(client, ended)
    assert caught is not None and "used its budget of $0.000001 per day" in caught.message
    log_flush()
    first = Response.objects.filter(request__gateway_key__startswith="negative (").order_by("created_at").first()
    assert first.cost_usd is None and "input_tokens (negative)" in first.error_message
