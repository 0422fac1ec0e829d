"""The response cache end to end: the official openai SDK through a live gateway to the mock upstream."""

import asyncio
import gzip
import json
from decimal import Decimal
from email.utils import parsedate_to_datetime

import httpx
import openai
import pytest

from logs.models import Request, Response
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)
from tests.hold.conftest import until
from tests.sqlite_writes import locked_retry

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "cacheTESTkey0123456789abcdefXY"  # fake; split so no key-like literal
OTHER_KEY = "sk-" + "cacheOTHERkey0123456789abcdefX"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, settings):
    """Every test gets its own cache folder (the file store, the default)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR / "cache"


@pytest.fixture
def client(gateway):
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def _chat(client, cache: str | None = "60", **kwargs):
    headers = {"X-Gateway-Cache": cache} if cache is not None else {}
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=kwargs.pop("messages", MESSAGES), extra_headers=headers, **kwargs)


def _raw(gateway, body: bytes | dict, key: str = KEY, **headers) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{gateway.url}/v1/chat/completions", content=content, timeout=10,
                      headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers})


def _logged(log_flush, request_id: str) -> Response:
    log_flush()
    return Response.objects.get(request_id=request_id)


def test_second_identical_call_is_a_hit_with_the_same_bytes(client, gateway, upstream, log_flush):
    first = _chat(client)
    second = _chat(client)
    assert first.headers["x-gateway-cache"] == "MISS"
    assert second.headers["x-gateway-cache"] == "HIT"
    assert second.headers["x-gateway-cache-source"] == first.headers["x-gateway-request-id"]
    assert int(second.headers["age"]) >= 0
    # A hit is made now: it has a Date of its own (the original's is not replayed; run with uvicorn's
    # --no-date-header, as documented, the hit had an Age and no Date).
    (date,) = second.headers.get_list("date")
    assert parsedate_to_datetime(date).tzinfo is not None
    assert second.http_response.content == first.http_response.content
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert second.headers["x-request-id"] == first.headers["x-request-id"]  # the upstream's headers replayed
    assert second.headers["x-gateway-request-id"] != first.headers["x-gateway-request-id"]
    assert len(upstream.received) == 1
    assert upstream.received[0].header("x-gateway-cache") is None  # the directive never goes upstream

    original = _logged(log_flush, first.headers["x-gateway-request-id"])
    hit = _logged(log_flush, second.headers["x-gateway-request-id"])
    assert original.cache_hit is False and original.cost_usd and original.cost_usd > 0
    assert hit.cache_hit is True and hit.cache_source.hex == first.headers["x-gateway-request-id"]
    assert hit.cost_usd == Decimal(0) and hit.cost_saved_usd == original.cost_usd
    assert hit.status_code == 200 and hit.outcome == "completed" and hit.body == original.body
    assert (hit.input_tokens, hit.output_tokens) == (original.input_tokens, original.output_tokens)
    assert {"step": "cache", "decision": "hit", "source": first.headers["x-gateway-request-id"]} in hit.steps
    # The request row keeps the directive the client sent.
    req = Request.objects.get(id=second.headers["x-gateway-request-id"])
    assert ["x-gateway-cache", "60"] in req.headers


def test_streamed_call_replays_the_same_events(client, gateway, upstream, log_flush):
    def run():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True,
            extra_headers={"X-Gateway-Cache": "60"})
        return raw.headers, [chunk.model_dump_json() for chunk in raw.parse()]

    first_headers, first_events = run()
    second_headers, second_events = run()
    assert first_headers["x-gateway-cache"] == "MISS" and second_headers["x-gateway-cache"] == "HIT"
    assert second_events == first_events and len(first_events) > 3
    assert len(upstream.received) == 1
    # Byte for byte too, through a plain client.
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count"}], "stream": True}
    miss, hit = _raw(gateway, body, **{"X-Gateway-Cache": "60"}), _raw(gateway, body, **{"X-Gateway-Cache": "60"})
    assert hit.headers["x-gateway-cache"] == "HIT" and hit.content == miss.content
    assert hit.headers["content-type"].startswith("text/event-stream")
    resp = _logged(log_flush, second_headers["x-gateway-request-id"])
    assert resp.is_stream and resp.cache_hit is True and resp.stream_result["events"] == len(first_events) + 1


def test_a_stream_the_sdk_stops_reading_at_its_last_event_is_stored(client, upstream, log_flush):
    """openai-python hangs up at `data: [DONE]`, before the upstream's end of body (20 ms behind here):
    the exchange still completes, so its answer is stored and the next identical call is a hit."""
    def run():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "count slowly"}], stream=True,
            extra_headers={"X-Gateway-Cache": "60", "x-mock-delay-ms": "20", "x-mock-events": "3"})
        return raw.headers, [chunk.model_dump_json() for chunk in raw.parse()]

    first_headers, first_events = run()
    second_headers, second_events = run()
    assert (first_headers["x-gateway-cache"], second_headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert second_events == first_events and len(upstream.received) == 1
    assert _logged(log_flush, first_headers["x-gateway-request-id"]).outcome == "completed"


def test_json_body_matches_canonically_and_a_different_body_misses(gateway, upstream):
    first = _raw(gateway, b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
                 **{"X-Gateway-Cache": "60"})
    reordered = _raw(gateway, b'{"messages":[{"content":"hi","role":"user"}],\n "model":"gpt-4o-mini"}',
                     **{"X-Gateway-Cache": "60"})
    other = _raw(gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bye"}]},
                 **{"X-Gateway-Cache": "60"})
    assert [r.headers["x-gateway-cache"] for r in (first, reordered, other)] == ["MISS", "HIT", "MISS"]
    assert len(upstream.received) == 2
    # Integers past 64 bits that a float would round together stay apart, in any key order.
    seeds = [_raw(gateway, b'{"model": "gpt-4o-mini", "seed": %d, "messages": []}' % seed, **{"X-Gateway-Cache": "60"})
             for seed in (123456789012345678901, 123456789012345678902)]
    again = _raw(gateway, b'{"seed": 123456789012345678902, "messages": [], "model": "gpt-4o-mini"}',
                 **{"X-Gateway-Cache": "60"})
    assert [r.headers["x-gateway-cache"] for r in (*seeds, again)] == ["MISS", "MISS", "HIT"]


def test_the_key_is_made_of_the_exchanges_one_reading_of_the_body(gateway, upstream, monkeypatch):
    """The cache parsed the body a second time (orjson) to build its key, after the exchange's shared reading had
    parsed it for the repeated-key check: the policy steps parse a cached request once now, and the key still
    matches canonically (test above)."""
    import sys

    import orjson

    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "read once"}]}'
    parsers = []  # the module of each call that parsed this body
    loads = orjson.loads

    def counted(data):
        if data == body:
            parsers.append(sys._getframe(1).f_globals["__name__"])
        return loads(data)

    monkeypatch.setattr(orjson, "loads", counted)
    r = _raw(gateway, body, **{"X-Gateway-Cache": "60"})
    assert r.status_code == 200 and r.headers["x-gateway-cache"] == "MISS"
    # The log's masking of the request record reads it too, before the steps (logs/redaction/scrub.py).
    assert [m for m in parsers if not m.startswith("logs.")] == ["wire.jsonutil"]  # the shared reading's, alone


def test_a_body_orjson_refuses_is_matched_as_sent(gateway, upstream):
    """NaN is no JSON to orjson (the standard library reads it): written back by orjson it would be null, and a body
    saying NaN would share the entry of one saying null."""
    ask = {"X-Gateway-Cache": "60"}
    answers = [_raw(gateway, b'{"model": "gpt-4o-mini", "messages": [], "temperature": %s}' % value, **ask)
               for value in (b"null", b"NaN", b"NaN")]
    assert [r.headers["x-gateway-cache"] for r in answers] == ["MISS", "MISS", "HIT"]


@pytest.mark.parametrize("twice", [b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}',
                                   b'{"model": "gpt-4o", "mod\\u0065l": "gpt-4o-mini", "messages": []}'])
def test_a_body_repeating_a_key_is_neither_read_from_nor_written_to_the_cache(gateway, upstream, log_flush, twice):
    """The key reads JSON canonically, a repeated key's last value winning: this body shared the entry of the one
    naming gpt-4o-mini alone, though a provider taking the first value runs gpt-4o."""
    cache = {"X-Gateway-Cache": "60"}
    plain = _raw(gateway, b'{"model": "gpt-4o-mini", "messages": []}', **cache)
    answers = [_raw(gateway, twice, **cache) for _ in range(2)]
    assert [r.headers["x-gateway-cache"] for r in (plain, *answers)] == ["MISS", "BYPASS", "BYPASS"]
    assert all(r.status_code == 200 for r in answers) and len(upstream.received) == 3
    logged = _logged(log_flush, answers[0].headers["x-gateway-request-id"])
    assert logged.cache_hit is None and logged.steps == [
        {"step": "cache", "decision": "bypass: the request's JSON repeats a key (providers may read it otherwise)"}]
    # Nothing was stored from it either: the body naming the first value alone is a miss.
    first = _raw(gateway, b'{"model": "gpt-4o", "messages": []}', **cache)
    assert first.headers["x-gateway-cache"] == "MISS" and len(upstream.received) == 4


def test_a_compressed_body_matches_as_the_upstream_reads_it(gateway, upstream):
    # gzip writes its time into the bytes: the same JSON compressed a second later never matched itself.
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "zipped"}]}'
    ask = {"X-Gateway-Cache": "60"}
    first = _raw(gateway, gzip.compress(body, mtime=1), **ask, **{"Content-Encoding": "gzip"})
    later = _raw(gateway, gzip.compress(body, mtime=2), **ask, **{"Content-Encoding": "gzip"})
    plain = _raw(gateway, body, **ask)
    assert [r.headers["x-gateway-cache"] for r in (first, later, plain)] == ["MISS", "HIT", "HIT"]
    assert upstream.received[0].body == gzip.compress(body, mtime=1)  # the miss went as sent
    broken = _raw(gateway, b"\x1f\x8b not gzip", **ask, **{"Content-Encoding": "gzip"})  # compared as sent
    assert broken.headers["x-gateway-cache"] == "MISS" and len(upstream.received) == 2


def test_a_compressed_body_past_the_decode_bound_is_compared_as_sent(gateway, upstream):
    # Decoded whole to be keyed, 20 KB of gzip naming 20 MiB stalled the worker: past 16 MiB it is compared as
    # sent, so the same JSON compressed twice no longer matches (under the bound it does, test above).
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + b"a" * (20 << 20) + b'"}]}'
    ask = {"X-Gateway-Cache": "60", "Content-Encoding": "gzip"}
    first = _raw(gateway, gzip.compress(body, mtime=1), **ask)
    later = _raw(gateway, gzip.compress(body, mtime=2), **ask)
    again = _raw(gateway, gzip.compress(body, mtime=1), **ask)
    assert [r.headers["x-gateway-cache"] for r in (first, later, again)] == ["MISS", "MISS", "HIT"]


def test_scope_two_credentials_never_share(gateway, upstream):
    assert _raw(gateway, {"model": "m", "messages": MESSAGES}, **{"X-Gateway-Cache": "60"}).status_code == 200
    other = _raw(gateway, {"model": "m", "messages": MESSAGES}, key=OTHER_KEY, **{"X-Gateway-Cache": "60"})
    assert other.headers["x-gateway-cache"] == "MISS" and len(upstream.received) == 2


def test_scope_two_gateway_keys_never_share(gateway, upstream, make_key):
    _, secret_a = make_key("team-a")
    _, secret_b = make_key("team-b")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    a1 = _raw(gateway, body, **{"X-Gateway-Cache": "60", "X-Gateway-Key": secret_a})
    b1 = _raw(gateway, body, **{"X-Gateway-Cache": "60", "X-Gateway-Key": secret_b})
    a2 = _raw(gateway, body, **{"X-Gateway-Cache": "60", "X-Gateway-Key": secret_a})
    refused = _raw(gateway, body, **{"X-Gateway-Cache": "60", "X-Gateway-Key": "gk-" + "z" * 43})
    assert [r.headers.get("x-gateway-cache") for r in (a1, b1, a2)] == ["MISS", "MISS", "HIT"]
    assert refused.status_code == 401 and "x-gateway-cache" not in refused.headers  # a refused key gets no cached answer
    assert len(upstream.received) == 2


def test_no_store_and_refresh(client, upstream):
    assert _chat(client, "no-store").headers["x-gateway-cache"] == "BYPASS"
    assert _chat(client).headers["x-gateway-cache"] == "MISS"  # no-store stored nothing
    refreshed = _chat(client, "refresh=60")
    assert refreshed.headers["x-gateway-cache"] == "MISS"  # refresh never reads
    assert len(upstream.received) == 3
    hit = _chat(client)
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert hit.headers["x-gateway-cache-source"] == refreshed.headers["x-gateway-request-id"]  # the refreshed answer
    assert _chat(client, "no-store").headers["x-gateway-cache"] == "BYPASS"  # never reads either
    assert len(upstream.received) == 4


def test_ttl_zero_is_a_bypass(client, upstream):
    _chat(client, "60")
    assert _chat(client, "0").headers["x-gateway-cache"] == "BYPASS"
    assert _chat(client, "60").headers["x-gateway-cache"] == "HIT"
    assert len(upstream.received) == 2


def _entries_age(cache_dir, seconds: float) -> int:
    """Make every stored entry `seconds` older, as time would (files, or rows on PostgreSQL)."""
    from proxy.cache_store import CacheEntry, DatabaseStore, cache_store
    from proxy.models import CachedAnswer

    def aged(data: bytes) -> bytes:
        entry = CacheEntry.from_bytes(bytes(data))
        entry.created -= seconds
        entry.expires -= seconds
        return entry.to_bytes()

    if isinstance(cache_store(), DatabaseStore):
        rows = list(CachedAnswer.objects.all())
        for row in rows:
            row.data = aged(row.data)
            row.expires -= seconds
            locked_retry(row.save)
        return len(rows)
    paths = list(cache_dir.glob("*.entry"))
    for path in paths:
        path.write_bytes(aged(path.read_bytes()))
    return len(paths)


def test_expired_entry_is_a_miss(client, upstream, cache_dir):
    _chat(client, "60")
    assert _entries_age(cache_dir, 120) == 1
    assert _chat(client, "60").headers["x-gateway-cache"] == "MISS"
    assert len(upstream.received) == 2


def test_a_shorter_ttl_does_not_shorten_a_stored_answers_life(client, upstream, cache_dir):
    _chat(client, "3600")
    assert _entries_age(cache_dir, 30) == 1
    fresh = _chat(client, "10")  # the entry is too old for this request: a miss, whose answer replaces it
    assert fresh.headers["x-gateway-cache"] == "MISS"
    assert _entries_age(cache_dir, 60) == 1  # past the 10 s, well within the first request's hour
    hit = _chat(client, "3600")
    assert hit.headers["x-gateway-cache"] == "HIT"
    assert hit.headers["x-gateway-cache-source"] == fresh.headers["x-gateway-request-id"]
    assert _chat(client, "10").headers["x-gateway-cache"] == "MISS"  # each request's own TTL still holds
    assert len(upstream.received) == 3


def test_errors_are_not_cached(client, gateway, upstream, log_flush):
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                       extra_headers={"X-Gateway-Cache": "60", "x-mock-status": "500"})
    assert err.value.response.headers["x-gateway-cache"] == "MISS"
    ok = _chat(client)
    assert ok.headers["x-gateway-cache"] == "MISS"  # the error was not stored
    assert len(upstream.received) == 2
    failed = _logged(log_flush, err.value.response.headers["x-gateway-request-id"])
    assert failed.cache_hit is None and any(s.get("decision") == "not stored: status 500" for s in failed.steps)


def test_broken_stream_is_not_cached(gateway, upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count"}], "stream": True}
    headers = {"X-Gateway-Cache": "60", "x-mock-fault": "close-mid-stream"}
    assert b"event: error" in _raw(gateway, body, **headers).content
    again = _raw(gateway, body, **{"X-Gateway-Cache": "60"})
    assert again.headers["x-gateway-cache"] == "MISS"
    assert len(upstream.received) == 2


def test_off_by_default_and_default_ttl(client, upstream, settings):
    plain = _chat(client, None)
    assert "x-gateway-cache" not in plain.headers  # not asked for: the answer is untouched
    settings.CACHE_DEFAULT_TTL = 60
    assert _chat(client, None).headers["x-gateway-cache"] == "MISS"
    assert _chat(client, None).headers["x-gateway-cache"] == "HIT"
    assert len(upstream.received) == 2


def test_bad_directive_is_a_clear_error(client, gateway, upstream, log_flush):
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, "forever")
    assert "X-Gateway-Cache must be a number of seconds" in err.value.message
    assert "not 'forever'" in err.value.message and err.value.response.headers["x-gateway-cache"] == "BYPASS"
    r = _raw(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"X-Gateway-Cache": "refresh="})
    assert "not 'refresh='" in r.json()["error"]["message"]  # what was sent, not what was left of it
    # Digits that are not ASCII ("²" passes str.isdigit, not int), and more digits than int() reads.
    for value in (b"\xb2", b"refresh=\xb3", b"9" * 5000):
        r = _raw(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"X-Gateway-Cache": value})
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "X-Gateway-Cache must be a number of seconds" in message
        assert len(message) < 200, message  # 5,000 digits are quoted by their start and their count
        assert _logged(log_flush, r.headers["x-gateway-request-id"]).status_code == 400
    assert len(upstream.received) == 0


def test_long_integers_and_an_h2c_upgrade_header(gateway, upstream):
    """Integers past 64 bits (negative ones too) keep every digit in the match; a plain request that offers
    an HTTP/2 upgrade (curl --http2) is cached like any other."""
    def seed(value: int, **headers) -> str:
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "seed": value}
        return _raw(gateway, body, **{"X-Gateway-Cache": "60", **headers}).headers["x-gateway-cache"]

    low = -(2**63)
    assert [seed(low - 1), seed(low - 2), seed(low - 1)] == ["MISS", "MISS", "HIT"]
    assert [seed(7, Upgrade="h2c"), seed(7, Upgrade="h2c")] == ["MISS", "HIT"]


def test_a_small_form_upload_is_cached(gateway, upstream):
    """A multipart body the log keeps as a file still matches byte for byte (it was a BYPASS: "too large")."""
    body = (b'--XYZ\r\nContent-Disposition: form-data; name="model"\r\n\r\ndall-e-2\r\n'
            b'--XYZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nred\r\n'
            b'--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b'Content-Type: image/png\r\n\r\n\x89PNG\r\n\r\n--XYZ--\r\n')
    answers = [httpx.post(f"{gateway.url}/v1/images/edits", content=body, timeout=10, headers={
        "Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60",
        "Content-Type": "multipart/form-data; boundary=XYZ"}) for _ in range(2)]
    assert [r.headers["x-gateway-cache"] for r in answers] == ["MISS", "HIT"]
    assert answers[1].content == answers[0].content and len(upstream.received) == 1


def test_a_step_that_fails_is_answered_and_logged(gateway, upstream, log_flush, monkeypatch):
    """Any step's own failure: a 500 in the provider's shape naming the step, the exchange logged, nothing
    forwarded, the credential scrubbed from what is said about it (and what looks like one: a field named so)."""
    password = "hunter2" + "PASSWORDxyz"

    def broken(x):
        raise RuntimeError(f"store broke near {KEY} on {{'password': '{password}'}}")

    monkeypatch.setattr("proxy.steps.cache_request", broken)
    r = _raw(gateway, {"model": "gpt-4o-mini", "messages": MESSAGES}, **{"X-Gateway-Cache": "60"})
    assert r.status_code == 500
    message = r.json()["error"]["message"]
    assert message.startswith("The gateway's cache step failed: RuntimeError: store broke near") and KEY not in message
    assert "'password': '…Dxyz'" in message
    logged = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert logged.status_code == 500 and logged.outcome == "gateway_error"
    step = next(s for s in logged.steps if s["step"] == "cache")
    assert step["decision"] == "error" and "RuntimeError" in step["traceback"] and KEY not in json.dumps(logged.steps)
    assert password not in json.dumps(logged.steps) + logged.error_message + logged.body
    assert len(upstream.received) == 0


def test_binary_answer_replayed(gateway, upstream):
    def speech():
        return httpx.post(f"{gateway.url}/v1/audio/speech", timeout=10,
                          json={"model": "tts-1", "input": "hello", "voice": "alloy"},
                          headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60"})
    first, second = speech(), speech()
    assert second.headers["x-gateway-cache"] == "HIT" and second.content == first.content and len(first.content) > 0
    assert second.headers["content-type"] == first.headers["content-type"]
    assert len(upstream.received) == 1


def test_only_posts_are_cached(gateway, upstream):
    """A GET reads an object that may change (a background response or a batch polled until it ends): a stored
    copy would answer every poll with the first state. A DELETE changes what the upstream keeps."""
    headers = {"Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60"}
    answers = [httpx.request(method, f"{gateway.url}/v1/models/gpt-4o-mini", headers=headers, timeout=10)
               for method in ("GET", "GET", "DELETE", "DELETE")]
    assert [r.status_code for r in answers] == [200] * 4
    assert {r.headers["x-gateway-cache"] for r in answers} == {"BYPASS"} and len(upstream.received) == 4


@pytest.mark.parametrize("path", [
    "/v1/batches", "/v1/batches/batch_1/cancel", "/v1/realtime/client_secrets", "/v1/files",
    "/anthropic/v1/messages/batches", "/gemini/v1beta/models/gemini-2.0-flash:batchGenerateContent",
    "/gemini/v1beta/cachedContents", "/gemini/v1beta/openai/batches", "/v1/batche%73"])
def test_posts_that_make_an_object_upstream_are_never_cached(gateway, upstream, path):
    # A replayed batch, upload or session secret would name an object made for another call (a secret
    # long expired), and a replayed cancel cancels nothing.
    headers = {"Authorization": f"Bearer {KEY}", "x-api-key": KEY, "X-Gateway-Cache": "60"}
    answers = [httpx.post(f"{gateway.url}{path}", json={"input_file_id": "file_1"}, headers=headers, timeout=10)
               for _ in range(2)]
    assert [r.headers["x-gateway-cache"] for r in answers] == ["BYPASS", "BYPASS"]
    assert len(upstream.received) == 2


def test_concurrent_identical_first_calls_share_one_upstream_call(gateway, upstream):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count"}], "stream": True}
    headers = {"X-Gateway-Cache": "60", "x-mock-delay-ms": "40"}  # the first answer takes a while

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as http:
            return await asyncio.gather(*[
                http.post(f"{gateway.url}/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}", **headers}) for _ in range(20)])

    answers = asyncio.run(run())
    assert all(r.status_code == 200 for r in answers)
    assert len({r.content for r in answers}) == 1
    assert sorted(r.headers["x-gateway-cache"] for r in answers).count("MISS") == len(upstream.received)
    assert len(upstream.received) <= 3  # one per worker, give or take a request that came before the first


def test_identical_calls_waiting_on_failing_ones_go_upstream_together(gateway, upstream):
    """The first of six identical calls fails, and the one sent in its place: the other four go upstream at once,
    as they would without the cache, not one after another (errors after 2, 4, 6, 8, 10 s in an outage)."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "outage"}]}
    # Each error waits (a second at most) until four are in flight: the mock counts how many ever were.
    headers = {"Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60", "x-mock-status": "503",
               "x-mock-together": "4"}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as http:
            return await asyncio.gather(*[http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
                                          for _ in range(6)])

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [503] * 6 and len(upstream.received) == 6
    assert upstream.together_most >= 4


