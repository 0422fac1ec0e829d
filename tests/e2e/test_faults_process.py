"""Process faults on a real uvicorn: SIGTERM (graceful, bounded by SHUTDOWN_GRACE_SECONDS) and SIGKILL."""

import json
import signal
import socket
import threading
import time

import httpx
import pytest

from tests.e2e.faults import AUTH, CHAT
from tests.procs import GatewayProcess, db_rows, exchanges_read, migrated_copy, sqlite_only
from tests.e2e.faults import wait_until

pytestmark = sqlite_only


class Call(threading.Thread):
    """One client exchange running in the background; keeps what it got."""

    def __init__(self, url: str, headers: dict, body: dict) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.body = url, headers, body
        self.status: int | None = None
        self.request_id = ""
        self.cache: str | None = None  # its X-Gateway-Cache
        self.text = ""
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            with httpx.stream("POST", self.url, json=self.body, headers={**AUTH, **self.headers}, timeout=30) as r:
                self.status, self.request_id = r.status_code, r.headers["x-gateway-request-id"]
                self.cache = r.headers.get("x-gateway-cache")
                for text in r.iter_text():
                    self.text += text
        except httpx.HTTPError as exc:
            self.error = exc


def _refused(url: str) -> bool:
    """True once a new connection to the gateway is refused."""
    try:
        httpx.post(url, json=CHAT, headers=AUTH, timeout=5)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        # Refused, or (racing the listener's close) queued in its backlog and then reset unanswered.
        return True
    return False


def test_sigterm_lets_inflight_finish_within_grace(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, SHUTDOWN_GRACE_SECONDS="3")
    url = f"{gw.url}/v1/chat/completions"
    mock_upstream.mock.received.clear()
    try:
        streamed = Call(url, {"x-mock-events": "8", "x-mock-delay-ms": "150"}, {**CHAT, "stream": True})  # ~1.4 s
        slow = Call(url, {"x-mock-fault": "stall", "x-mock-stall-s": "1.5"}, CHAT)
        endless = Call(url, {"x-mock-events": "100", "x-mock-delay-ms": "150"}, {**CHAT, "stream": True})  # 15 s
        assert wait_until(lambda: len(mock_upstream.mock.received) == 3, 10), "exchanges did not start"
        signalled = time.monotonic()
        gw.signal(signal.SIGTERM)
        # No new requests once shutdown began: the listening socket closes.
        assert wait_until(lambda: _refused(url), 5), "the gateway still accepts connections after SIGTERM"
        code = gw.wait(timeout=20)
        exited = time.monotonic() - signalled
    finally:
        gw.stop()
    for call in (streamed, slow, endless):
        call.join(10)
    assert code in (0, -signal.SIGTERM), gw.stderr()
    assert exited < 3 + 4, f"shutdown took {exited:.1f} s"  # grace, then a prompt exit
    # In-flight exchanges that fit in the grace finished normally.
    assert streamed.error is None and streamed.status == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert slow.error is None and slow.status == 200 and "Hello!" in slow.text
    # The one that did not was cut at the end of the grace period.
    assert endless.status == 200 and "[DONE]" not in endless.text
    # Every log write was flushed before exit: the database holds all three, with their end (and
    # a probe that got in before the listening socket closed, if one did, complete too).
    logged = exchanges_read(db)
    outcomes = {rid: row["response"] and row["response"]["outcome"] for rid, row in logged.items()}
    ours = {streamed.request_id: "completed", slow.request_id: "completed", endless.request_id: "interrupted"}
    assert {rid: outcomes.get(rid) for rid in ours} == ours
    assert all(outcomes[rid] == "completed" for rid in set(outcomes) - set(ours))
    interrupted = logged[endless.request_id]["response"]
    assert "SHUTDOWN_GRACE_SECONDS" in interrupted["error"] and 2500 < interrupted["duration_ms"] < 6000
    assert list((data / "journal").glob("*.jsonl")) == []  # nothing left waiting
    assert "Traceback" not in gw.stderr()


