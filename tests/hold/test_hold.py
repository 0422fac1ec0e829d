"""The hold queue through a live gateway: requests wait for a decision, and each decision is carried out and logged."""

import functools
import gzip
import json
import socket
import time
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import proxy.hold
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from hold.models import HeldRequest
from hold.services import HoldError
from keys.models import GatewayKey
from keys.selectors import caches_clear
from keys.services import key_revoke
from logs.models import Request, Response
from tests.hold.conftest import Background, decide, held_ids, switch, switch_seen as _switch, until
from tests.sqlite_writes import locked_retry
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "holdTESTkey0123456789abcdefXYZ"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _post(gateway, body=CHAT, path="/v1/chat/completions", headers=AUTH) -> Background:
    return Background(lambda: httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=30))


def _logged(log_flush, rid: str) -> Response:
    log_flush()
    return Response.objects.get(request_id=rid)


def test_approve_releases_the_request_with_its_held_id(upstream, gateway, log_flush, admin_client):
    switch(on=True, by="test")
    call = _post(gateway)
    [rid] = held_ids(gateway)
    row = HeldRequest.objects.get(pk=rid)
    assert row.model == "gpt-4o-mini" and json.loads(row.body) == CHAT and row.provider == "openai"
    time.sleep(0.3)  # held a measurable while: the log must not count it as upstream time
    assert not call.done and upstream.received == []  # nothing sent either way while held
    decide(rid, "approve", by="alice")
    r = call.wait()
    assert r.status_code == 200 and r.headers["x-gateway-request-id"] == rid
    resp = _logged(log_flush, rid)
    step = resp.steps[-1]
    assert step["step"] == "hold" and step["decision"] == "approve" and step["by"] == "alice" and step["at"]
    assert resp.held_ms >= 300 and resp.outcome == "completed"
    assert resp.duration_ms < resp.held_ms  # the hold is not upstream latency
    assert resp.ttfb_ms is not None and resp.ttfb_ms <= resp.duration_ms
    row.refresh_from_db()
    assert row.state == "released" and row.held_ms == resp.held_ms
    page = admin_client.get(f"/admin/logs/request/{rid}/change/").content.decode()
    assert f"Held {resp.held_ms} ms in the hold queue" in page and "hold: approve by alice" in page


def test_a_credential_in_the_path_is_masked_on_the_held_row_as_in_the_log(upstream, gateway, log_flush):
    switch(on=True, by="test")
    call = Background(lambda: httpx.get(f"{gateway.url}/v1/models/{KEY}", headers=AUTH, timeout=30))
    [rid] = held_ids(gateway)
    row = HeldRequest.objects.get(pk=rid)
    assert KEY not in row.path and row.path.startswith("/v1/models/sk-") and row.path.endswith(KEY[-4:])
    decide(rid, "approve", by="alice")
    assert call.wait().status_code in (200, 404)
    log_flush()
    assert Request.objects.get(pk=rid).endpoint == row.path


def test_approve_with_an_edited_body(upstream, gateway, log_flush):
    switch(on=True, by="test")
    call = _post(gateway)
    [rid] = held_ids(gateway)
    for bad in ("{nope", '{"temperature": NaN}', "[" * 100_000 + "]" * 100_000):
        with pytest.raises(HoldError, match="not valid JSON"):
            decide(rid, "approve", by="bob", body=bad)
    edited = {**CHAT, "messages": [{"role": "user", "content": "edited by an operator"}]}
    decide(rid, "approve", by="bob", body=json.dumps(edited))
    assert call.wait().status_code == 200
    assert json.loads(upstream.received[-1].body) == edited
    resp = _logged(log_flush, rid)
    assert json.loads(Request.objects.get(pk=rid).body) == CHAT
    assert json.loads(resp.forwarded["body"]) == edited and resp.steps[-1]["edited_body"] is True


def test_an_edited_body_replaces_a_compressed_one_without_its_encoding(upstream, gateway, log_flush):
    switch(on=True, by="test")
    call = Background(lambda: httpx.post(f"{gateway.url}/v1/chat/completions", content=gzip.compress(
        json.dumps(CHAT).encode()), headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        timeout=30))
    [rid] = held_ids(gateway)
    edited = {**CHAT, "messages": [{"role": "user", "content": "edited"}]}
    decide(rid, "approve", by="bob", body=json.dumps(edited))
    assert call.wait().status_code == 200
    got = upstream.received[-1]
    assert got.header("content-encoding") is None and json.loads(got.body) == edited


def test_the_operator_reads_a_compressed_body_decoded(upstream, gateway, log_flush):
    # The operator decides on the prompt: a gzip body was shown as nothing at all, and could not be edited.
    switch(on=True, by="test")
    wire = gzip.compress(json.dumps(CHAT).encode())
    call = Background(lambda: httpx.post(f"{gateway.url}/v1/chat/completions", content=wire, headers={
        **AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}, timeout=30))
    [rid] = held_ids(gateway)
    row = HeldRequest.objects.get(pk=rid)
    assert json.loads(row.body) == CHAT and row.model == "gpt-4o-mini"
    decide(rid, "approve", by="bob")
    assert call.wait().status_code == 200
    assert upstream.received[-1].body == wire  # approved: as sent


