"""What reaches the upstream is what the client sent: method, raw target and header list, byte for byte."""

import socket

import openai
import pytest

from logs.models import Request

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "exactFWDkey0123456789abcdefXYZ9"  # fake; split so no key-like literal

# (what the client sends, what the upstream must receive): percent-encodings that decode to
# something else (an id containing "%41", a space, ":", a slash), lowercase hex, characters
# httpx or yarl would re-encode, in paths and queries; the OpenAI prefix mapped to the upstream's.
TARGETS = [
    ("/v1/models/x%252541", "/v1/models/x%252541"),
    ("/v1/models/a%2520b", "/v1/models/a%2520b"),
    ("/v1/models/ft%3Agpt-4o%3Aorg%3Aabc", "/v1/models/ft%3Agpt-4o%3Aorg%3Aabc"),
    ("/v1/models/meta-llama%2FLlama-3-8b", "/v1/models/meta-llama%2FLlama-3-8b"),
    ("/v1/models/low%2ahex%7e", "/v1/models/low%2ahex%7e"),
    ("/v1/files?q=%5B%2A%5D&p=%21%27%28%29%7E%3A%40%2C%24%2F%3F&l=%2a%5b",
     "/v1/files?q=%5B%2A%5D&p=%21%27%28%29%7E%3A%40%2C%24%2F%3F&l=%2a%5b"),
    ('/v1/models/{x}|y?a={b}&c="d"|e&f=%&g=+h%20i&&j', '/v1/models/{x}|y?a={b}&c="d"|e&f=%&g=+h%20i&&j'),
    ("/openai/v1/models/org%2Fmodel?after=a%3Ab", "/v1/models/org%2Fmodel?after=a%3Ab"),
]
METHODS = ["GET", "DELETE", "HEAD", "OPTIONS"]  # no body: nothing may be added, no framing either


def _head(method: str, target: str, host: str, probe: int) -> bytes:
    """A request head; header names in lower case, as every ASGI server hands them on."""
    return (f"{method} {target} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {KEY}\r\n"
            f"x-probe: {probe}\r\naccept: */*\r\nx-dup: 1\r\nx-dup: 2\r\n\r\n").encode()


def _send(port: int, data: bytes) -> bytes:
    """Send a raw request; the answer's status line and headers (the upstream was called by then)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.partition(b"\r\n\r\n")[0]


def test_bodiless_requests_reach_upstream_byte_for_byte(gateway, upstream, log_flush):
    upstream_host = upstream.url.removeprefix("http://")
    sent = {}
    for method in METHODS:
        for target, upstream_target in TARGETS:
            probe = len(sent)
            answer = _send(gateway.port, _head(method, target, "gw.example", probe))
            assert not answer.startswith(b"HTTP/1.1 400"), (method, target, answer)
            # The only differences allowed: the target's prefix (the provider's upstream prefix) and
            # Host, which names the upstream (aiohttp writes the name capitalised).
            sent[str(probe)] = (target, _head(method, upstream_target, upstream_host, probe).replace(
                b"\r\nhost: ", b"\r\nHost: ", 1))
    got = {r.header("x-probe"): r.head for r in upstream.received}
    assert {probe: head for probe, (_, head) in sent.items()} == got
    log_flush()
    # The log keeps the path as the client sent it.
    assert sorted(Request.objects.values_list("endpoint", flat=True)) == sorted(
        target.partition("?")[0] for target, _ in sent.values())


def test_openai_sdk_model_id_with_a_slash(gateway, upstream, log_flush):
    direct = openai.OpenAI(base_url=f"{upstream.url}/v1", api_key=KEY).models.retrieve("meta-llama/Llama-3-8b")
    assert upstream.received[-1].target == "/v1/models/meta-llama%2FLlama-3-8b"  # how the SDK sends it
    proxied = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY).models.retrieve("meta-llama/Llama-3-8b")
    assert proxied.id == direct.id == "meta-llama/Llama-3-8b"
    assert upstream.received[-1].target == "/v1/models/meta-llama%2FLlama-3-8b"
    log_flush()
    assert Request.objects.get().endpoint == "/v1/models/meta-llama%2FLlama-3-8b"
