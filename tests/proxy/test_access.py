"""Gateway access keys: required when configured, removed before forwarding, logged by name."""

import json

import httpx
import openai
import pytest

from logs.models import Request, Response
from logs.redaction.redact import key_fingerprint
from proxy.access import AccessDenied, access_check
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)

TEAM_KEY = "gk-" + "team" + "0123456789abcdefghij"
BARE_KEY = "gk-" + "bare" + "abcdefghij0123456789"
PROVIDER_KEY = "sk-" + "acc" + "0123456789abcdefghijklmn"


@pytest.fixture
def access_keys(settings):
    settings.GATEWAY_API_KEYS = [f"team-a:{TEAM_KEY}", BARE_KEY]


def test_open_when_no_keys_configured(settings):
    settings.GATEWAY_API_KEYS = []
    assert access_check([("Authorization", "Bearer x")]) is None


def test_named_and_bare_keys(access_keys):
    assert access_check([("X-Gateway-Key", TEAM_KEY)]).name == "team-a"
    bare = access_check([("x-gateway-key", f" {BARE_KEY} ")])
    assert bare.name == f"key-{key_fingerprint(BARE_KEY)}"
    with pytest.raises(AccessDenied, match="requires an access key"):
        access_check([("Authorization", f"Bearer {TEAM_KEY}")])
    with pytest.raises(AccessDenied, match="Invalid"):
        access_check([("X-Gateway-Key", TEAM_KEY + "x")])


def test_label_replaces_the_logged_header(access_keys):
    key = access_check([("X-Gateway-Key", TEAM_KEY)])
    assert key.label == f"team-a (fp {key_fingerprint(TEAM_KEY)})"
    labelled = key.headers_label([("X-Gateway-Key", "…ghij"), ("A", "b")])
    assert labelled == [("X-Gateway-Key", f"team-a (fp {key_fingerprint(TEAM_KEY)})"), ("A", "b")]


pytestmark_live = pytest.mark.django_db(transaction=True)


@pytestmark_live
@pytest.mark.parametrize("headers,message", [
    ({}, "requires an access key"),
    ({"X-Gateway-Key": "gk-wrong-0000000000000000"}, "Invalid gateway key"),
])
def test_live_missing_or_wrong_key_is_a_json_401(gateway, upstream, log_flush, access_keys, headers, message):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": []},
                   headers={"Authorization": f"Bearer {PROVIDER_KEY}", **headers})
    assert r.status_code == 401
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "authentication_error"
    assert upstream.received == []  # the upstream never saw it
    log_flush()
    req = Request.objects.get(id=r.headers["x-gateway-request-id"])
    resp = Response.objects.get(request=req)
    assert resp.status_code == 401 and resp.outcome == "gateway_error" and req.body is None
    assert PROVIDER_KEY not in json.dumps(req.headers)


@pytestmark_live
def test_live_good_key_passes_and_is_stripped(gateway, upstream, log_flush, access_keys):
    client = openai.OpenAI(api_key=PROVIDER_KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-Key": TEAM_KEY})
    assert client.models.list().data[0].id == "gpt-4o-mini"
    got = upstream.received[-1]
    assert got.header("x-gateway-key") is None  # removed before forwarding
    assert got.header("authorization") == f"Bearer {PROVIDER_KEY}"  # provider key untouched
    log_flush()
    req = Request.objects.get(endpoint="/v1/models")
    logged = {k.lower(): v for k, v in req.headers}
    assert logged["x-gateway-key"] == f"team-a (fp {key_fingerprint(TEAM_KEY)})"
    assert req.key_fingerprint == key_fingerprint(PROVIDER_KEY)
    assert Response.objects.get(request=req).status_code == 200


@pytestmark_live
def test_a_database_that_cannot_be_read_is_a_clear_503_and_the_exchange_ends(gateway, upstream, log_flush,
                                                                              monkeypatch):
    # An unmigrated database (no gateway_keys table) or one that is down: not a bare 500 with a traceback.
    from django.db import OperationalError

    from proxy.exchange import exchanges_inflight

    async def unreadable() -> bool:
        raise OperationalError("no such table: gateway_keys")

    monkeypatch.setattr("proxy.access._keys_exist", unreadable)
    r = httpx.get(f"{gateway.url}/v1/models", headers={"Authorization": f"Bearer {PROVIDER_KEY}"})
    assert r.status_code == 503
    err = r.json()["error"]
    assert "(OperationalError)" in err["message"] and "python manage.py migrate" in err["message"]
    assert "no such table" not in err["message"]  # the driver's words (a host, a port) stay in the log
    assert err["type"] == "gateway_error" and "code" in err and "param" in err
    assert upstream.received == [] and exchanges_inflight() == 0  # ended: shutdown does not wait for it
    monkeypatch.undo()
    log_flush()
    resp = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
    assert resp.status_code == 503 and resp.outcome == "gateway_error"
    assert "gateway keys not read: OperationalError: no such table: gateway_keys" in resp.error_message


PREFLIGHT = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization,content-type,x-gateway-key,x-stainless-os"}


@pytestmark_live
def test_live_a_browsers_preflight_needs_no_key_and_reaches_the_upstream(gateway, upstream, log_flush, access_keys):
    # A browser app (openai JS with dangerouslyAllowBrowser, the Vercel AI SDK) first sends this OPTIONS,
    # which browsers never give credentials: a 401 to it failed every call before the real one was sent.
    r = httpx.options(f"{gateway.url}/v1/chat/completions", headers=PREFLIGHT)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-gateway-key" in r.headers["access-control-allow-headers"]
    got = upstream.received[-1]
    assert got.method == "OPTIONS" and got.header("origin") == "http://localhost:5173"
    log_flush()
    req = Request.objects.get(id=r.headers["x-gateway-request-id"])
    assert req.method == "OPTIONS" and req.gateway_key == ""
    assert Response.objects.get(request=req).outcome == "completed"
    # The call that follows is checked as always: without a key it is refused...
    call = {"Origin": "http://localhost:5173", "Authorization": f"Bearer {PROVIDER_KEY}"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=call).status_code == 401
    # ...with one it goes through.
    ok = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers={**call, "X-Gateway-Key": TEAM_KEY})
    assert ok.status_code == 200


