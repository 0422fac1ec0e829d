"""Log-store faults: a database locked by another process, a full payload store or journal disk."""

import base64
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from testing.media import PNG
from tests.e2e.faults import AUTH, CHAT, exchange_get, response_files
from tests.procs import GatewayProcess, db_rows, exchanges_read, migrated_copy, sqlite_only
from tests.e2e.faults import wait_until

LOCKER = """
import sqlite3, sys, time
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
con.execute("BEGIN IMMEDIATE")   # the write lock: every other writer must wait
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.execute("COMMIT")
"""


def _exchange_send(url: str, kind: str) -> httpx.Response:
    """One exchange of a kind the log treats differently."""
    if kind == "edit":  # multipart upload: split into part files by the log writer
        return httpx.post(f"{url}/v1/images/edits", headers=AUTH, timeout=20,
                          files={"image": ("in.png", PNG + b"\x00" * 500, "image/png")},
                          data={"model": "gpt-image-1", "prompt": "bluer"})
    if kind == "stream":
        return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=20, json={**CHAT, "stream": True})
    if kind == "image":  # b64_json image cut out into a file
        return httpx.post(f"{url}/v1/images/generations", headers=AUTH, timeout=20,
                          json={"model": "gpt-image-1", "prompt": "red", "response_format": "b64_json"})
    if kind == "speech":  # binary answer kept as a file
        return httpx.post(f"{url}/v1/audio/speech", headers={**AUTH, "x-mock-size": "70000"}, timeout=20,
                          json={"model": "tts-1", "input": "x", "voice": "alloy"})
    return httpx.post(f"{url}/v1/chat/completions", headers=AUTH, timeout=20, json=CHAT)


@sqlite_only
def test_database_locked_by_another_process(tmp_path, tmp_path_factory, mock_upstream):
    db = migrated_copy(tmp_path / "data", tmp_path_factory)
    gw = GatewayProcess(tmp_path / "data", mock_upstream.url, SQLITE_BUSY_TIMEOUT="1")
    try:
        first = _exchange_send(gw.url, "plain")
        assert wait_until(lambda: exchanges_read(db).get(first.headers["x-gateway-request-id"], {}).get("response"), 10)

        locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), "10"], stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout.readline().strip() == "locked"
            locked_at = time.monotonic()
            kinds = ["edit", "plain", "stream", "image", "speech", "edit", "plain"]
            answers = [_exchange_send(gw.url, kind) for kind in kinds]
            # Proxying goes on: every client got its full answer while the log store was locked.
            assert [a.status_code for a in answers] == [200] * len(kinds), gw.stderr()[-4000:]
            assert answers[3].json()["data"][0]["b64_json"] == base64.b64encode(PNG).decode()
            assert len(answers[4].content) == 70000
            assert time.monotonic() - locked_at < 8, "exchanges waited for the database"
            ids = [a.headers["x-gateway-request-id"] for a in answers]
            logged = exchanges_read(db)
            assert not set(ids) & set(logged)  # nothing of them is in the database yet...
            health = httpx.get(f"{gw.url}/health", timeout=10).json()
            assert health["status"] == "ok" and health["pending_log_records"] == 2 * len(kinds)  # ...all waiting
            assert locker.wait(timeout=20) == 0
        finally:
            locker.kill()

        # Written once the lock is gone: every exchange, with its response, in the order sent.
        done = wait_until(lambda: (lambda rows: rows if all((rows.get(i) or {}).get("response") for i in ids)
                                 else None)(exchanges_read(db)), 20)
        assert done, f"records not written after the lock was released:\n{gw.stderr()[-3000:]}"
        assert [done[i]["rowid"] for i in ids] == sorted(done[i]["rowid"] for i in ids)
        assert len(done) == len(kinds) + 1  # exactly once (ids are primary keys; no extra rows)
        assert all(done[i]["response"]["outcome"] == "completed" for i in ids)
        assert db_rows(db, "SELECT count(*) FROM responses")[0][0] == len(kinds) + 1
        health = wait_until(lambda: (lambda h: h if h["pending_log_records"] == 0 else None)(
            httpx.get(f"{gw.url}/health", timeout=10).json()), 5)
        assert health, "pending count did not go back to 0"
        # The derived files (upload parts, the cut-out image, the audio) exist and each has its row.
        files = db_rows(db, "SELECT request_id, file_path, role, size FROM binary_files")
        by_req = {}
        for rid, path, role, size in files:
            assert (tmp_path / "data" / "files" / path).stat().st_size == size
            by_req.setdefault(rid, []).append(role)
        assert sorted(by_req[ids[0]]) == sorted(by_req[ids[5]]) == ["request_part", "response_image"]
        assert by_req[ids[3]] == ["response_image"] and by_req[ids[4]] == ["response_body"]
        stored = {p.relative_to(tmp_path / "data" / "files").as_posix()
                  for p in (tmp_path / "data" / "files").rglob("*") if p.is_file()}
        assert stored == {row[1] for row in files}  # no orphan files
        body = json.loads(db_rows(db, "SELECT body FROM requests WHERE id = ?", (ids[0],))[0][0])
        assert body["fields"]["prompt"] == "bluer" and body["complete"]
        assert "database is locked" in gw.stderr()  # it really was
    finally:
        gw.stop()
    assert "Traceback" not in gw.stderr()


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 64 KiB filesystem (tmpfs); skipped where mounting is not permitted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def full_spool(tiny_disk, settings):
    """The spool folder (where the proxy writes bodies it keeps as files) on the tiny disk."""
    settings.SPOOL_DIR = tiny_disk
    return tiny_disk


