"""The log keeps what a hostile client or upstream sends: deep JSON, bombs, corrupt encodings, part floods.

Each test sends what an attacker sent against a live gateway and checks that the bytes are in the
log (inline or as a file whose sha256 matches) with a note saying what could not be read, that the
admin page renders, and that the work stayed bounded.
"""

import gzip
import hashlib
import json
import threading
import zlib

import brotli
import httpx
import pytest
import zstandard
from django.contrib.auth.models import User
from django.core.files.storage import storages
from django.test import Client

from logs.models import BinaryFile, Request, Response

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {"Authorization": "Bearer " + "sk-" + "integrityTEST0123456789abcd"}


def _nested(depth: int) -> str:
    """A JSON object with one field nested `depth` levels deep."""
    return '{"model": "m", "messages": [], "x": ' + "[" * depth + "1" + "]" * depth + "}"


def _exchange(log_flush, rid: str) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(id=rid)
    return req, Response.objects.get(request=req)


def _page(rid: str):
    admin = Client()
    user = User.objects.filter(username="integrity").first() or User.objects.create_superuser(
        "integrity", "i@example.invalid", "pw")
    admin.force_login(user)
    return admin.get(f"/admin/logs/request/{rid}/change/")


def _stored(f: BinaryFile) -> bytes:
    with storages["payloads"].open(f.file.name, "rb") as src:
        return src.read()


def test_deeply_nested_request_and_answer_are_kept_and_shown(scripted, gateway, log_flush):
    deep_answer = _nested(1100)
    scripted.answer = lambda request: (200, [("content-type", "application/json")], deep_answer.encode())
    sent = _nested(1100)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=sent, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 200 and r.text == deep_answer
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert req.body == sent and resp.body == deep_answer  # nothing dropped, whatever the nesting
    page = _page(req.id.hex)
    assert page.status_code == 200 and b'{&quot;model&quot;: &quot;m&quot;, &quot;messages&quot;: [], &quot;x&quot;: [[[' \
        in page.content  # too deep to parse: shown as the text it is


def test_a_moderately_deep_body_renders(scripted, gateway, log_flush):
    scripted.answer = lambda request: (200, [("content-type", "application/json")], _nested(250).encode())
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.body == _nested(250)
    page = _page(req.id.hex)
    assert page.status_code == 200 and b"nested more than 32 levels" in page.content  # was a 500


def test_deep_stream_events_keep_the_body_and_skip_the_result(scripted, gateway, log_flush):
    deep = "[" * 900 + "1" + "]" * 900
    body = (f'data: {{"choices": [{{"index": 0, "delta": {{"content": "hi"}}}}], "usage": {{"x": {deep}}}}}\n\n'
            "data: [DONE]\n\n").encode()
    scripted.answer = lambda request: (200, [("content-type", "text/event-stream")], body)
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={"model": "m", "stream": True},
                      headers=AUTH) as r:
        assert b"".join(r.iter_raw()) == body
        rid = r.headers["x-gateway-request-id"]
    req, resp = _exchange(log_flush, rid)
    assert resp.body == body.decode() and resp.stream_result["events"] == 2
    assert resp.stream_result["result"] is None and "deeper than" in resp.stream_result["note"]
    assert _page(req.id.hex).status_code == 200


def test_decompression_bomb_is_relayed_and_kept_as_received(scripted, gateway, log_flush, settings):
    settings.LOG_DECODE_MAX_BYTES = 1 << 20
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KB
    chunks = [bomb[i:i + 8192] for i in range(0, len(bomb), 8192)]
    scripted.answer = lambda request: (200, [("content-type", "application/json"), ("content-encoding", "gzip")],
                                       chunks)
    got = {}

    def bomb_call():
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH) as r:
            got["body"], got["rid"] = b"".join(r.iter_raw()), r.headers["x-gateway-request-id"]
    caller = threading.Thread(target=bomb_call)
    caller.start()
    other = httpx.get(f"{gateway.url}/v1/models", headers=AUTH, timeout=10)  # another exchange meanwhile
    caller.join(30)
    assert other.status_code == 200
    assert got["body"] == bomb  # the client got the upstream's bytes, still compressed
    _, resp = _exchange(log_flush, got["rid"])
    assert resp.body is None and "LOG_DECODE_MAX_BYTES" in resp.error_message
    f = BinaryFile.objects.get(response=resp)
    assert f.content_type == "application/gzip" and f.size == len(bomb)
    assert f.sha256 == hashlib.sha256(bomb).hexdigest() and _stored(f) == bomb


@pytest.mark.parametrize("label, encoding, data, decoded", [
    ("corrupt gzip", "gzip", gzip.compress(b'{"a": 1}', mtime=0)[:10] + b"garbage" * 20, None),
    ("cut gzip", "gzip", gzip.compress(b'{"answer": "' + b"x" * 5000 + b'"}', mtime=0)[:40], None),
    ("br", "br", brotli.compress(b'{"answer": 42}'), '{"answer": 42}'),
    ("zstd", "zstd", zstandard.ZstdCompressor().compress(b'{"answer": 43}'), '{"answer": 43}'),
    ("raw deflate", "deflate", zlib.compress(b'{"answer": 44}')[2:-4], '{"answer": 44}'),
    ("stacked", "gzip, br", brotli.compress(gzip.compress(b"{}", mtime=0)), None),
    ("unknown", "compress", b"\x1f\x9d\x90lzw", None),
])
def test_every_answer_is_kept_decoded_or_as_received(scripted, gateway, log_flush, label, encoding, data, decoded):
    scripted.answer = lambda request: (200, [("content-type", "application/json"), ("content-encoding", encoding)],
                                       data)
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH) as r:
        assert b"".join(r.iter_raw()) == data  # relayed as the upstream sent it
        rid = r.headers["x-gateway-request-id"]
    _, resp = _exchange(log_flush, rid)
    if decoded is not None:
        assert resp.body == decoded and not resp.error_message, label
        return
    assert resp.body is None and "kept as received" in resp.error_message, label
    f = BinaryFile.objects.get(response=resp)
    assert _stored(f) == data and f.sha256 == hashlib.sha256(data).hexdigest(), label  # the bytes the client got


def test_a_flood_of_parts_is_kept_whole(gateway, upstream, log_flush, settings):
    settings.LOG_MULTIPART_MAX_PARTS = 100
    parts = b"".join(b"--B\r\nContent-Disposition: form-data; name=\"f%d\"; filename=\"x\"\r\n\r\nx\r\n" % i
                     for i in range(3000))
    body = parts + b"--B--\r\n"
    r = httpx.post(f"{gateway.url}/v1/files", content=body,
                   headers={**AUTH, "content-type": "multipart/form-data; boundary=B"})
    assert r.status_code == 200 and upstream.received[-1].body == body
    req, _ = _exchange(log_flush, r.headers["x-gateway-request-id"])
    files = list(BinaryFile.objects.filter(request=req))
    assert len(files) == 1 and files[0].role == "request_body" and _stored(files[0]) == body
    assert "LOG_MULTIPART_MAX_PARTS" in json.loads(req.body)["note"]
    page = _page(req.id.hex)
    assert page.status_code == 200 and len(page.content) < 200_000