def test_requests_held_or_unanswered_past_the_shutdown_grace_get_a_503(tmp_path, tmp_path_factory, mock_upstream):
    # It got uvicorn's bare 500 ("ASGI callable returned without starting response"), without a request id.
    import subprocess
    import sys

    from tests.procs import ROOT, proc_env

    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, SHUTDOWN_GRACE_SECONDS="1")
    try:
        subprocess.run([sys.executable, "manage.py", "hold", "on", "--path", "/v1/embeddings"], cwd=ROOT, check=True,
                       env=proc_env(data, mock_upstream.url), capture_output=True, timeout=60)
        time.sleep(1.0)  # every worker reads the switch at least twice a second
        held = Call(f"{gw.url}/v1/embeddings", {}, {"model": "text-embedding-3-small", "input": "hi"})
        # A body still arriving: 10 of its 69 bytes sent, then nothing (it kept the server up until it gave up).
        uploading = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        uploading.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-x\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 69\r\n\r\n{\"model\": ")
        stalled = {"x-mock-fault": "stall", "x-mock-stall-s": "20", "X-Gateway-Cache": "60"}
        waiting = Call(f"{gw.url}/v1/chat/completions", stalled, CHAT)
        # A small answer half arrived (collected whole before anything is sent): a 503 too, not uvicorn's 500.
        collecting = Call(f"{gw.url}/v1/chat/completions", {"x-mock-fault": "stall-body", "x-mock-stall-s": "20"},
                          CHAT)
        assert wait_until(lambda: db_rows(db, "SELECT count(*) FROM hold_requests") == [(1,)], 10)
        assert wait_until(lambda: len(mock_upstream.mock.received) >= 2, 10)
        # The same request again: it waits for the first one's answer to be stored, never forwarded.
        waiter = Call(f"{gw.url}/v1/chat/completions", stalled, CHAT)
        time.sleep(0.5)
        gw.signal(signal.SIGTERM)
        code = gw.wait(timeout=20)
    finally:
        gw.stop()
    held.join(10)
    waiting.join(10)
    waiter.join(10)
    collecting.join(10)
    answer = b""
    while chunk := uploading.recv(65536):
        answer += chunk
    uploading.close()
    assert answer.startswith(b"HTTP/1.1 503") and b"request body was still arriving (10 bytes received)" in answer
    assert code in (0, -signal.SIGTERM), gw.stderr()
    assert held.error is None and held.status == 503 and held.request_id
    assert "shutting down" in json.loads(held.text)["error"]["message"]
    # Forwarded, still waiting for the upstream's headers: a 503 too, saying the upstream may have it.
    assert waiting.error is None and waiting.status == 503 and waiting.request_id
    assert "may have received the request" in json.loads(waiting.text)["error"]["message"]
    assert waiter.error is None and (waiter.status, waiter.cache) == (503, "MISS"), (waiter.status, waiter.cache)
    assert "was not forwarded" in json.loads(waiter.text)["error"]["message"]
    assert collecting.error is None and collecting.status == 503 and collecting.request_id
    assert "shut down while the upstream's answer was arriving" in json.loads(collecting.text)["error"]["message"]
    logged = exchanges_read(db)
    for call in (held, waiting, waiter, collecting):
        row = logged[call.request_id]["response"]
        assert (row["status"], row["outcome"]) == (503, "interrupted")
    [(steps,)] = db_rows(db, "SELECT steps FROM responses WHERE request_id = ?", (held.request_id,))
    assert "gateway shut down while held" in steps and "client disconnected" not in steps
    [(steps,)] = db_rows(db, "SELECT steps FROM responses WHERE request_id = ?", (waiter.request_id,))
    assert "waited for an identical request" in steps
    assert "without starting response" not in gw.stderr()


def test_a_request_still_waiting_for_an_upstream_connection_at_shutdown_was_never_sent(tmp_path, tmp_path_factory,
                                                                                         mock_upstream):
    """With every upstream connection busy, a request that waited for one when the grace ran out got "the upstream
    may have received the request": it cannot have, and a client may not retry after that."""
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, SHUTDOWN_GRACE_SECONDS="1", UPSTREAM_MAX_CONNECTIONS="1",
                        UPSTREAM_POOL_TIMEOUT="30")
    before = len(mock_upstream.mock.received)  # the mock serves the whole module
    try:
        sent = Call(f"{gw.url}/v1/chat/completions", {"x-mock-fault": "stall", "x-mock-stall-s": "20"}, CHAT)
        assert wait_until(lambda: len(mock_upstream.mock.received) > before, 10)
        queued = Call(f"{gw.url}/v1/chat/completions", {}, {**CHAT, "user": "queued"})
        time.sleep(0.5)  # it waits for the one connection
        gw.signal(signal.SIGTERM)
        gw.wait(timeout=20)
    finally:
        gw.stop()
    sent.join(10)
    queued.join(10)
    assert sent.status == 503 and "may have received the request" in json.loads(sent.text)["error"]["message"]
    assert queued.status == 503 and queued.request_id
    assert "was not forwarded: retry it" in json.loads(queued.text)["error"]["message"]
    assert len(mock_upstream.mock.received) == before + 1
    row = exchanges_read(db)[queued.request_id]["response"]
    assert (row["status"], row["outcome"]) == (503, "interrupted")
    assert "was not forwarded" in row["error"]