@pytest.mark.django_db(transaction=True)
def test_disk_full_binary_answer_still_reaches_client(full_spool, fast_gateway, log_flush):
    size = 300_000  # more than the whole disk
    r = httpx.post(f"{fast_gateway.url}/v1/audio/speech", headers={**AUTH, "x-mock-size": str(size)}, timeout=20,
                   json={"model": "tts-1", "input": "x", "voice": "alloy"})
    assert r.status_code == 200 and len(r.content) == size
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 200 and resp.body_size == size and resp.body is None
    assert "response body file not saved" in resp.error_message and "No space left" in resp.error_message
    assert response_files(resp) == []  # no row pointing at a truncated file...
    assert [p for p in full_spool.rglob("*") if p.is_file()] == []  # ...and no partial file left behind


@pytest.mark.django_db(transaction=True)
def test_disk_full_upload_is_still_forwarded(full_spool, fast_gateway, upstream, log_flush):
    upload = PNG + b"\x01" * 100_000
    r = httpx.post(f"{fast_gateway.url}/v1/images/edits", headers=AUTH, timeout=20,
                   files={"image": ("in.png", upload, "image/png")}, data={"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 200 and r.json()["data"][0]["b64_json"]
    assert upstream.received[-1].body.count(upload) == 1  # the upstream got the whole upload
    req, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert req.body_size == len(upstream.received[-1].body)
    assert "request body file not saved" in resp.error_message and "No space left" in resp.error_message


@pytest.mark.django_db(transaction=True)
def test_disk_full_journal_does_not_fail_the_exchange(tiny_disk, settings, upstream, transactional_db, log_flush):
    from tests.conftest import LiveGateway

    (tiny_disk / "journal").mkdir()
    fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError):  # fill the disk to the last byte
        for _ in range(1000):
            os.write(fd, b"\x00" * 512)
    os.close(fd)
    settings.JOURNAL_DIR = tiny_disk / "journal"
    live = LiveGateway()
    try:
        r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, json=CHAT, timeout=20)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])  # logged all the same
        assert resp.outcome == "completed" and resp.body == r.text
    finally:
        live.stop()
