"""Request hooks through a live gateway: what they change goes upstream and into the log; their answers and failures."""

import gzip
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured

from logs.models import BinaryFile, Request, Response
from proxy import hooks
from proxy.hooks import hooks_loaded
from tests.procs import ROOT
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)
from tests.proxy import sample_hooks

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "hookTESTkey0123456789abcdefXYZ"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
H = "tests.proxy.sample_hooks."


@pytest.fixture(autouse=True)
def _clear():
    sample_hooks.calls.clear()
    sample_hooks.seen.clear()
    sample_hooks.release.clear()
    sample_hooks.late_written.clear()
    sample_hooks.release_answer.clear()
    sample_hooks.late_written_answer.clear()
    yield
    sample_hooks.release.set()  # a hung hook's thread goes on and ends
    sample_hooks.release_answer.set()


def _exchange(log_flush, rid: str) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(pk=rid)
    return req, Response.objects.get(request=req)


def test_changes_go_upstream_and_both_versions_are_logged(settings, upstream, gateway, log_flush, admin_client):
    settings.GATEWAY_HOOKS = [H + "Rewrite", H + "AsyncTag"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    got = upstream.received[-1]
    sent = json.loads(got.body)
    assert sent["messages"][-1] == {"role": "system", "content": "added by a hook"}
    assert got.header("x-hooked") == "yes" and got.header("x-async-hook") == "1"
    assert got.header("content-length") == str(len(got.body))

    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert json.loads(req.body) == CHAT  # as received
    assert json.loads(resp.forwarded["body"]) == sent  # as forwarded
    assert ["X-Hooked", "yes"] in resp.forwarded["headers"]
    assert KEY not in json.dumps(resp.forwarded)  # the credential is masked there too
    changed = [(s["hook"], s["changed"]) for s in resp.steps if s.get("decision") == "changed"]
    assert changed == [(H + "Rewrite", ["headers", "body"]), (H + "AsyncTag", ["headers"])]
    assert {"step": "hooks", "decision": "metadata", "metadata": {"by": "rewrite"}} in resp.steps
    # on_response saw the whole answer (not streamed) and left it alone
    assert sample_hooks.seen[0]["status"] == 200 and not sample_hooks.seen[0]["streamed"]
    assert json.loads(sample_hooks.seen[0]["body"]) == r.json()
    page = admin_client.get(f"/admin/logs/request/{req.id.hex}/change/").content.decode()
    assert "Policy steps" in page and f"<code>{H}Rewrite</code>: changed" in page
    assert "As forwarded: <code>POST /v1/chat/completions</code>" in page and "added by a hook" in page


def test_a_hook_may_move_the_request_to_another_path(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Repath"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and r.json()["object"] == "list"  # the embeddings answer
    assert upstream.received[-1].path == "/v1/embeddings"
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert req.endpoint == "/v1/chat/completions" and resp.forwarded["path"] == "/v1/embeddings"


def test_a_hook_may_change_the_method_and_query(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Reput"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    got = upstream.received[-1]
    assert (got.method, got.path, got.query) == ("PUT", "/v1/chat/completions", "dry_run=1")
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert (req.method, req.query_string) == ("POST", "")
    assert (resp.forwarded["method"], resp.forwarded["query"], resp.forwarded["body_unchanged"]) == ("PUT", "dry_run=1",
                                                                                                       True)


def test_a_path_a_hook_sets_is_checked_like_a_clients(settings, upstream, gateway):
    settings.GATEWAY_HOOKS = [H + "BadPath"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and "dot segments are not allowed" in r.json()["error"]["message"]
    assert upstream.received == []


def test_json_a_hook_assigns_to_a_form_upload_goes_labelled_json(settings, upstream, gateway, log_flush):
    """It went labelled multipart/form-data with the form's boundary: the upstream read a broken form."""
    settings.GATEWAY_HOOKS = [H + "FormToJson"]
    r = httpx.post(f"{gateway.url}/v1/audio/transcriptions", headers=AUTH, data={"model": "whisper-1"},
                   files={"file": ("a.wav", b"RIFF0000", "audio/wav")})
    sent = upstream.received[-1]
    assert sent.header("content-type") == "application/json" and json.loads(sent.body)["prompt"] == "from a hook"
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert ["Content-Type", "application/json"] in resp.forwarded["headers"]
    assert resp.steps[0]["changed"] == ["headers", "body"]


def test_a_framing_header_a_hook_sets_is_refused(settings, upstream, gateway):
    # Beside the gateway's own Content-Length the upstream read 5 bytes; with Transfer-Encoding, a smuggling shape.
    settings.GATEWAY_HOOKS = [H + "SetsLength"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and "may not include Content-Length" in r.json()["error"]["message"]
    assert upstream.received == []


def test_a_hook_answers_itself_and_nothing_goes_upstream(settings, upstream, gateway, log_flush, make_key):
    settings.GATEWAY_HOOKS = [H + "Rewrite", "tests.proxy.sample_hooks"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "canned"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"canned": True, "model": "canned", "key": None}
    assert upstream.received == []
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert json.loads(resp.body) == r.json() and resp.outcome == "completed"
    _, secret = make_key("hooked")  # a key of the keys app: the hook sees its name
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "canned"},
                   headers={**AUTH, "X-Gateway-Key": secret})
    assert r.json()["key"] == "hooked"
    assert {"step": "hooks", "hook": "tests.proxy.sample_hooks", "decision": "answered", "status": 200} in resp.steps


@pytest.mark.parametrize("model", ["binary", "gzip", "stream", "sync"])
def test_a_hooks_own_answer_is_logged_as_the_client_got_it(settings, upstream, gateway, log_flush, model):
    """A binary answer kept as a file (it was text with U+FFFD for its bytes), a compressed one decoded (it was
    its gzip bytes as text), a streamed one with its body (it was logged empty; a sync iterator broke it)."""
    settings.GATEWAY_HOOKS = [H + "AnswersOwnWay"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": model}, headers=AUTH)
    assert r.status_code == 200 and upstream.received == []
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "completed"
    if model == "binary":
        assert r.content == sample_hooks.PNG and resp.body is None
        stored = BinaryFile.objects.get(response=resp, role="response_body")
        assert stored.size == len(sample_hooks.PNG) and stored.sha256 == hashlib.sha256(sample_hooks.PNG).hexdigest()
    elif model == "gzip":
        assert r.json() == {"canned": True} and json.loads(resp.body) == {"canned": True}
    elif model == "stream":
        assert resp.is_stream and resp.body == r.text and r.text.endswith("data: [DONE]\n\n")
        assert len(resp.event_offsets_ms) == 2
    else:
        assert r.text == resp.body == "sync stream" and resp.body_size == len(r.content)


def test_a_hooks_stream_that_breaks_is_logged_as_the_gateways_failure(settings, upstream, gateway, log_flush):
    """The client's read ends short; the log said the client had left (client_aborted)."""
    settings.GATEWAY_HOOKS = [H + "StreamBreaks"]
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH) as r:
            rid = r.headers["x-gateway-request-id"]
            r.read()
    _, resp = _exchange(log_flush, rid)
    assert resp.outcome == "gateway_error" and resp.body == "data: {}\n\n"
    assert resp.error_message == "the step's streamed answer failed: RuntimeError: the hook's generator broke"


def test_a_failing_hook_gives_a_500_naming_it_with_its_traceback_logged_without_secrets(
        settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Boom"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500
    message = r.json()["error"]["message"]
    assert message.startswith(f"Hook {H}Boom failed in on_request: RuntimeError: cannot handle this request")
    assert KEY not in r.text and upstream.received == []
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "gateway_error" and resp.status_code == 500
    step = resp.steps[0]
    assert step["decision"] == "error" and "Traceback" in step["traceback"] and "raise RuntimeError" in step["traceback"]
    assert KEY not in json.dumps(resp.steps) and KEY[-4:] in step["traceback"]  # masked, not dropped


def test_a_hook_failing_on_the_answer_gives_its_500_whole(settings, upstream, gateway, log_flush):
    """The 500 goes out with its own length and type, not the upstream answer's (a client read a cut body)."""
    settings.GATEWAY_HOOKS = [H + "BoomOnAnswer"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and int(r.headers["content-length"]) == len(r.content)
    assert r.headers["content-type"] == "application/json" and "x-request-id" not in r.headers  # the mock's
    assert r.json()["error"]["message"].startswith(f"Hook {H}BoomOnAnswer failed in on_response: RuntimeError")
    assert r.headers.get_list("x-gateway-request-id") == [r.headers["x-gateway-request-id"]]
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.steps[-1]["decision"] == "error" and resp.error_message.startswith(f"Hook {H}BoomOnAnswer failed")


def test_a_hook_failing_on_the_answer_is_logged_as_received_and_as_the_client_got_it(settings, upstream, gateway,
                                                                                     log_flush, admin_client):
    """The row keeps the upstream's answer (it was paid for: usage and cost count); the step says what the
    client got instead: the 500, its body, the hook and its traceback."""
    settings.GATEWAY_HOOKS = [H + "BoomOnAnswer"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 200 and json.loads(resp.body)["object"] == "chat.completion"  # as received
    assert (resp.input_tokens, resp.output_tokens) == (12, 9) and resp.cost_usd > 0
    assert resp.outcome == "gateway_error" and resp.is_error
    assert "the client got the hook's 500 instead of the upstream's answer" in resp.error_message
    step = resp.steps[-1]
    assert (step["hook"], step["decision"], step["status"]) == (H + "BoomOnAnswer", "error", 500)
    assert json.loads(step["response_body"]) == r.json() and "raise RuntimeError" in step["traceback"]
    page = admin_client.get(f"/admin/logs/request/{resp.request_id.hex}/change/").content.decode()
    assert f"<code>{H}BoomOnAnswer</code>: error, the client got 500</summary>" in page


@pytest.mark.parametrize("hook", ["Boom", "BoomOnAnswer"])
def test_a_failing_hook_is_not_retried_by_the_sdks(settings, upstream, gateway, log_flush, hook):
    """A hook that raised raises again on the same request: an SDK retrying its 500 (twice by default) made three
    calls and three log rows for one bug, and on the answer paid the upstream three times."""
    import openai

    settings.GATEWAY_HOOKS = [H + hook]
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1")  # the SDK's default: 2 retries
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(**CHAT)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.received) == (1 if hook == "BoomOnAnswer" else 0)
    log_flush()
    assert Request.objects.count() == 1


def test_a_credential_a_hook_puts_in_is_masked_in_the_log(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "InjectKey"]
    r = httpx.get(f"{gateway.url}/v1/models", headers={**AUTH, "x-mock-fault": "echo-auth"})
    assert r.status_code == 401 and sample_hooks.INJECTED in r.text  # the upstream echoed it to the client
    assert upstream.received[-1].header("authorization") == f"Bearer {sample_hooks.INJECTED}"
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert "Incorrect API key provided" in resp.body and sample_hooks.INJECTED[-4:] in resp.body
    for text in (resp.body, json.dumps(resp.headers), json.dumps(resp.forwarded), json.dumps(resp.steps)):
        assert sample_hooks.INJECTED not in text


def test_a_hook_calling_sys_exit_is_a_hook_failure(settings, upstream, gateway, log_flush):
    """It was uvicorn's bare text 500, the exchange never logged."""
    settings.GATEWAY_HOOKS = [H + "Exits"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and r.headers["x-should-retry"] == "false"
    assert r.json()["error"]["message"] == f"Hook {H}Exits failed in on_request: SystemExit: 3"
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "gateway_error" and resp.steps[0]["decision"] == "error" and upstream.received == []
    settings.GATEWAY_HOOKS = [H + "ExitsOnAnswer"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and "failed in on_response: SystemExit: 4" in r.json()["error"]["message"]


def test_secrets_a_failing_hook_quotes_are_masked_in_the_answer_the_log_and_the_console(
        settings, upstream, gateway, log_flush, caplog):
    """An exception may quote what is no credential of the request: a body field named like one, a key the hook
    holds. The client, the log and the console get them masked; a KeyError's key name stays readable."""
    settings.GATEWAY_HOOKS = [H + "QuotesSecrets"]
    field = "fieldSECRET0123456789abc"
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "api_key": field}, headers=AUTH)
    assert r.status_code == 500
    message = r.json()["error"]["message"]
    assert "'api_key': '…9abc'" in message and "sk-…cdef" in message and "'model': 'gpt-4o-mini'" in message
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    for text in (r.text, json.dumps(resp.steps), resp.error_message, resp.body, caplog.text):
        assert field not in text and sample_hooks.TEAM_KEY not in text
    assert "sk-…cdef" in resp.steps[0]["traceback"]  # masked, not dropped
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "missing"}, headers=AUTH)
    assert r.json()["error"]["message"].endswith("KeyError: 'messages_missing'")
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.steps[0]["traceback"].endswith("\nKeyError: 'messages_missing'\n")


def test_a_failing_hook_set_to_skip_is_logged_and_skipped(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Boom", H + "AsyncTag"]
    settings.GATEWAY_HOOKS_SKIP_ON_ERROR = [H + "Boom"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and upstream.received[-1].header("x-async-hook") == "1"
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.steps[0]["decision"] == "skipped after an error" and resp.steps[0]["hook"] == H + "Boom"


def test_a_hook_returning_something_else_than_a_response_is_a_failure(settings, upstream, gateway):
    settings.GATEWAY_HOOKS = [H + "BadReturn"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and "return None or an HttpResponse" in r.json()["error"]["message"]


def test_a_slow_sync_hook_does_not_block_other_requests(settings, upstream, gateway):
    """Needs real time: the slow hook blocks its thread for 0.8 s while another request completes."""
    settings.GATEWAY_HOOKS = [H + "Slow"]
    done = {}

    def slow() -> None:
        httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "slow"}, headers=AUTH, timeout=10)
        done["slow"] = time.monotonic()

    sample_hooks.slow_started.clear()
    thread = threading.Thread(target=slow)
    thread.start()
    assert sample_hooks.slow_started.wait(5)
    started = time.monotonic()
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    fast_done = time.monotonic()
    thread.join(10)
    assert r.status_code == 200
    assert fast_done < done["slow"], "the fast request waited for the slow hook"
    assert fast_done - started < 0.6
    assert all(name != "MainThread" for _, name in sample_hooks.calls)


def test_a_hook_declared_non_blocking_runs_on_the_event_loop(settings, upstream, gateway):
    settings.GATEWAY_HOOKS = [H + "Inline", H + "Slow"]
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH).status_code == 200
    (_, inline_thread), (_, slow_thread) = sample_hooks.calls
    assert inline_thread == gateway.thread.name and slow_thread != gateway.thread.name


def test_on_response_replaces_a_whole_answer_and_observes_a_stream(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Shout"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"].startswith("HELLO FROM A HOOK!")
    assert r.headers["content-length"] == str(len(r.content))
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert b"HELLO FROM A HOOK!" not in resp.body.encode()  # the log keeps what the upstream said
    step = resp.steps[0]
    assert step["changed"] == ["response body"] and "HELLO FROM A HOOK!" in step["response_body"]

    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True},
                      headers=AUTH) as s:
        text = s.read()
    assert b"data: [DONE]" in text
    assert sample_hooks.seen[-1] == {"status": 200, "streamed": True}


def test_a_hook_sees_a_compressed_body_decoded_up_to_a_bound(settings, upstream, gateway):
    # 32 MiB of JSON in ~32 KB of gzip was decoded whole for the hook (a few KB of zstd from anyone stalled the
    # worker). Past 16 MiB decoded, the hook is shown the body as sent; a small one is shown decoded.
    settings.GATEWAY_HOOKS = [H + "BodySize"]
    small = json.dumps(CHAT).encode()
    bomb = gzip.compress(b'{"model": "m", "pad": "' + b"a" * (32 * 1024 * 1024) + b'"}')
    for body in (gzip.compress(small), bomb):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, timeout=30,
                       headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert r.status_code == 200
    assert sample_hooks.seen == [{"body_size": len(small)}, {"body_size": len(bomb)}]


def test_on_response_sees_a_compressed_answer_decoded_and_replacing_it_drops_the_encoding(
        settings, scripted, upstream, gateway):
    answer = {"choices": [{"message": {"content": "Hello! there"}}]}
    scripted.answer = lambda request: (200, [("content-type", "application/json"), ("content-encoding", "gzip")],
                                       gzip.compress(json.dumps(answer).encode()))
    settings.GATEWAY_HOOKS = [H + "Shout"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert "content-encoding" not in r.headers
    assert r.json()["choices"][0]["message"]["content"] == "HELLO FROM A HOOK! there"


def test_a_large_forwarded_body_is_kept_as_a_file(settings, upstream, gateway, log_flush, payload_dir):
    settings.GATEWAY_HOOKS = [H + "Rewrite"]
    settings.LOG_BODY_INLINE_MAX_BYTES = 1000
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=big, headers=AUTH)
    assert r.status_code == 200
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.forwarded["body"] is None and resp.forwarded["body_size"] == len(upstream.received[-1].body)
    kept = BinaryFile.objects.get(request=req, role=BinaryFile.Role.FORWARDED_BODY)
    assert (payload_dir / kept.file.name).read_bytes() == upstream.received[-1].body


def test_without_hooks_nothing_is_marked_changed(settings, upstream, gateway, log_flush):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    req, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.steps is None and resp.forwarded is None


@pytest.mark.parametrize("paths,skip,message", [
    (["tests.proxy.sample_hooks.Missing"], [], "GATEWAY_HOOKS: cannot import 'tests.proxy.sample_hooks.Missing'"),
    (["no_such_package.hooks.Hook"], [], "GATEWAY_HOOKS: cannot import 'no_such_package.hooks.Hook'"),
    ([H + "NoMethods"], [], f"GATEWAY_HOOKS: '{H}NoMethods' (NoMethods) has none of on_request, on_response and "
     "on_session_model"),
    ([H + "Noop"], [H + "Boom"], f"GATEWAY_HOOKS_SKIP_ON_ERROR names hooks not in GATEWAY_HOOKS: {H}Boom"),
    # GATEWAY_HOOKS unset (misspelled): the skip list was ignored and the hooks meant were never run.
    ([], [H + "Boom"], f"GATEWAY_HOOKS_SKIP_ON_ERROR names hooks not in GATEWAY_HOOKS: {H}Boom"),
    ([H + "BadBlocking"], [], f"GATEWAY_HOOKS: '{H}BadBlocking' has blocking = 'no'; it must be True or False"),
])
def test_bad_hooks_are_refused_by_name(settings, paths, skip, message):
    settings.GATEWAY_HOOKS, settings.GATEWAY_HOOKS_SKIP_ON_ERROR = paths, skip
    with pytest.raises(ImproperlyConfigured) as exc:
        hooks_loaded()
    assert str(exc.value).startswith(message)


def test_a_bad_hook_stops_the_start(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "GATEWAY_HOOKS": "gateway_hooks.pii.PiiMask,nope.hooks.Hook"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "ImproperlyConfigured: GATEWAY_HOOKS: cannot import 'nope.hooks.Hook'" in done.stderr


def test_a_client_leaving_while_a_hook_runs_is_logged(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "Slow"]
    sample_hooks.slow_started.clear()
    body = json.dumps({**CHAT, "model": "slow"}).encode()
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert sample_hooks.slow_started.wait(5)
    sock.close()
    log_flush()
    deadline = time.monotonic() + 5
    while not Response.objects.filter(outcome="client_aborted").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
        log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "client_aborted" and "during the policy steps" in resp.error_message
    assert upstream.received == []


def test_a_module_is_a_hook_even_unimported_and_a_module_failing_to_import_is_named():
    # import_string found a module only as an attribute of its imported package; a module raising
    # anything but ImportError stopped the start with a bare traceback.
    import sys

    from django.core.exceptions import ImproperlyConfigured

    from proxy.hooks import hook_load

    sys.modules.pop("tests.proxy.module_hook", None)
    assert hook_load("tests.proxy.module_hook").on_request is not None
    with pytest.raises(ImproperlyConfigured, match="cannot import 'tests.proxy.broken_hook': RuntimeError: this module"):
        hook_load("tests.proxy.broken_hook")


def test_a_credential_a_failing_hook_put_in_is_masked_in_its_error(settings, upstream, gateway, log_flush):
    settings.GATEWAY_HOOKS = [H + "InjectKeyThenFail"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and "RuntimeError: the team key" in r.text
    assert sample_hooks.INJECTED not in r.text and sample_hooks.INJECTED[-4:] in r.text  # masked, not dropped
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert sample_hooks.INJECTED not in json.dumps(resp.steps) + resp.error_message
    assert upstream.received == []


@pytest.mark.parametrize(("hook", "message"), [
    ("BadHeaderName", "header name 'X Bad Name' is not a token"),
    ("NotJson", "json must be JSON: Out of range float values are not JSON compliant"),
])
def test_a_header_or_body_no_upstream_can_read_fails_the_hook(settings, upstream, gateway, hook, message):
    settings.GATEWAY_HOOKS = [H + hook]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 500 and message in r.json()["error"]["message"] and H + hook in r.text
    assert upstream.received == []


def test_a_body_changed_in_place_goes_upstream_and_later_hooks_judge_it(settings, upstream, gateway, log_flush):
    """exchange.json["model"] = ... works as an assignment: what the model policy after it sees goes upstream."""
    settings.GATEWAY_HOOKS = [H + "ModelInPlace", "gateway_hooks.model_policy.ModelPolicy"]
    settings.MODEL_POLICY_ALLOW = ["gpt-4o-mini"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "gpt-4o"}, headers=AUTH)
    assert r.status_code == 200 and json.loads(upstream.received[-1].body)["model"] == "gpt-4o-mini"
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert {"step": "hooks", "hook": H + "ModelInPlace", "decision": "changed", "changed": ["body"]} in resp.steps


def test_an_answer_naming_no_model_is_priced_by_the_model_a_hook_sent(settings, upstream, gateway, log_flush):
    """OpenAI's image answers report usage but no model: the forwarded model prices them, not the one asked."""
    body = {"model": "gpt-image-1", "prompt": "a red square"}
    direct = httpx.post(f"{gateway.url}/v1/images/generations", json={**body, "model": "gpt-image-1-mini"},
                        headers=AUTH)
    settings.GATEWAY_HOOKS = [H + "CheaperImages"]
    hooked = httpx.post(f"{gateway.url}/v1/images/generations", json=body, headers=AUTH)
    assert json.loads(upstream.received[-1].body)["model"] == "gpt-image-1-mini"
    _, mini = _exchange(log_flush, direct.headers["x-gateway-request-id"])
    req, resp = _exchange(log_flush, hooked.headers["x-gateway-request-id"])
    assert req.model == "gpt-image-1" and resp.forwarded["model"] == "gpt-image-1-mini"
    assert resp.model == "gpt-image-1-mini" and mini.cost_usd and resp.cost_usd == mini.cost_usd


@pytest.mark.parametrize("limits,refusal", [
    ({"models": ["gpt-4o-mini"]}, "may not use model 'gpt-4o'"),
    ({"models": ["gpt-4o-mini", "gpt-4o"]}, None),  # a key that allows what the hook sends: forwarded
])
def test_a_hooks_change_is_held_to_the_requests_gateway_key(settings, upstream, gateway, log_flush, make_key, limits,
                                                              refusal):
    """The key was judged on the request as it came: a hook that sent it to another model ran that model on a
    key limited to others (or, for a key with a budget, a model without a price, counting nothing)."""
    _, secret = make_key("mini-only", **limits)
    settings.GATEWAY_HOOKS = [H + "BiggerModel"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Gateway-Key": secret})
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.forwarded["model"] == "gpt-4o"  # what the hooks made of it is in the log, forwarded or not
    if refusal is None:
        assert r.status_code == 200 and json.loads(upstream.received[-1].body)["model"] == "gpt-4o"
        return
    assert r.status_code == 403 and refusal in r.json()["error"]["message"] and upstream.received == []
    assert resp.status_code == 403 and resp.outcome == "gateway_error" and refusal in resp.error_message
    assert resp.steps[-1] == {"step": "gateway_key", "decision": "refused after the hooks, not forwarded",
                              "key": "mini-only", "reason": r.json()["error"]["message"]}


def test_a_body_a_hook_made_unreadable_is_one_refusal_of_the_key_in_the_log(settings, upstream, gateway, log_flush,
                                                                            make_key):
    """The key judged the hooks' body again and could not read it for sure: the log said two decisions ("refused after
    the hooks" and "the body cannot be read") for the one 400 the client got."""
    _, secret = make_key("mini-only", models=["gpt-4o-mini"])
    settings.GATEWAY_HOOKS = [H + "RepeatsModel"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers={**AUTH, "X-Gateway-Key": secret})
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "repeats a key" in message and upstream.received == []
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 400 and resp.error_message == message
    assert [s for s in resp.steps if s["step"] == "gateway_key"] == [
        {"step": "gateway_key", "decision": "refused after the hooks, not forwarded", "key": "mini-only",
         "reason": message}]


def test_a_hook_failing_on_a_streamed_answer_is_found_among_the_errors(settings, upstream, gateway, log_flush):
    """The client had the stream already, so it gets no 500; the row said `completed` with no error, so the
    failure was found only by opening each exchange's steps."""
    settings.GATEWAY_HOOKS = [H + "BoomOnAnswer"]
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True},
                      headers=AUTH) as s:
        assert s.status_code == 200 and b"data: [DONE]" in s.read()
        rid = s.headers["x-gateway-request-id"]
    _, resp = _exchange(log_flush, rid)
    assert resp.status_code == 200 and "data: [DONE]" in resp.body  # what the upstream said, as the client got it
    assert resp.outcome == "gateway_error" and resp.is_error
    assert resp.error_message.startswith(f"Hook {H}BoomOnAnswer failed in on_response: RuntimeError")
    assert "the client had the upstream's answer already" in resp.error_message
    assert Response.objects.filter(outcome="gateway_error", error_message__contains=H + "BoomOnAnswer").count() == 1


@pytest.mark.parametrize("hook", ["Boom", "BoomOnAnswer"])
def test_a_skipped_failure_is_said_in_the_rows_error_message(settings, upstream, gateway, log_flush, hook):
    """The exchange goes on (its outcome is how it ended); the row's message says which hook failed and that
    it was skipped (it was in the steps only)."""
    settings.GATEWAY_HOOKS = [H + hook]
    settings.GATEWAY_HOOKS_SKIP_ON_ERROR = [H + hook]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "completed" and resp.steps[0]["decision"] == "skipped after an error"
    what = "on_request" if hook == "Boom" else "on_response"
    assert resp.error_message.startswith(f"Hook {H}{hook} failed in {what}: RuntimeError")
    assert resp.error_message.endswith("(skipped: GATEWAY_HOOKS_SKIP_ON_ERROR)") and KEY not in resp.error_message


@pytest.mark.parametrize("hook", ["Hangs", "HangsAsync", "HangsOnAnswer", "HangsAsyncOnAnswer"])
def test_a_hook_past_its_time_limit_is_a_failure_naming_it(settings, upstream, gateway, log_flush, hook):
    """It held the client's request for as long as it hung (forever, for a hook stuck on a lock)."""
    settings.GATEWAY_HOOKS = [H + hook]
    settings.HOOK_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=8)
    assert time.monotonic() - started < 5
    assert r.status_code == 500 and r.headers["x-should-retry"] == "false"
    side = "on_response" if hook.endswith("OnAnswer") else "on_request"
    message = f"Hook {H}{hook} timed out in {side}: no answer within HOOK_TIMEOUT_SECONDS (0.3 s)"
    assert r.json()["error"]["message"] == message
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "gateway_error" and resp.error_message.startswith(message)
    assert resp.steps[-1]["decision"] == "error" and resp.steps[-1]["hook"] == H + hook
    assert len(upstream.received) == (1 if side == "on_response" else 0)
    if side == "on_response":  # the upstream's answer stays logged as it came
        assert resp.status_code == 200 and json.loads(resp.body)["object"] == "chat.completion"


