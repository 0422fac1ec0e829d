"""The hold queue on a real server with two workers: released by `manage.py hold decide` (another process),
each rejection as the official SDKs see the real provider's, the timeout, a client leaving while held.

Needs real seconds: two worker processes start, decisions travel through the database (polled every
0.2 s), and one request is left to its HOLD_TIMEOUT_SECONDS (10 s).
"""

import json
import socket
import subprocess
import sys
import time

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.hold.conftest import Background, until
from tests.procs import ROOT, GatewayProcess, db_rows, migrated_copy, proc_env, sqlite_only

pytestmark = [sqlite_only]

KEY = "sk-" + "holdPROCkey0123456789abcdefXYZ"
GEMINI_KEY = "AIza" + "h" * 35
TIMEOUT_S = 10  # long enough for twelve calls to be held and decided by two manage.py runs on a busy machine


def _manage(data, mock_url, *args: str, code: str | None = None) -> str:
    """Run manage.py against the gateway's database (its own process, as an operator would)."""
    argv = [sys.executable, "manage.py", *args] if code is None else [sys.executable, "manage.py", "shell", "-c", code]
    done = subprocess.run(argv, cwd=ROOT, env=proc_env(data, mock_url), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _waiting(db) -> list[str]:
    return [r[0] for r in db_rows(db, "SELECT id FROM hold_requests WHERE state = 'waiting' AND decision = '' "
                                      "ORDER BY held_at")]


@pytest.fixture
def server(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    url = mock_upstream.url
    gw = GatewayProcess(data, url, workers=2, ANTHROPIC_UPSTREAM_URL=url, GEMINI_UPSTREAM_URL=url,
                       HOLD_TIMEOUT_SECONDS=str(TIMEOUT_S))
    mock_upstream.mock.received.clear()
    yield gw, data, db
    gw.stop()


def _clients(gw):
    return {
        "openai": openai.OpenAI(api_key=KEY, base_url=f"{gw.url}/v1", max_retries=0),
        "anthropic": anthropic.Anthropic(api_key=KEY, base_url=f"{gw.url}/anthropic", max_retries=0),
        "gemini": genai.Client(api_key=GEMINI_KEY, http_options=genai_types.HttpOptions(base_url=f"{gw.url}/gemini")),
    }


def _call(clients, provider: str, tag: str):
    """One chat call per SDK; the prompt carries a tag so the test can tell which request was held."""
    if provider == "openai":
        return lambda: clients["openai"].chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": tag}])
    if provider == "anthropic":
        return lambda: clients["anthropic"].messages.create(
            model="claude-3-5-haiku-latest", max_tokens=20, messages=[{"role": "user", "content": tag}])
    return lambda: clients["gemini"].models.generate_content(model="gemini-2.0-flash", contents=tag)


def _check(provider: str, decision: str, call: Background) -> None:
    """What each SDK does with each decision: what it does against the real provider."""
    err, result = call.error, call.result
    if decision == "approve":
        assert err is None, err
        return
    if provider in ("openai", "anthropic"):
        sdk = openai if provider == "openai" else anthropic
        if decision == "reject-500":
            assert isinstance(err, sdk.InternalServerError) and err.status_code == 500
            return
        assert isinstance(err, sdk.BadRequestError) and err.status_code == 400
        if decision == "content-policy" and provider == "openai":
            assert err.code == "content_policy_violation"
        if decision == "content-policy" and provider == "anthropic":
            assert "Output blocked by content filtering policy" in err.message
        return
    if decision == "reject-400":
        assert isinstance(err, genai_errors.ClientError) and err.code == 400
    elif decision == "reject-500":
        assert isinstance(err, genai_errors.ServerError) and err.code == 500
    else:  # Gemini answers a blocked prompt with 200: no text, and prompt_feedback saying why
        assert err is None, err
        assert result.text is None and result.prompt_feedback.block_reason == genai_types.BlockedReason.SAFETY


def test_two_workers_decisions_sdks_timeout_and_abort(server, mock_upstream):
    gw, data, db = server
    assert _manage(data, mock_upstream.url, "hold", "on").startswith("hold: on (every request)")
    time.sleep(1.2)  # the documented bound: every worker reads the switch within a second
    clients = _clients(gw)
    decisions = ("approve", "reject-400", "reject-500", "content-policy")
    calls = {}
    for provider in ("openai", "anthropic", "gemini"):
        for decision in decisions:
            tag = f"{provider}:{decision}"
            calls[tag] = Background(_call(clients, provider, tag))
    ids = until(lambda: (w := _waiting(db)) and len(w) == len(calls) and w, timeout=20, what="every call held")
    bodies = dict(db_rows(db, "SELECT id, body FROM hold_requests"))
    instances = {r[0] for r in db_rows(db, "SELECT DISTINCT instance FROM hold_requests")}
    tag_of = {rid: next(t for t in calls if t in bodies[rid]) for rid in ids}
    assert mock_upstream.mock.received == []  # nothing forwarded while held

    # One decision by the documented command line; the rest through the same command in one process.
    first = ids[0]
    out = _manage(data, mock_upstream.url, "hold", "decide", first, tag_of[first].split(":")[1])
    assert out.strip() == f"{first}: {tag_of[first].split(':')[1]}"
    script = "; ".join(f"call_command('hold', 'decide', {rid!r}, {tag_of[rid].split(':')[1]!r})" for rid in ids[1:])
    _manage(data, mock_upstream.url, code="from django.core.management import call_command; " + script)
    for tag, call in calls.items():
        call.wait(20)
        _check(*tag.split(":"), call)
    assert len(mock_upstream.mock.received) == 3  # only the approved ones went upstream
    print(f"held by {len(instances)} worker(s): {sorted(instances)}")

    # The timeout approves; a client that leaves while held is logged and never forwarded.
    timed = Background(_call(clients, "openai", "timeout"))
    sock = socket.create_connection(("127.0.0.1", gw.port))
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "leaving"}]}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    until(lambda: len(_waiting(db)) == 2, timeout=10, what="two more held")
    sock.close()
    started = time.monotonic()
    timed.wait(TIMEOUT_S + 10)
    assert timed.error is None and time.monotonic() - started < TIMEOUT_S + 3
    leaving = until(lambda: db_rows(db, "SELECT r.outcome, r.error_message, r.held_ms FROM responses r JOIN requests q "
                                        "ON q.id = r.request_id WHERE q.body LIKE '%leaving%'"), timeout=15,
                    what="the abort logged")
    assert leaving[0][0] == "client_aborted" and "while held" in leaving[0][1] and leaving[0][2] > 0
    assert not any(b"leaving" in r.body for r in mock_upstream.mock.received)
    rows = db_rows(db, "SELECT decided_by, state FROM hold_requests WHERE body LIKE '%timeout%'")
    assert rows == [("timeout", "released")]
    steps = until(lambda: db_rows(db, "SELECT r.steps, r.held_ms, r.duration_ms FROM responses r JOIN requests q "
                                      "ON q.id = r.request_id WHERE q.body LIKE '%\"timeout\"%'"), timeout=15,
                  what="the timed-out exchange logged")
    step = json.loads(steps[0][0])[-1]
    assert step["decision"] == "approve" and step["by"] == "timeout" and steps[0][1] >= TIMEOUT_S * 1000
    assert steps[0][2] < 1000  # the upstream's time, without the hold
    assert _manage(data, mock_upstream.url, "hold", "off").strip() == "hold: off"