def test_a_gateway_keys_ttl_is_its_default(gateway, upstream, make_key):
    from keys.selectors import caches_clear

    key, secret = make_key("cached-team")
    key.cache_ttl = 60
    locked_retry(key.save)  # the in-process gateway may be reading keys
    _, plain_secret = make_key("plain-team")
    caches_clear()
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert _raw(gateway, body, **{"X-Gateway-Key": secret}).headers["x-gateway-cache"] == "MISS"
    assert _raw(gateway, body, **{"X-Gateway-Key": secret}).headers["x-gateway-cache"] == "HIT"
    assert _raw(gateway, body, **{"X-Gateway-Key": secret, "X-Gateway-Cache": "no-store"}).headers[
        "x-gateway-cache"] == "BYPASS"  # the request's own directive wins
    assert "x-gateway-cache" not in _raw(gateway, body, **{"X-Gateway-Key": plain_secret}).headers
    assert len(upstream.received) == 3


def test_paced_replay_waits_as_the_original_did(gateway, upstream, monkeypatch):
    import proxy.cache

    pauses = []

    async def sleep(seconds):
        pauses.append(seconds)

    monkeypatch.setattr(proxy.cache, "_sleep", sleep)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "count"}], "stream": True}
    first = _raw(gateway, body, **{"X-Gateway-Cache": "60", "x-mock-delay-ms": "30", "X-Gateway-Cache-Pace": "original"})
    at_once = _raw(gateway, body, **{"X-Gateway-Cache": "60"})
    assert at_once.headers["x-gateway-cache"] == "HIT" and pauses == []  # all at once by default
    paced = _raw(gateway, body, **{"X-Gateway-Cache": "60", "X-Gateway-Cache-Pace": "original"})
    assert paced.headers["x-gateway-cache"] == "HIT" and paced.content == first.content
    assert len(pauses) >= 5 and all(p > 0 for p in pauses)  # one wait before each event after the first
    # The miss went upstream without either directive.
    assert upstream.received[0].header("x-gateway-cache-pace") is None and len(upstream.received) == 1
    assert upstream.received[0].header("x-gateway-cache") is None and upstream.received[0].header("x-mock-delay-ms")