def test_hung_sync_hook_calls_do_not_starve_the_hooks_threads(settings, upstream, gateway, log_flush, monkeypatch):
    """A hung call kept its thread, and the pool starts at most THREADS_MAX: once that many had hung, every later
    sync hook call waited in the queue and timed out, even for a request the hook answers at once."""
    monkeypatch.setattr(hooks._THREADS, "THREADS_MAX", 2)
    settings.GATEWAY_HOOKS = [H + "HangsOnModel"]
    settings.HOOK_TIMEOUT_SECONDS = 0.3
    for _ in range(2):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": "hang"}, headers=AUTH, timeout=8)
        assert r.status_code == 500 and "timed out in on_request" in r.json()["error"]["message"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=8)
    assert r.status_code == 200, r.text


def test_a_skipped_hook_past_its_time_limit_changes_nothing_afterwards(settings, upstream, gateway, log_flush):
    """A sync hook cannot be stopped: it wakes after the gateway gave up on it and writes to its exchange. Those
    writes went upstream, to the client and into the log with the next hook's changes."""
    settings.GATEWAY_HOOKS = [H + "HangsThenWrites", H + "AfterTheHung"]
    settings.GATEWAY_HOOKS_SKIP_ON_ERROR = [H + "HangsThenWrites"]
    settings.HOOK_TIMEOUT_SECONDS = 0.3
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=8)
    assert r.status_code == 200  # it did write, late:
    assert sample_hooks.late_written.is_set() and sample_hooks.late_written_answer.is_set()
    got = upstream.received[-1]
    assert got.header("x-after") == "1" and got.header("x-late") is None and json.loads(got.body) == CHAT
    assert r.json()["choices"][0]["message"]["content"].startswith("after")  # the next hook's change only
    assert "late" not in r.text
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert ["X-After", "1"] in resp.forwarded["headers"]
    assert resp.forwarded["body_unchanged"] is True and "x-late" not in json.dumps(resp.forwarded).lower()
    metadata = next(s["metadata"] for s in resp.steps if s.get("decision") == "metadata")
    assert metadata == {"before the hang": True, "tags": ["before the hang"]}  # its late appends too are ignored
    skipped = [(s["hook"], s["error"]) for s in resp.steps if s.get("decision") == "skipped after an error"]
    timed_out = f"Hook {H}HangsThenWrites timed out in %s: no answer within HOOK_TIMEOUT_SECONDS (0.3 s)"
    assert skipped == [(H + "HangsThenWrites", timed_out % "on_request"),
                       (H + "HangsThenWrites", timed_out % "on_response")]
    assert resp.outcome == "completed" and (timed_out % "on_request") in resp.error_message


