"""A provider defined in this module alone is routed, logged, reassembled and priced like a built-in one.

This is the promise of the `providers` package: everything about a provider lives in its module,
and the proxy and the log only ask the registry.
"""

import json
import re
from decimal import Decimal

import httpx
import pytest

import proxy.upstream
import providers
from logs.models import Request, Response
from providers.base import Payload, Provider, StreamEvent, Usage, int_of, names_without, sub, usage_make

pytestmark = pytest.mark.django_db(transaction=True)

TOY_UPSTREAM = "http://toy.test"


class Toy(Provider):
    """A made-up wire format: the model is "engine", usage is "spent", streams send "piece" events."""

    name = "toy"
    label = "Toy"
    prefixes = ("/toy/api/",)
    upstream_prefix = "/v2/"
    upstream_default = TOY_UPSTREAM
    credential_headers = ("x-toy-key",)

    def error_body(self, message: str, *, kind: str = "gateway_error", status: int = 500) -> bytes:
        return json.dumps({"toy_error": {"why": message, "kind": kind, "code": status}}).encode()

    def request_model(self, endpoint: str, payload: Payload) -> str | None:
        return sub(payload, "engine")

    def stream_requested(self, endpoint: str, payload: Payload) -> bool:
        return endpoint.endswith("/flow")

    def usage(self, answer: Payload) -> Usage:
        spent = sub(answer, "spent")
        return usage_make(sub(answer, "engine"), int_of(spent, "in"), int_of(spent, "out"))

    def stream_reassemble(self, events: list[StreamEvent]) -> Payload:
        pieces = [p for name, p in events if name == "piece" and isinstance(p, dict)]
        final = next((p for name, p in events if name == "done" and isinstance(p, dict)), {})
        return {"text": "".join(p.get("t", "") for p in pieces), **final}

    def event_has_content(self, name: str | None, payload: Payload) -> bool:
        return name == "piece" and bool(sub(payload, "t"))

    def price_names(self, model: str) -> list[str]:
        return names_without(model, (re.compile(r"-v\d+$"),))


def _toy_upstream(request: httpx.Request) -> httpx.Response:
    """The toy provider's upstream: a JSON answer, or a stream of piece events."""
    body = json.loads(request.content or b"{}")
    if request.url.path.endswith("/flow"):
        events = [("piece", {"t": ""}), ("piece", {"t": "to"}), ("piece", {"t": "y"}),
                  ("done", {"engine": body["engine"], "spent": {"in": 7, "out": 2}})]
        text = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events)
        return _streamed(200, "text/event-stream", text.encode())
    answer = {"engine": body["engine"], "reply": "toy!", "spent": {"in": 3, "out": 5}}
    return _streamed(200, "application/json", json.dumps(answer).encode())


def _streamed(status: int, content_type: str, body: bytes) -> httpx.Response:
    """An answer whose body is still to be read, as a network transport returns it."""
    return httpx.Response(status, headers={"content-type": content_type, "content-length": str(len(body))},
                          stream=httpx.ByteStream(body))


@pytest.fixture
def toy(monkeypatch, settings, tmp_path):
    """The toy provider registered, its upstream faked, and a price for its model."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _toy_upstream(request)

    monkeypatch.setattr(proxy.upstream, "transport_build", lambda limits: httpx.MockTransport(handler))
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"toy": {"toy-engine": {"input": 1000, "output": 2000}}}))
    settings.PRICE_TABLE_PATH = str(prices)
    providers.register(Toy())
    yield seen
    providers.unregister("toy")


def test_toy_provider_is_routed_logged_and_priced(toy, gateway, log_flush):
    r = httpx.post(f"{gateway.url}/toy/api/ask?x=1", json={"engine": "toy-engine-v3", "q": "hi"},
                   headers={"X-Toy-Key": "toy-secret-0123456789"})
    assert r.status_code == 200 and r.json()["reply"] == "toy!"
    sent = toy[-1]
    assert (str(sent.url), sent.headers["x-toy-key"]) == (f"{TOY_UPSTREAM}/v2/ask?x=1", "toy-secret-0123456789")
    log_flush()
    req = Request.objects.get(id=r.headers["x-gateway-request-id"])
    resp = Response.objects.get(request=req)
    assert (req.provider, req.endpoint, req.model, req.stream_requested) == ("toy", "/toy/api/ask", "toy-engine-v3",
                                                                           False)
    assert "toy-secret-0123456789" not in json.dumps(req.headers) and req.key_fingerprint
    assert (resp.model, resp.input_tokens, resp.output_tokens, resp.total_tokens) == ("toy-engine-v3", 3, 5, 8)
    # Priced through the toy's own name normalisation (-v3 dropped): 3 * $1000 + 5 * $2000 per million.
    assert resp.cost_usd == Decimal("0.013")


def test_toy_stream_is_reassembled_and_timed(toy, gateway, log_flush):
    with httpx.stream("POST", f"{gateway.url}/toy/api/flow", json={"engine": "toy-engine"}) as r:
        got = b"".join(r.iter_raw())
        rid = r.headers["x-gateway-request-id"]
    assert got.count(b"event: piece") == 3
    log_flush()
    resp = Response.objects.get(request_id=rid)
    assert resp.is_stream and resp.request.stream_requested
    assert resp.stream_result == {"events": 4, "result": {"text": "toy", "engine": "toy-engine",
                                                          "spent": {"in": 7, "out": 2}}}
    assert (resp.input_tokens, resp.output_tokens) == (7, 2)
    assert resp.cost_usd == Decimal("0.011")
    # TTFT is the second piece (the first is empty), never before the first byte.
    assert len(resp.event_offsets_ms) == 4 and resp.ttft_ms == max(resp.event_offsets_ms[1], resp.ttfb_ms)


def test_toy_errors_come_in_the_toys_shape(toy, gateway, log_flush):
    raw = httpx.request("PROPFIND", f"{gateway.url}/toy/api/ask")
    assert raw.status_code == 405
    assert raw.json() == {"toy_error": {"why": "Method PROPFIND is not supported by the gateway.",
                                        "kind": "invalid_request_error", "code": 405}}
    log_flush()
    assert Response.objects.get(request_id=raw.headers["x-gateway-request-id"]).status_code == 405