def test_a_paced_replay_is_logged_as_it_ends(gateway, upstream, log_flush):
    """Paced, a hit lasts as long as the original: its log says how long, and whether the client took it all."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "pace"}], "stream": True}
    pace = {"X-Gateway-Cache": "60", "X-Gateway-Cache-Pace": "original"}
    first = _raw(gateway, body, **pace, **{"x-mock-delay-ms": "40"})
    whole = _raw(gateway, body, **pace)
    assert whole.headers["x-gateway-cache"] == "HIT" and whole.content == first.content
    hit = _logged(log_flush, whole.headers["x-gateway-request-id"])
    assert hit.outcome == "completed" and hit.cache_hit
    # Logged when its last event went out, not as it began: the original's five or more events came 40 ms apart.
    assert hit.duration_ms >= 4 * 40
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {KEY}", **pace}) as left:
        assert left.headers["x-gateway-cache"] == "HIT"
        next(left.iter_raw())  # the first event, then the client hangs up
    request_id = left.headers["x-gateway-request-id"]
    log_flush()
    until(lambda: Response.objects.filter(request_id=request_id).exists(), what="the abandoned replay logged")
    abandoned = Response.objects.get(request_id=request_id)
    assert abandoned.outcome == "client_aborted" and "before the response ended" in abandoned.error_message
    assert len(upstream.received) == 1


def test_anthropic_stream_replayed_with_its_cost_saved(gateway, upstream, log_flush):
    import anthropic

    client = anthropic.Anthropic(api_key="sk-ant-" + "cacheTESTkey0123456789abcdef", max_retries=0,
                                 base_url=f"{gateway.url}/anthropic", default_headers={"X-Gateway-Cache": "60"})

    def run():
        with client.messages.stream(model="claude-sonnet-4-20250514", max_tokens=50,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            return stream.response.headers, [e.model_dump_json() for e in stream]

    first_headers, first_events = run()
    second_headers, second_events = run()
    assert (first_headers["x-gateway-cache"], second_headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert second_events == first_events and len(upstream.received) == 1
    original = _logged(log_flush, first_headers["x-gateway-request-id"])
    hit = _logged(log_flush, second_headers["x-gateway-request-id"])
    assert hit.cache_hit and hit.is_stream and hit.cost_usd == 0 and hit.cost_saved_usd == original.cost_usd > 0


def test_gemini_key_in_the_query_scopes_the_cache(gateway, upstream):
    def call(key: str) -> httpx.Response:
        return httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={key}",
                          json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"X-Gateway-Cache": "60"},
                          timeout=10)
    key_a, key_b = "AIza" + "cacheA0123456789abcdefghijklmnopq", "AIza" + "cacheB0123456789abcdefghijklmnopq"
    assert [call(k).headers["x-gateway-cache"] for k in (key_a, key_a, key_b)] == ["MISS", "HIT", "MISS"]
    assert len(upstream.received) == 2


def test_a_hit_of_a_stream_whose_usage_was_injected_saves_the_originals_cost(client, upstream, log_flush, settings):
    settings.STREAM_USAGE = "inject"

    def run():
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True,
            extra_headers={"X-Gateway-Cache": "60"})
        return raw.headers, [chunk for chunk in raw.parse()]

    first_headers, first = run()
    log_flush()  # the original is in the log before the hit is ingested
    second_headers, second = run()
    assert second_headers["x-gateway-cache"] == "HIT"
    assert [c.model_dump_json() for c in second] == [c.model_dump_json() for c in first]
    assert all(c.usage is None for c in second)  # the client never asked for usage: the replay has none either
    original = _logged(log_flush, first_headers["x-gateway-request-id"])
    hit = _logged(log_flush, second_headers["x-gateway-request-id"])
    assert original.cost_usd > 0 and hit.cost_usd == 0 and hit.cost_saved_usd == original.cost_usd
    # Its tokens are the original's: a replay counts toward a key's tokens per minute (docs/cache.md).
    assert (hit.input_tokens, hit.output_tokens, hit.total_tokens) == (
        original.input_tokens, original.output_tokens, original.total_tokens) and hit.total_tokens


def test_every_credential_sent_scopes_the_cache(gateway, upstream):
    # The Anthropic SDK with an api_key and an auth_token sends both headers: the scope took the first,
    # and a caller with another x-api-key got the first caller's answer.
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": MESSAGES}
    for key in ("sk-ant-" + "firstTENANTkey0123456789", "sk-ant-" + "secondTENANTkey0123456789"):
        r = httpx.post(f"{gateway.url}/anthropic/v1/messages", json=body, timeout=10,
                       headers={"Authorization": "Bearer shared-oauth-token", "x-api-key": key, "X-Gateway-Cache": "60"})
        assert r.headers["x-gateway-cache"] == "MISS"
    assert len(upstream.received) == 2


def test_a_credential_header_the_provider_does_not_name_scopes_the_cache(gateway, upstream, settings):
    """An OpenAI-compatible server that takes its key in another header (Azure's api-key): two tenants told
    apart only by it got each other's answers."""
    settings.GATEWAY_PROVIDERS = ["azure=" + upstream.url]
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "what is my balance"}]}

    def call(key: str) -> str:
        return httpx.post(f"{gateway.url}/azure/v1/chat/completions", json=body, timeout=10,
                          headers={"api-key": key, "X-Gateway-Cache": "60"}).headers["x-gateway-cache"]
    key_a, key_b = "tenantA" + "0123456789abcdefXYZ", "tenantB" + "0123456789abcdefXYZ"
    assert [call(key_a), call(key_a), call(key_b)] == ["MISS", "HIT", "MISS"]
    assert len(upstream.received) == 2