def test_a_browsers_preflight_is_never_held(upstream, gateway):
    # It only asks whether the call may follow (no body, no key): held, the browser gave up on the call.
    switch(on=True, by="test")
    r = httpx.options(f"{gateway.url}/v1/chat/completions", timeout=10, headers={
        "Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    assert not HeldRequest.objects.exists() and upstream.received[-1].method == "OPTIONS"


@pytest.mark.parametrize("decision,status", [("reject-400", 400), ("reject-500", 500), ("content-policy", 400)])
def test_rejections_answer_without_calling_upstream(upstream, gateway, log_flush, decision, status):
    switch(on=True, by="test")
    call = _post(gateway)
    [rid] = held_ids(gateway)
    decide(rid, decision, by="carol")
    r = call.wait()
    assert r.status_code == status and r.headers["x-gateway-request-id"] == rid
    assert upstream.received == []
    if decision == "content-policy":
        assert r.json()["error"]["code"] == "content_policy_violation"
    else:
        assert "carol" in r.json()["error"]["message"]
    resp = _logged(log_flush, rid)
    assert resp.status_code == status and resp.outcome == "gateway_error" and "carol" in resp.error_message
    assert resp.steps[-1]["decision"] == decision


def test_the_timeout_applies_its_action(settings, upstream, gateway, log_flush):
    settings.HOLD_TIMEOUT_SECONDS = 0.5
    switch(on=True, by="test")
    r = _post(gateway).wait()
    assert r.status_code == 200
    resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert resp.steps[-1]["decision"] == "approve" and resp.steps[-1]["by"] == "timeout"
    assert resp.held_ms >= 500
    settings.HOLD_TIMEOUT_ACTION = "reject-500"
    r = _post(gateway).wait()
    assert r.status_code == 500 and "the timeout (HOLD_TIMEOUT_ACTION)" in r.json()["error"]["message"]


def test_a_client_that_leaves_while_held_is_logged_and_never_forwarded(upstream, gateway, log_flush):
    switch(on=True, by="test")
    body = json.dumps(CHAT).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    [rid] = held_ids(gateway)
    time.sleep(0.3)  # held a measurable while
    sock.close()
    row = until(lambda: HeldRequest.objects.filter(pk=rid, state="aborted").first(), what="the abort")
    log_flush()
    resp = Response.objects.get(request_id=rid)
    assert resp.outcome == "client_aborted" and "while held" in resp.error_message and resp.status_code is None
    assert resp.held_ms >= 300 and resp.duration_ms < resp.held_ms  # the hold is not counted in its duration
    assert resp.steps[-1]["decision"] == "client disconnected while held" and row.held_ms > 0
    with pytest.raises(HoldError, match="no longer waiting"):
        decide(rid, "approve", by="late")
    assert upstream.received == []


def test_filters_hold_only_matching_requests(upstream, gateway):
    _switch(on=True, provider="anthropic")
    assert _post(gateway).wait().status_code == 200  # openai: not held
    _switch(on=True, model="gpt-4o")
    r = _post(gateway).wait()  # gpt-4o-mini: not held
    assert r.status_code == 200
    call = _post(gateway, {**CHAT, "model": "gpt-4o"})
    [rid] = held_ids(gateway)
    switch(on=False, by="test")  # off approves whatever waits
    assert call.wait().status_code == 200
    assert HeldRequest.objects.get(pk=rid).decided_by == "hold off (test)"


def test_the_path_filter_holds_the_path_as_the_upstream_reads_it(upstream, gateway):
    # Under --path /v1/chat/, OpenAI's chat completions asked for through its other prefix or with a letter
    # percent-encoded (the upstream decodes it) went upstream unheld.
    _switch(on=True, path="/v1/chat/")
    calls = [_post(gateway, path=p) for p in ("/openai/v1/chat/completions", "/v1/%63hat/completions")]
    ids = held_ids(gateway, 2)
    assert upstream.received == []
    assert _post(gateway, {"model": "text-embedding-3-small", "input": "x"}, path="/v1/embeddings").wait().status_code == 200
    switch(on=False, by="test")
    assert all(c.wait().status_code in (200, 404) for c in calls) and len(ids) == 2


def test_the_model_filter_reads_the_model_that_goes_upstream(upstream, gateway, settings):
    # A compressed body read as it came named no model, a large one was not read: neither was held.
    # Gemini names its model in the path, which the filter read before a hook's change.
    _switch(on=True, model="gpt-4o")
    body = json.dumps({**CHAT, "model": "gpt-4o"}).encode()
    zipped = Background(lambda: httpx.post(f"{gateway.url}/v1/chat/completions", content=gzip.compress(body),
                                           headers={**AUTH, "Content-Type": "application/json",
                                                    "Content-Encoding": "gzip"}, timeout=30))
    big = _post(gateway, {**CHAT, "model": "gpt-4o", "pad": "x" * (2 << 20)})  # past memory: read off the loop
    ids = held_ids(gateway, 2)
    assert [HeldRequest.objects.get(pk=i).model for i in ids] == ["gpt-4o", "gpt-4o"]
    switch(on=False, by="test")
    # The large body, spooled to disk, goes upstream once approved (the ingest had moved its file: a 502).
    assert zipped.wait().status_code == 200 and big.wait().status_code == 200
    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.GeminiModel"]
    _switch(on=True, model="gemini-held")
    call = Background(lambda: httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.0-flash:generateContent",
                                         json={"contents": []}, headers={"x-goog-api-key": "AIza" + "k" * 35},
                                         timeout=30))
    [rid] = held_ids(gateway)
    assert HeldRequest.objects.get(pk=rid).model == "gemini-held"
    switch(on=False, by="test")
    assert call.wait().status_code == 200


def test_the_model_filter_refuses_a_body_whose_model_servers_read_otherwise(upstream, gateway, settings, log_flush):
    # Each named gpt-4o-mini to the gateway, or none: a server reading the first of two model keys, Go's JSON past
    # a byte that is not UTF-8, a form of more parts than the gateway reads, a form under two Content-Types. They
    # were held for the operator to decide what nobody could read (and a key limited to models answered the same
    # body 403): bad input, a 400 naming the problem in the provider's shape, never held nor forwarded.
    settings.LOG_MULTIPART_MAX_PARTS = 5
    _switch(on=True, model="gpt-4o")
    json_headers = {**AUTH, "Content-Type": "application/json"}
    chat = f"{gateway.url}/v1/chat/completions"
    form = {"model": "gpt-4o", **{f"pad{i}": "" for i in range(6)}}
    # Two Content-Types: Starlette reads the form of the first boundary (here in the other's preamble), the
    # gateway the last.
    two_forms = (b"--X\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o\r\n--X--\r\n"
                 b"--Y\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-mini\r\n--Y--\r\n")
    answers = {
        "repeats a key": httpx.post(chat, content=b'{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": []}',
                                    headers=json_headers, timeout=30),
        "cannot be read as JSON": httpx.post(chat, headers=json_headers, timeout=30,
                                             content=b'{"model": "gpt-4o", "messages": [{"content": "\xff"}]}'),
        "more than 5 parts": httpx.post(f"{gateway.url}/v1/audio/transcriptions", data=form, headers=AUTH,
                                        files={"file": ("a.wav", b"RIFF", "audio/wav")}, timeout=30),
        "more than one Content-Type": httpx.post(
            f"{gateway.url}/v1/audio/transcriptions", content=two_forms, timeout=30,
            headers=[*AUTH.items(), ("Content-Type", "multipart/form-data; boundary=X"),
                     ("Content-Type", "multipart/form-data; boundary=Y")]),
    }
    for problem, r in answers.items():
        error = r.json()["error"]
        assert r.status_code == 400 and error["type"] == "invalid_request_error", r.text
        assert problem in error["message"] and "the hold queue's model filter ('gpt-4o')" in error["message"]
    assert upstream.received == [] and not HeldRequest.objects.exists()
    logged = _logged(log_flush, answers["repeats a key"].headers["x-gateway-request-id"])
    assert logged.status_code == 400 and logged.outcome == "gateway_error"
    assert logged.steps == [{"step": "hold", "decision": "refused: the body cannot be read",
                             "reason": answers["repeats a key"].json()["error"]["message"]}]
    # A gzip body whose encoding comes in a second Content-Encoding line, after identity: read decoded, held.
    zipped = gzip.compress(json.dumps({**CHAT, "model": "gpt-4o"}).encode())
    call = Background(lambda: httpx.post(
        chat, content=zipped, timeout=30,
        headers=[*json_headers.items(), ("Content-Encoding", "identity"), ("Content-Encoding", "gzip")]))
    [rid] = held_ids(gateway)
    assert upstream.received == [] and HeldRequest.objects.get(pk=rid).model == "gpt-4o"
    switch(on=False, by="test")
    assert call.wait().status_code == 200 and len(upstream.received) == 1  # approved: forwarded


def test_the_key_filter_matches_a_key_of_the_keys_app(upstream, gateway, make_key):
    _, secret = make_key("tester")
    _, other = make_key("other")
    _switch(on=True, gateway_key="tester")
    assert _post(gateway, headers={**AUTH, "X-Gateway-Key": other}).wait().status_code == 200  # not held
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": secret})
    [rid] = held_ids(gateway)
    assert HeldRequest.objects.get(pk=rid).gateway_key == "tester"
    decide(rid, "approve", by="test")
    assert call.wait().status_code == 200


def test_the_key_filter_takes_a_gateway_api_keys_name(upstream, gateway, settings):
    settings.GATEWAY_API_KEYS = ["ci:gw-static-secret"]
    _switch(on=True, gateway_key="ci")
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": "gw-static-secret"})
    [rid] = held_ids(gateway)
    assert HeldRequest.objects.get(pk=rid).gateway_key == "ci"
    decide(rid, "approve", by="test")
    assert call.wait().status_code == 200


def test_the_switch_takes_effect_within_a_second(upstream, gateway):
    assert _post(gateway).wait().status_code == 200  # the worker has read the switch: off
    switch(on=True, by="test")
    turned_on = time.monotonic()

    def held_now() -> bool:  # a request sent now is held (its id shows up) or goes through
        call = _post(gateway)
        # Either it finishes or its hold shows up (the held row is written first: slower on PostgreSQL).
        until(lambda: call.done or (proxy.hold._watch is not None and proxy.hold._watch.waiters),
              timeout=10, what="the request to finish or be held")
        return False if call.done else call

    call = until(held_now, timeout=5, what="a held request")
    assert time.monotonic() - turned_on < 2.0  # the 1 s bound, plus the probe requests on a busy machine
    switch(on=False, by="test")
    assert call.wait().status_code == 200


def test_command(upstream, gateway, capsys, tmp_path):
    # The command writes from the test thread while the in-process gateway reads and writes the same rows:
    # retried on the in-memory test database's "table is locked" (tests/sqlite_writes.locked_retry).
    hold = functools.partial(locked_retry, call_command, "hold")
    hold("on", "--provider", "openai")
    assert capsys.readouterr().out.strip() == "hold: on (provider=openai); 0 waiting"
    first, second = _post(gateway), _post(gateway)
    ids = held_ids(gateway, 2)
    hold("list")
    assert capsys.readouterr().out.split() == ids
    hold("status")
    assert capsys.readouterr().out.strip() == "hold: on (provider=openai); 2 waiting"
    edited = tmp_path / "body.json"
    edited.write_bytes(b"\xef\xbb\xbf" + json.dumps({**CHAT, "max_tokens": 5}).encode())  # Notepad's BOM first
    hold("decide", ids[0], "approve", "--body-file", str(edited))
    hold("decide", ids[1], "reject-400")
    by_id = {first.wait().headers["x-gateway-request-id"]: first.result.status_code,
             second.wait().headers["x-gateway-request-id"]: second.result.status_code}
    assert by_id == {ids[0]: 200, ids[1]: 400}
    assert json.loads(upstream.received[-1].body)["max_tokens"] == 5
    with pytest.raises(CommandError, match="no longer waiting"):
        hold("decide", ids[1], "approve")
    with pytest.raises(CommandError, match="an edited body goes only with approve"):
        hold("decide", ids[1], "reject-500", "--body-file", str(edited))
    hold("off")
    assert capsys.readouterr().out.strip().endswith("hold: off")
    # Filters that could never match are refused, and hold stays off.
    with pytest.raises(CommandError, match="unknown provider 'opnai'"):
        hold("on", "--provider", "opnai")
    with pytest.raises(CommandError, match="starts with '/'"):
        hold("on", "--path", "v1/chat/")
    with pytest.raises(CommandError, match="no gateway key is named 'nobody'"):
        hold("on", "--key", "nobody")
    # `hold on --model "$MODEL"` with MODEL unset held every request of every client.
    for option in ("--model", "--provider", "--key", "--path"):
        with pytest.raises(CommandError, match=f"{option} is empty"):
            hold("on", option, " ")
    hold("status")
    assert capsys.readouterr().out.strip().startswith("hold: off")


def test_gemini_streamed_content_policy_is_its_blocked_event(upstream, gateway, log_flush):
    from google import genai
    from google.genai import types

    client = genai.Client(api_key="AIza" + "s" * 35, http_options=types.HttpOptions(base_url=f"{gateway.url}/gemini"))
    switch(on=True, by="test")
    call = Background(lambda: list(client.models.generate_content_stream(model="gemini-2.0-flash", contents="hi")))
    [rid] = held_ids(gateway)
    decide(rid, "content-policy", by="dave")
    chunks = call.wait()
    assert call.error is None, call.error
    assert [c.prompt_feedback.block_reason for c in chunks] == [types.BlockedReason.SAFETY]
    assert chunks[0].text is None and upstream.received == []
    log_flush()
    resp = Response.objects.get(request_id=rid)  # logged as the stream it was, its one event read
    assert resp.is_stream and resp.stream_result["result"]["promptFeedback"]["blockReason"] == "SAFETY"


def test_a_cache_hit_is_never_held(upstream, gateway, log_flush, settings, tmp_path):
    settings.DATA_DIR = tmp_path  # a cache folder of this test's own
    cached = {**AUTH, "X-Gateway-Cache": "60"}
    first = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=cached, timeout=10)
    assert first.headers["x-gateway-cache"] == "MISS"
    _switch(on=True)
    hit = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=cached, timeout=10)
    assert hit.headers["x-gateway-cache"] == "HIT" and hit.content == first.content
    assert not HeldRequest.objects.exists() and len(upstream.received) == 1
    miss = _post(gateway, body={**CHAT, "user": "new"}, headers=cached)  # a miss is held as usual
    [rid] = held_ids(gateway)
    decide(rid, "approve", by="alice")
    assert miss.wait().headers["x-gateway-cache"] == "MISS"