def test_sigkill_midflight_marked_interrupted_at_next_start(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url)
    url = f"{gw.url}/v1/chat/completions"
    mock_upstream.mock.received.clear()
    try:
        done = Call(url, {}, CHAT)
        done.join(10)
        stalled = Call(url, {"x-mock-fault": "stall", "x-mock-stall-s": "20"}, CHAT)
        streaming = Call(url, {"x-mock-events": "100", "x-mock-delay-ms": "100"}, {**CHAT, "stream": True})
        assert wait_until(lambda: len(mock_upstream.mock.received) == 3, 10)
        # Both requests are durable before the upstream answers (here: already rows).
        assert wait_until(lambda: len(exchanges_read(db)) == 3, 10)
        # More than PROGRESS_EVERY (0.5 s) into the stream: its progress file, with its status, is on disk (a
        # stream killed sooner keeps only its request row: 0.3 s here failed whenever the rows came at once).
        time.sleep(1.0)
    finally:
        gw.kill()
    stalled.join(10)
    streaming.join(10)
    assert stalled.error is not None and streaming.error is not None  # their connections died
    before = exchanges_read(db)
    assert before[done.request_id]["response"]["outcome"] == "completed"
    assert sum(1 for row in before.values() if row["response"] is None) == 2  # left pending by the crash
    assert len(list((data / "journal").glob("*.jsonl"))) == 1

    again = GatewayProcess(data, mock_upstream.url)
    try:
        after = wait_until(lambda: (lambda rows: rows if all(r["response"] for r in rows.values()) else None)(
            exchanges_read(db)), 15)
        assert after, "unfinished requests were not marked at the next start"
        outcomes = sorted(row["response"]["outcome"] for row in after.values())
        assert outcomes == ["completed", "interrupted", "interrupted"]
        # The stalled one never had an answer (nor its id): the one neither done nor streaming.
        [stalled_row] = [row for rid, row in after.items() if rid not in (done.request_id, streaming.request_id)]
        assert stalled_row["response"]["is_error"] and stalled_row["response"]["status"] is None
        assert "stopped before this exchange ended" in stalled_row["response"]["error"]
        # The stream had begun: its status is kept (the next test checks its body).
        assert after[streaming.request_id]["response"]["status"] == 200
        assert "stopped mid-answer" in after[streaming.request_id]["response"]["error"]
        assert len(after) == 3  # the replayed journal made no duplicates
        # The dead process's journal is gone; only the new process's own remains.
        assert wait_until(lambda: len(list((data / "journal").glob("*.jsonl"))) == 1, 5)
        assert httpx.post(url.replace(gw.url, again.url), json=CHAT, headers=AUTH, timeout=10).status_code == 200
    finally:
        again.stop()


def test_sigkill_mid_stream_keeps_the_status_headers_and_events_the_client_had(tmp_path, tmp_path_factory,
                                                                                mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url)
    url = f"{gw.url}/v1/chat/completions"
    try:
        streaming = Call(url, {"x-mock-events": "200", "x-mock-delay-ms": "50"}, {**CHAT, "stream": True})
        assert wait_until(lambda: streaming.text.count("data: ") >= 20, 10)
        had = streaming.text
        time.sleep(1.0)  # more than PROGRESS_EVERY (0.5 s): what the client had then is on disk
    finally:
        gw.kill()
    streaming.join(10)
    assert streaming.status == 200 and streaming.error is not None  # its connection died mid-answer
    assert list((data / "journal").glob("*.parts/*.jsonl"))  # the answer's progress, left by the dead worker

    again = GatewayProcess(data, mock_upstream.url)
    try:
        assert wait_until(lambda: (exchanges_read(db).get(streaming.request_id) or {}).get("response"), 15)
        row = exchanges_read(db)[streaming.request_id]["response"]
        body, headers, offsets, result = db_rows(db, "SELECT body, headers, event_offsets_ms, stream_result "
                                                     "FROM responses WHERE request_id = ?",
                                                 (streaming.request_id,))[0]
        assert wait_until(lambda: not list((data / "journal").glob("*.parts/*.jsonl")), 5)  # removed once logged
    finally:
        again.stop()
    assert (row["status"], row["outcome"], row["is_error"]) == (200, "interrupted", True)
    assert "stopped mid-answer" in row["error"]
    assert ["content-type", "text/event-stream"] in [[k.lower(), v.split(";")[0]] for k, v in json.loads(headers)]
    # Every event the client had a second before the kill is in the log, as it was relayed, and no more
    # than the client could have had: the log's body is a prefix of the stream.
    assert body.startswith(had[:had.rfind("\n\n") + 2]) and streaming.text.startswith(body)
    assert len(json.loads(offsets)) == body.count("\n\n") >= 20
    assert json.loads(result)["events"] >= 20  # reassembled like any stream
    assert len(exchanges_read(db)) == 1