def test_an_answer_over_the_stores_bound_is_logged_not_stored(gateway, upstream, settings, log_flush):
    settings.CACHE_MAX_BYTES = 2000  # the entry alone is bigger: the store keeps nothing (it was logged "stored")
    speech = [httpx.post(f"{gateway.url}/v1/audio/speech", timeout=10, json={"model": "tts-1", "input": "x", "voice": "a"},
                         headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60", "x-mock-size": "5000"})
              for _ in range(2)]
    assert [r.headers["x-gateway-cache"] for r in speech] == ["MISS", "MISS"] and len(upstream.received) == 2
    resp = _logged(log_flush, speech[0].headers["x-gateway-request-id"])
    assert resp.cache_hit is None and {"step": "cache", "decision": "not stored: larger than CACHE_MAX_BYTES (2000)"} in resp.steps


def test_waiters_for_a_first_call_that_fails_send_one_call_in_its_place(gateway, upstream):
    # Every waiter went upstream at once when the first call's answer could not be stored.
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "herd"}], "stream": True}
    auth = {"Authorization": f"Bearer {KEY}", "X-Gateway-Cache": "60", "x-mock-events": "6", "x-mock-delay-ms": "60"}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as http:
            first = asyncio.ensure_future(http.post(f"{gateway.url}/v1/chat/completions", json=body,
                                                    headers={**auth, "x-mock-fault": "close-mid-stream"}))
            await asyncio.sleep(0.1)  # it is on its way: these wait for it
            rest = await asyncio.gather(*[http.post(f"{gateway.url}/v1/chat/completions", json=body, headers=auth)
                                          for _ in range(10)])
            return [await first, *rest]

    answers = asyncio.run(run())
    assert all(r.status_code == 200 for r in answers)
    assert [r.headers["x-gateway-cache"] for r in answers[1:]].count("HIT") == 9
    assert len(upstream.received) == 2  # the failed first, and one in its place