def test_an_answer_to_an_edited_request_is_not_cached(upstream, gateway, log_flush, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    _switch(on=True)
    call = _post(gateway, headers={**AUTH, "X-Gateway-Cache": "60"})
    [rid] = held_ids(gateway)
    decide(rid, "approve", by="bob", body=json.dumps({**CHAT, "user": "edited"}))
    assert call.wait().headers["x-gateway-cache"] == "MISS"
    assert any(s.get("decision") == "not stored: a later step changed the request" for s in _logged(log_flush, rid).steps)
    _switch(on=False)
    again = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Gateway-Cache": "60"},
                       timeout=10)
    assert again.headers["x-gateway-cache"] == "MISS" and len(upstream.received) == 2


def test_a_request_held_on_a_switch_read_before_it_went_off_is_released(upstream, gateway, settings, log_flush):
    """A worker reads the switch twice a second: one held after `hold off` (whose approval covered only the rows
    already there) waited the whole HOLD_TIMEOUT_SECONDS. The watch approves it once it reads the switch off."""
    from hold.types import SwitchState

    settings.HOLD_TIMEOUT_SECONDS = 30
    assert _post(gateway).wait().status_code == 200  # the worker's watch runs, the switch read: off
    watch = proxy.hold._watch
    # A read from before the off, taken as fresh for three seconds more: the request below is held on it (with
    # the read's time now, the watch's own re-read could come first, and nothing was held; with one second more,
    # a loaded CI machine still let the re-read come first).
    for _ in range(20):
        watch.switch, watch.switch_read_at = SwitchState(on=True), time.monotonic() + 3.0
        time.sleep(0.2)  # a re-read already on its way when it was set lands after it, off: set it again
        if watch.switch.on:
            break
    r = _post(gateway).wait(timeout=10)
    assert r.status_code == 200
    rid = r.headers["x-gateway-request-id"]
    assert HeldRequest.objects.get(pk=rid).decided_by == "hold off (the switch was off)"