def test_a_hooks_answer_with_cookies_reaches_the_client_and_the_log_with_them(settings, upstream, gateway, log_flush):
    """Django keeps cookies apart from the headers: the log's headers had no Set-Cookie the client got."""
    settings.GATEWAY_HOOKS = [H + "SetsCookies"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and upstream.received == []
    cookies = r.headers.get_list("set-cookie")
    assert len(cookies) == 2 and r.cookies["session"] == "s3cr3t-session-value" and r.cookies["theme"] == "dark"
    assert "HttpOnly" in cookies[0]
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    logged = [v for k, v in resp.headers if k.lower() == "set-cookie"]
    assert len(logged) == 2 and logged[1].startswith("theme=") and "HttpOnly" in logged[0]
    assert "s3cr3t-session-value" not in json.dumps(resp.headers)  # a cookie's value is masked, as a request's


def test_a_hooks_answer_with_an_httpstatus_is_sent(settings, upstream, gateway, log_flush):
    # HTTPStatus.FORBIDDEN is an int (an IntEnum) that any server sends: the check of the answer's status took it
    # for no int, and the hook's refusal became the gateway's 500 naming the hook.
    settings.GATEWAY_HOOKS = [H + "EnumStatus"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 403 and r.json() == {"error": "no"} and upstream.received == []
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 403


@pytest.mark.parametrize("model", ["zero", "big", "text", "informational"])
def test_a_hooks_answer_with_a_status_no_server_sends_is_a_failure_naming_it(settings, upstream, gateway, log_flush,
                                                                            model):
    settings.GATEWAY_HOOKS = [H + "BadStatus"]
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "model": model}, headers=AUTH)
    assert r.status_code == 500 and upstream.received == []
    assert r.json()["error"]["message"].startswith(f"Hook {H}BadStatus failed in on_request: ValueError: on_request "
                                                   "answered with status")
    assert "Traceback" not in r.text
    _, resp = _exchange(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "gateway_error" and resp.status_code == 500