def test_a_hung_redis_is_a_miss_that_says_so_and_waits_once(client, upstream, log_flush, settings, hung_redis,
                                                             monkeypatch):
    from keys import store

    port, accepted = hung_redis
    monkeypatch.setitem(store._redis_away, "until", 0.0)
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": f"redis://127.0.0.1:{port}/0",
                                   "OPTIONS": {"socket_timeout": 0.3, "socket_connect_timeout": 0.3}}}
    answers = [_chat(client) for _ in range(3)]
    assert [a.headers["x-gateway-cache"] for a in answers] == ["MISS"] * 3 and len(upstream.received) == 3
    assert len(accepted) == 1  # one read waited for the timeout; the rest did not try Redis again
    steps = [s for s in _logged(log_flush, answers[0].headers["x-gateway-request-id"]).steps if s["step"] == "cache"]
    assert steps[0]["decision"].startswith("miss: the store was not read (Redis is unavailable (TimeoutError)")
    assert steps[1]["decision"].startswith("not stored: Redis is unavailable")


def test_headers_that_change_the_answer_keep_answers_apart(gateway, upstream):
    # An anthropic-beta turns on features (a longer context, tools): the same body without it is
    # another request. OpenAI-Project is another account's settings and spend.
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": MESSAGES}
    key = "sk-ant-" + "betaTENANTkey0123456789"

    def anthropic(**headers):
        return httpx.post(f"{gateway.url}/anthropic/v1/messages", json=body, timeout=10,
                          headers={"x-api-key": key, "anthropic-version": "2023-06-01", "X-Gateway-Cache": "60",
                                   **headers}).headers["x-gateway-cache"]

    assert [anthropic(), anthropic(**{"anthropic-beta": "context-1m-2025-08-07"}),
            anthropic(**{"anthropic-beta": "context-1m-2025-08-07"}), anthropic()] == ["MISS", "MISS", "HIT", "HIT"]
    chat = {"model": "gpt-4o-mini", "messages": MESSAGES}
    statuses = [_raw(gateway, chat, **{"X-Gateway-Cache": "60", **extra}).headers["x-gateway-cache"]
                for extra in ({"OpenAI-Project": "proj_a"}, {"OpenAI-Project": "proj_b"}, {"OpenAI-Project": "proj_a"})]
    assert statuses == ["MISS", "MISS", "HIT"]
    assert len(upstream.received) == 4