def test_a_request_whose_worker_is_gone_cannot_be_decided(db):
    """Past its deadline and the grace, nobody holds it: the decision would be recorded and never carried out."""
    from datetime import timedelta

    from django.utils import timezone

    from hold.services import held_decide

    long_ago = timezone.now() - timedelta(minutes=5)
    HeldRequest.objects.create(id="0" * 32, provider="openai", method="POST", path="/v1/chat/completions", model="m",
                               body=None, body_size=0, instance="gone", held_at=long_ago, deadline=long_ago)
    with pytest.raises(HoldError, match="its deadline passed with no worker holding it"):
        held_decide("0" * 32, "reject-400", by="alice")
    assert HeldRequest.objects.get(pk="0" * 32).decision == ""


def test_an_edited_body_larger_than_a_client_may_send_is_refused(db, settings, tmp_path):
    """A 120 MB --body-file went upstream past MAX_REQUEST_BODY_BYTES, which answers any client's 413."""
    from hold.services import held_decide

    settings.MAX_REQUEST_BODY_BYTES = 100
    rid = "ab" * 16
    HeldRequest.objects.create(id=rid, provider="openai", method="POST", path="/v1/chat/completions", model="m",
                               body=None, body_size=0, instance="here", held_at=timezone.now(),
                               deadline=timezone.now() + timedelta(minutes=1))
    big = json.dumps({**CHAT, "messages": [{"role": "user", "content": "é" * 40}]})  # 87 characters, 127 bytes
    with pytest.raises(HoldError, match=r"larger than MAX_REQUEST_BODY_BYTES \(100 bytes\)"):
        held_decide(rid, "approve", by="alice", body=big)
    (tmp_path / "big.json").write_text(big)
    with pytest.raises(CommandError, match=r"big.json: the edited body \(\d+ bytes\) is larger than "
                                           r"MAX_REQUEST_BODY_BYTES \(100 bytes\).*: raise MAX_REQUEST_BODY_BYTES"):
        call_command("hold", "decide", rid, "approve", "--body-file", str(tmp_path / "big.json"))
    assert HeldRequest.objects.get(pk=rid).decision == ""
    held_decide(rid, "approve", by="alice", body=json.dumps(CHAT))
    assert HeldRequest.objects.get(pk=rid).edited_body == json.dumps(CHAT)