@pytestmark_live
@pytest.mark.parametrize("extra", [{"Authorization": f"Bearer {PROVIDER_KEY}"}, {"Cookie": "s=1"},
                                   {"api-key": PROVIDER_KEY}])
def test_live_an_options_with_a_credential_is_no_preflight(gateway, upstream, access_keys, extra):
    # No browser puts a credential on a preflight: such an OPTIONS is a request like any other, and needs a key.
    r = httpx.options(f"{gateway.url}/v1/chat/completions", headers={**PREFLIGHT, **extra})
    assert r.status_code == 401 and upstream.received == []


@pytestmark_live
def test_live_an_options_with_a_body_is_no_preflight(gateway, upstream, access_keys, log_flush):
    # Browsers send a preflight without a body. One with a body went upstream without a key and was logged:
    # 1 KiB of gzip from anyone became 1 MiB of text in the log.
    import gzip

    body = gzip.compress(b'{"x": "' + b"a" * (1 << 20) + b'"}')
    r = httpx.request("OPTIONS", f"{gateway.url}/v1/chat/completions", content=body,
                      headers={**PREFLIGHT, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 401 and upstream.received == []
    log_flush()
    assert Request.objects.get(id=r.headers["x-gateway-request-id"]).body is None


@pytestmark_live
def test_live_a_preflight_is_never_cached(gateway, upstream, settings):
    # The upstream answers a preflight for one Origin and one list of headers; the cache matches on neither,
    # so a replay would hand one page the answer meant for another's headers (and the browser refuses it).
    settings.CACHE_DEFAULT_TTL = 60
    first = httpx.options(f"{gateway.url}/v1/models", headers={**PREFLIGHT, "Access-Control-Request-Headers": "a"})
    second = httpx.options(f"{gateway.url}/v1/models", headers={**PREFLIGHT, "Access-Control-Request-Headers": "b"})
    assert first.headers["access-control-allow-headers"] == "a"
    assert second.headers["access-control-allow-headers"] == "b"
    assert "x-gateway-cache" not in second.headers
    assert [r.method for r in upstream.received] == ["OPTIONS", "OPTIONS"]


@pytestmark_live
def test_live_a_browser_can_read_the_gateways_own_refusal(gateway, upstream, access_keys):
    # Without Access-Control-Allow-Origin the browser hides the 401 behind "Failed to fetch", and the SDK
    # retries it as a lost connection; the app never learns its key is wrong.
    call = {"Origin": "http://localhost:5173", "Authorization": f"Bearer {PROVIDER_KEY}",
            "X-Gateway-Key": "gk-wrong-0000000000000000"}
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers=call)
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "*"
    assert refused.headers["access-control-expose-headers"] == "*"  # the request id, Retry-After, RateLimit
    # Only for a cross-origin call, and never on the upstream's own answers: the upstream decides for those.
    no_origin = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"},
                           headers={k: v for k, v in call.items() if k != "Origin"})
    assert "access-control-allow-origin" not in no_origin.headers
    relayed = httpx.get(f"{gateway.url}/v1/models", headers={**call, "X-Gateway-Key": TEAM_KEY})
    assert relayed.status_code == 200 and "access-control-allow-origin" not in relayed.headers


@pytestmark_live
def test_live_a_preflight_never_carries_a_gateway_secret_upstream(gateway, upstream, make_key):
    # A page that put its gateway key in Gemini's ?key= sends it in the preflight's URL too: refused as
    # the call is, or the upstream read the secret.
    _, secret = make_key(name="page")
    r = httpx.options(f"{gateway.url}/gemini/v1beta/models/gemini-2.0-flash:generateContent?key={secret}",
                      headers=PREFLIGHT)
    assert r.status_code == 401 and "not in the query string" in r.json()["error"]["message"]
    r = httpx.options(f"{gateway.url}/v1/chat/completions", headers={**PREFLIGHT, "X-Note": secret})
    assert r.status_code == 401 and "not in the x-note header" in r.json()["error"]["message"].lower()
    assert upstream.received == []