def test_a_gemini_field_mask_keeps_answers_apart(gateway, upstream):
    # X-Goog-FieldMask (a Google system parameter) filters the answer's fields: a client asking for the usage
    # alone must not be served a full answer, nor a client asking for everything the usage alone.
    url = f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent"
    key = "AIza" + "fieldMASK0123456789abcdefghijklmn"

    def call(**headers) -> str:
        return httpx.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10,
                          headers={"x-goog-api-key": key, "X-Gateway-Cache": "60", **headers}).headers["x-gateway-cache"]

    mask = {"X-Goog-FieldMask": "usageMetadata"}
    assert [call(), call(**mask), call(**mask), call()] == ["MISS", "MISS", "HIT", "HIT"]
    assert len(upstream.received) == 2


OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
GEMINI_OVERLOADED = {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}


def _stream_failing_midway(request: httpx.Request):
    """200, then an error once the answer has begun: Anthropic's event stream, Gemini's (SSE or one JSON array)."""
    if request.url.path == "/v1/messages":
        start = {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [],
            "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 1}}}
        events = [("message_start", start), ("content_block_start", {
            "type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ("error", OVERLOADED)]
        return 200, [("content-type", "text/event-stream")], [
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events]
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}, "index": 0}]}
    if "alt=sse" in str(request.url.query):
        return 200, [("content-type", "text/event-stream")], [
            f"data: {json.dumps(data)}\r\n\r\n".encode() for data in (chunk, GEMINI_OVERLOADED)]
    return 200, [("content-type", "application/json; charset=UTF-8")], json.dumps([chunk, GEMINI_OVERLOADED]).encode()