def test_rows_that_ended_undecided_are_pruned_after_a_week_too(db):
    """A row whose client left before any decision, or whose worker died holding it, has no decided_at: it kept
    its prompt in hold_requests for good, while decided rows went after a week."""
    from hold.services import held_create

    now, old = timezone.now(), timezone.now() - timedelta(days=8)
    row = functools.partial(HeldRequest.objects.create, provider="openai", method="POST", path="/v1/chat/completions",
                            model="m", body='{"secret prompt": 1}', body_size=20, instance="w")
    row(id="a" * 32, held_at=old, deadline=old + timedelta(minutes=1), state=HeldRequest.State.ABORTED,
        released_at=old + timedelta(seconds=5))  # its client left, undecided
    row(id="b" * 32, held_at=old, deadline=old + timedelta(minutes=1))  # its worker died
    row(id="c" * 32, held_at=old, deadline=old + timedelta(minutes=1), decision="approve", decided_at=old,
        state=HeldRequest.State.RELEASED, released_at=old)
    row(id="d" * 32, held_at=now - timedelta(days=1), deadline=now - timedelta(days=1), state=HeldRequest.State.ABORTED,
        released_at=now - timedelta(days=1))  # recent: kept
    row(id="e" * 32, held_at=old, deadline=now + timedelta(days=30))  # HOLD_TIMEOUT_SECONDS of weeks: still waiting
    held_create(request_id="f" * 32, provider="openai", method="POST", path="/v1/chat/completions", model="m",
                gateway_key="", body=None, body_size=0, instance="w", timeout=60)
    assert sorted(HeldRequest.objects.values_list("id", flat=True)) == ["d" * 32, "e" * 32, "f" * 32]


def test_a_request_is_decided_by_its_id_with_dashes_too(db):
    """The log's id as PostgreSQL shows it (a uuid, with dashes) names the same held request: it was "no held
    request" for an operator who found it by SQL."""
    from datetime import timedelta

    from django.utils import timezone

    from hold.services import held_decide

    rid = "01a2311c220577a1923e5a06930fc8ea"
    HeldRequest.objects.create(id=rid, provider="openai", method="POST", path="/v1/chat/completions", model="m",
                               body=None, body_size=0, instance="here", held_at=timezone.now(),
                               deadline=timezone.now() + timedelta(minutes=1))
    held_decide(" 01A2311C-2205-77A1-923E-5A06930FC8EA", "reject-400", by="alice")
    assert HeldRequest.objects.get(pk=rid).decision == "reject-400"
    with pytest.raises(HoldError, match=f"request {rid} is no longer waiting: reject-400 by alice"):
        held_decide("01a2311c-2205-77a1-923e-5a06930fc8ea", "approve", by="bob")


MCP_TOKEN = "mcpTOKEN" + "0123456789abcd"


def _mcp_held(gateway) -> tuple[Background, str, dict]:
    """A Responses call with an MCP tool's token, held: the call, its id, its body as the page shows it."""
    switch(on=True, by="test")
    tool = {"type": "mcp", "server_label": "docs", "authorization": MCP_TOKEN, "server_url": "https://mcp.example.com"}
    body = {"model": "gpt-4o", "input": "read https://docs.example.com", "tools": [tool]}
    call = _post(gateway, body=body, path="/v1/responses")
    [rid] = held_ids(gateway)
    return call, rid, json.loads(HeldRequest.objects.get(pk=rid).body)


@pytest.mark.parametrize("ascii_only", [True, False])
def test_a_credential_shown_masked_and_kept_in_an_edit_goes_as_the_client_sent_it(upstream, gateway, log_flush,
                                                                                  ascii_only):
    """The page shows an MCP tool's authorization as "…abcd"; an edit that keeps it sent the mask upstream."""
    token = MCP_TOKEN
    call, rid, shown = _mcp_held(gateway)
    assert shown["tools"][0]["authorization"] == "…abcd"
    # The prompt edited around the URL it quotes: no new address.
    edit = {**shown, "input": "edited: read https://docs.example.com twice"}
    decide(rid, "approve", by="alice", body=json.dumps(edit, ensure_ascii=ascii_only))
    assert call.wait().status_code == 200
    sent = json.loads(upstream.received[-1].body)
    assert sent["input"] == edit["input"] and sent["tools"][0]["authorization"] == token
    logged = _logged(log_flush, rid)
    assert token not in json.dumps(logged.forwarded) and "edited" in logged.forwarded["body"]


@pytest.mark.parametrize("edit, why", [
    (lambda b: {**b, "tools": [{**b["tools"][0], "server_url": "https://mcp.attacker.example"}]},
     "sends to an address the client did not (https://mcp.attacker.example)"),
    (lambda b: {**b, "tools": [{**b["tools"][0], "server_url": "https://docs.example.com"}]},  # the prompt's
     "sends to an address the client did not (https://docs.example.com)"),
    (lambda b: {**b, "input": b["tools"][0]["authorization"]}, "moved from where the client sent it"),
    (lambda b: {**b, "tools": [{**b["tools"][0], "headers": {b["tools"][0]["authorization"]: "x"}}]},
     "moved from where the client sent it"),
])
def test_a_masked_credential_is_not_put_back_where_the_operator_sends_it_elsewhere(upstream, gateway, log_flush,
                                                                                   edit, why):
    """The operator never sees an MCP tool's token; an edit pointing the tool at their own server (or moving the
    mask into the prompt, for the model to repeat) while keeping "…abcd" had the gateway hand them the token."""
    token = MCP_TOKEN
    call, rid, shown = _mcp_held(gateway)
    decide(rid, "approve", by="mallory", body=json.dumps(edit(shown)))
    assert call.wait().status_code == 200
    sent = json.dumps(json.loads(upstream.received[-1].body), ensure_ascii=False)
    assert token not in sent and "…abcd" in sent
    logged = _logged(log_flush, rid)
    assert why in logged.error_message and logged.outcome == "completed"