def test_a_stream_that_reports_a_failure_midway_is_not_stored(scripted, gateway, log_flush):
    """Anthropic and Gemini answer 200 and then report an overloaded model in the stream: stored, the failure
    was replayed to every retry until its TTL ran out, though the next call upstream would have answered."""
    import anthropic
    from google import genai
    from google.genai import errors, types

    scripted.answer = _stream_failing_midway
    claude = anthropic.Anthropic(api_key="sk-ant-" + "cacheTESTkey0123456789abcdef", max_retries=0,
                                 base_url=f"{gateway.url}/anthropic", default_headers={"X-Gateway-Cache": "60"})
    gemini = genai.Client(api_key="AIza" + "cacheTESTkey0123456789abcdefghijk", http_options=types.HttpOptions(
        base_url=f"{gateway.url}/gemini", headers={"X-Gateway-Cache": "60"}))
    seen = []
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
            with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=50,
                                        messages=[{"role": "user", "content": "hi"}]) as stream:
                seen.append(stream.response.headers["x-gateway-cache"])
                stream.get_final_message()
        with pytest.raises(errors.ServerError, match="overloaded"):
            list(gemini.models.generate_content_stream(model="gemini-2.5-flash", contents="hi"))
        array = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                           json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10,
                           headers={"x-goog-api-key": "AIza" + "cacheTESTkey0123456789abcdefghijk",
                                    "X-Gateway-Cache": "60"})
        seen.append(array.headers["x-gateway-cache"])
    assert seen == ["MISS"] * 4 and len(scripted.requests) == 6
    log_flush()
    failed = Response.objects.filter(request__provider__in=["anthropic", "gemini"])
    assert len(failed) == 6 and all(r.is_error for r in failed)
    assert {r.error_message for r in failed} == {"Overloaded", "The model is overloaded."}
    assert all(any(s["decision"].startswith("not stored: the answer reports a failure") for s in r.steps)
               for r in failed)