def test_the_requests_own_key_echoed_in_its_body_is_masked_in_the_held_row(upstream, gateway, log_flush):
    """The hold_requests table and the page kept the client's key in clear where the prompt quoted it (the log's
    copy masks it); an edit that keeps the prompt sends it as the client wrote it."""
    switch(on=True, by="test")
    prompt = f"why is {KEY} refused?"
    call = _post(gateway, body={**CHAT, "messages": [{"role": "user", "content": prompt}]})
    [rid] = held_ids(gateway)
    shown = HeldRequest.objects.get(pk=rid).body
    assert KEY not in shown and f"why is {KEY[:3]}…{KEY[-4:]} refused?" in shown
    decide(rid, "approve", by="alice", body=json.dumps({**json.loads(shown), "max_tokens": 5}))
    assert call.wait().status_code == 200
    sent = json.loads(upstream.received[-1].body)
    assert sent["messages"][0]["content"] == prompt and sent["max_tokens"] == 5


def test_an_edited_form_upload_goes_as_json(upstream, gateway):
    """The edit is JSON: it went upstream labelled multipart/form-data with the form's boundary."""
    switch(on=True, by="test")
    call = Background(lambda: httpx.post(f"{gateway.url}/v1/audio/transcriptions", headers=AUTH, timeout=30,
                                         data={"model": "whisper-1"}, files={"file": ("a.wav", b"RIFF0000", "audio/wav")}))
    [rid] = held_ids(gateway)
    decide(rid, "approve", by="alice", body='{"model": "whisper-1", "prompt": "edited"}')
    call.wait()
    sent = upstream.received[-1]
    assert sent.header("content-type") == "application/json" and json.loads(sent.body)["prompt"] == "edited"


def test_content_policy_on_geminis_openai_compatible_endpoint_is_openais(upstream, gateway):
    """The OpenAI SDK got Gemini's native blocked answer (a 200 it cannot read: TypeError on choices)."""
    import openai

    client = openai.OpenAI(api_key="AIza" + "s" * 35, base_url=f"{gateway.url}/gemini/v1beta/openai", max_retries=0)
    switch(on=True, by="test")
    call = Background(lambda: client.chat.completions.create(model="gemini-2.5-flash",
                                                             messages=[{"role": "user", "content": "hi"}]))
    [rid] = held_ids(gateway)
    decide(rid, "content-policy", by="dave")
    call.wait()
    assert isinstance(call.error, openai.BadRequestError) and call.error.code == "content_policy_violation"
    assert upstream.received == []


def test_a_request_whose_worker_was_killed_leaves_the_queue_once_the_log_closes_it(db):
    """A worker killed while holding requests never ends their rows. The replay of its journal (at the
    restart, or by another worker) logs them `interrupted`, yet the queue went on listing them as waiting
    until their deadline (an hour with HOLD_TIMEOUT_SECONDS=3600), `hold off` recorded approvals for them
    and `hold decide` accepted decisions that nobody could carry out."""
    from datetime import timedelta

    from django.utils import timezone

    from hold.selectors import held_count, held_waiting
    from hold.services import held_decide, switch_set
    from logs.pipeline.recovery import interrupted_mark

    now = timezone.now()
    for rid, instance in (("1" * 32, "killed-worker"), ("2" * 32, "live-worker")):
        HeldRequest.objects.create(id=rid, provider="openai", method="POST", path="/v1/chat/completions", model="m",
                                   body=None, body_size=0, instance=instance, held_at=now,
                                   deadline=now + timedelta(hours=1))
        Request.objects.create(id=rid, provider="openai", endpoint="/v1/chat/completions", method="POST",
                               instance=instance, created_at=now)
    assert held_count() == 2  # positive control: both wait while nothing is logged

    assert interrupted_mark("killed-worker") == 1  # what the replay of the dead worker's journal does

    assert [r.pk for r in held_waiting()] == ["2" * 32]
    assert held_count() == 1
    with pytest.raises(HoldError, match="the gateway process holding it stopped .its exchange is logged interrupted"):
        held_decide("1" * 32, "approve", by="alice")
    switch_set(on=False, by="alice")  # approves what is waiting: the live worker's request only
    assert HeldRequest.objects.get(pk="1" * 32).decision == ""
    assert HeldRequest.objects.get(pk="2" * 32).decision == "approve"


def _key_changed(how: str, name: str) -> None:
    """Revoke, expire or delete a gateway key, and let the in-process gateway see it at once (in production: within
    a second)."""
    if how == "revoked":
        locked_retry(key_revoke, name=name)
    elif how == "expired":
        locked_retry(lambda: GatewayKey.objects.filter(name=name).update(expires_at=timezone.now() - timedelta(1)))
    else:
        locked_retry(lambda: GatewayKey.objects.filter(name=name).delete())
    caches_clear()


@pytest.mark.parametrize("how,by", [("revoked", "operator"), ("expired", "operator"), ("deleted", "timeout")])
def test_a_key_revoked_while_its_request_is_held_is_refused_when_approved(upstream, gateway, log_flush, make_key,
                                                                         settings, how, by):
    # Its key was checked when it arrived; approved a minute later, it went upstream on a key revoked since.
    settings.HOLD_TIMEOUT_SECONDS = 2 if by == "timeout" else 60
    _, secret = make_key("tester")
    switch(on=True, by="test")
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": secret})
    [rid] = held_ids(gateway)
    _key_changed(how, "tester")
    if by == "operator":
        decide(rid, "approve", by="alice")
    r = call.wait()
    assert r.status_code == 401 and r.headers["x-gateway-request-id"] == rid
    error = r.json()["error"]
    assert error["type"] == "authentication_error" and how in error["message"]
    assert upstream.received == []  # never forwarded
    resp = _logged(log_flush, rid)
    assert resp.status_code == 401 and resp.outcome == "gateway_error" and how in resp.error_message
    hold, key = resp.steps[-2:]
    assert hold["step"] == "hold" and hold["decision"] == "approve" and hold["by"] == ("alice" if by == "operator"
                                                                                      else "timeout")
    assert key["step"] == "gateway_key" and key["decision"].startswith("refused after the hold") and key["key"] == "tester"
    assert HeldRequest.objects.get(pk=rid).state == "released"


def test_a_held_request_whose_key_cannot_be_read_at_release_is_a_503_not_forwarded(upstream, gateway, log_flush,
                                                                                    make_key, monkeypatch):
    # The database went away while it was held: the release's key read failed the hold step with a 500 and a
    # traceback, where a request arriving then gets the key check's 503 (which the SDKs retry).
    import proxy.access
    from django.db import OperationalError

    _, secret = make_key("tester")
    switch(on=True, by="test")
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": secret})
    [rid] = held_ids(gateway)

    def down(digest):
        raise OperationalError("could not connect to server at db.internal:5432")

    monkeypatch.setattr(proxy.access, "key_find", down)
    caches_clear()
    decide(rid, "approve", by="alice")
    r = call.wait()
    assert r.status_code == 503 and "cannot check gateway keys" in r.json()["error"]["message"]
    assert "db.internal" not in r.text and upstream.received == []
    monkeypatch.undo()
    resp = _logged(log_flush, rid)
    assert resp.status_code == 503 and resp.outcome == "gateway_error" and "db.internal" in resp.error_message


@pytest.mark.parametrize("limits,model,refusal", [
    ({"models": ["gpt-4o-mini"]}, "gpt-4o", "may not use model 'gpt-4o'"),
    ({"budget_usd": Decimal("1")}, "no-such-model-for-a-price", "has no price"),
    ({"models": ["gpt-4o-mini", "gpt-4o"]}, "gpt-4o", None),  # control: an edit the key allows goes upstream
])
def test_an_edit_naming_a_model_its_key_may_not_use_is_refused(upstream, gateway, log_flush, make_key, limits, model,
                                                              refusal):
    _, secret = make_key("tester", **limits)
    switch(on=True, by="test")
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": secret})
    [rid] = held_ids(gateway)
    edited = {**CHAT, "model": model}
    decide(rid, "approve", by="bob", body=json.dumps(edited))
    r = call.wait()
    resp = _logged(log_flush, rid)
    assert json.loads(resp.forwarded["body"]) == edited  # the operator's edit is in the log, forwarded or not
    if refusal is None:
        assert r.status_code == 200 and json.loads(upstream.received[-1].body)["model"] == model
        return
    assert r.status_code == 403 and refusal in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "permission_error"
    assert upstream.received == []
    assert resp.status_code == 403 and resp.outcome == "gateway_error" and refusal in resp.error_message
    hold, key = resp.steps[-2:]
    assert hold["decision"] == "approve" and hold["by"] == "bob" and hold["edited_body"] is True
    assert key["step"] == "gateway_key" and refusal in key["reason"]


def test_a_request_whose_key_lost_its_model_while_held_is_refused(upstream, gateway, log_flush, make_key):
    _, secret = make_key("tester", models=["gpt-4o-mini"])
    switch(on=True, by="test")
    call = _post(gateway, headers={**AUTH, "X-Gateway-Key": secret})
    [rid] = held_ids(gateway)
    locked_retry(lambda: GatewayKey.objects.filter(name="tester").update(allowed_models=["gpt-4o"]))
    caches_clear()
    decide(rid, "approve", by="bob")
    r = call.wait()
    assert r.status_code == 403 and "may not use model 'gpt-4o-mini'" in r.json()["error"]["message"]
    assert upstream.received == []


def test_the_lifespans_shutdown_closes_the_connection_the_watch_read_with():
    """The watch reads the switch in asgiref's shared sync thread, which outlives the event loop: its connection
    stays open until watch_stop (the lifespan's shutdown) closes it. Open, it kept PostgreSQL from dropping the
    test database; this is also the positive control of the guard that every database test runs
    (tests/conftest.py connections_closed)."""
    import asyncio

    from django.db import connection

    from tests.conftest import shared_sync_thread_connections

    if connection.vendor == "sqlite":
        pytest.skip("Django's in-memory SQLite test database is never closed (run with DATABASE_URL=postgres://...)")

    async def run() -> tuple[list[str], list[str]]:
        await proxy.hold.watch_get().switch_current()
        read_with = shared_sync_thread_connections()
        await proxy.hold.watch_stop()
        return read_with, shared_sync_thread_connections()

    read_with, after_stop = asyncio.run(run())
    assert read_with == ["default"] and after_stop == []
