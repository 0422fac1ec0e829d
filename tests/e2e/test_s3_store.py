"""Payload files in an S3-compatible bucket (FILE_STORAGE_URL=s3://...): a real gateway process, moto's
S3 server, the official openai SDK. The files land in the bucket with the right sha256, the admin
serves them back, prune_logs deletes them, and a store that goes away loses nothing."""

import base64
import hashlib
import subprocess
import sys

import httpx
import openai
import pytest

from testing.media import PNG
from tests.e2e.faults import KEY, wait_until
from tests.procs import ROOT, GatewayProcess, db_rows, exchanges_read, migrated_copy, proc_env, sqlite_only

pytestmark = sqlite_only
PREFIX = "gw"
ADMIN = {"DJANGO_SUPERUSER_USERNAME": "ops", "DJANGO_SUPERUSER_PASSWORD": "pw-for-tests-only",
         "DJANGO_SUPERUSER_EMAIL": "ops@example.com"}


def _traffic(url: str) -> dict[str, str]:
    """Chat, an image in b64_json, speech and an image edit through the SDK: {kind: request id}."""
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    ids = {}
    chat = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    ids["chat"] = chat.headers["x-gateway-request-id"]
    image = client.images.with_raw_response.generate(model="gpt-image-1", prompt="red", response_format="b64_json")
    assert base64.b64decode(image.parse().data[0].b64_json) == PNG
    ids["image"] = image.headers["x-gateway-request-id"]
    speech = client.audio.speech.with_raw_response.create(model="tts-1", input="x", voice="alloy",
                                                          extra_headers={"x-mock-size": "70000"})
    assert len(speech.content) == 70000
    ids["speech"] = speech.headers["x-gateway-request-id"]
    edit = client.images.with_raw_response.edit(model="gpt-image-1", prompt="bluer",
                                                image=("in.png", PNG + b"\x00" * 500, "image/png"))
    assert edit.parse().data[0].b64_json
    ids["edit"] = edit.headers["x-gateway-request-id"]
    return ids


def _files_logged(db, ids: dict[str, str]) -> dict[str, list[tuple]] | None:
    """{request id: [(id, file_path, role, size, sha256)]} once every exchange and its files are in."""
    logged = exchanges_read(db)
    if not all((logged.get(i) or {}).get("response") for i in ids.values()):
        return None
    by_req: dict[str, list[tuple]] = {}
    for row in db_rows(db, "SELECT request_id, id, file_path, role, size, sha256 FROM binary_files"):
        by_req.setdefault(row[0], []).append(row[1:])
    expected = {"image": 1, "speech": 1, "edit": 2}  # the cut-out image; the audio; the upload part + image
    if any(len(by_req.get(ids[kind], [])) != n for kind, n in expected.items()):
        return None
    return by_req


def _bucket_matches(s3_server, by_req: dict[str, list[tuple]], prefix: str = PREFIX) -> None:
    """Each file row's object is in the bucket with that size and sha256, and nothing else is."""
    stored = s3_server.objects(prefix)
    rows = [row for rows in by_req.values() for row in rows]
    assert sorted(stored) == sorted(path for _, path, _, _, _ in rows)
    for _, path, _, size, sha in rows:
        assert len(stored[path]) == size and hashlib.sha256(stored[path]).hexdigest() == sha


@pytest.fixture
def s3_gateway(tmp_path, tmp_path_factory, mock_upstream, s3_server):
    """A gateway process (SQLite, its own DATA_DIR) whose payload store is the moto bucket."""
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, check=True, timeout=120,
                   env=proc_env(data, mock_upstream.url, **ADMIN), capture_output=True)
    gw = GatewayProcess(data, mock_upstream.url, **s3_server.env(PREFIX))
    gw.db = db
    yield gw
    gw.stop()


def test_files_land_in_the_bucket_are_served_and_pruned(s3_gateway, s3_server):
    gw, data = s3_gateway, s3_gateway.data_dir
    ids = _traffic(gw.url)
    by_req = wait_until(lambda: _files_logged(gw.db, ids), 20)
    assert by_req, gw.stderr()[-3000:]
    _bucket_matches(s3_server, by_req)
    assert not [p for p in (data / "files").rglob("*") if p.is_file()]  # nothing in the local folder
    assert not [p for p in (data / "spool").rglob("*") if p.is_file()]  # ...nor left in the spool

    # The admin streams a file back from the bucket.
    image_id, image_path = by_req[ids["image"]][0][:2]
    with httpx.Client(base_url=gw.url, timeout=20) as admin:
        admin.get("/admin/login/")
        admin.post("/admin/login/", data={"username": "ops", "password": ADMIN["DJANGO_SUPERUSER_PASSWORD"],
                                          "csrfmiddlewaretoken": admin.cookies["csrftoken"], "next": "/admin/"})
        served = admin.get(f"/admin/logs/request/file/{image_id}/")
        # ...and a byte range of the speech, as an <audio> element scrubbing it asks.
        speech_id, speech_path = by_req[ids["speech"]][0][:2]
        scrub = admin.get(f"/admin/logs/request/file/{speech_id}/", headers={"Range": "bytes=60000-"})
        # A HEAD through the real server (uvicorn, Django's ASGI handler) asks the bucket for the size only.
        with s3_server.recorded() as seen:
            head = admin.head(f"/admin/logs/request/file/{speech_id}/", headers={"Range": "bytes=60000-"})
    assert head.status_code == 206 and head.headers["content-range"] == "bytes 60000-69999/70000"
    assert head.headers["content-length"] == "10000" and head.content == b""
    assert [method for method, _ in seen] == ["HEAD"], seen
    assert served.status_code == 200 and served.content == PNG
    assert served.headers["content-type"] == "image/png" and served.headers["accept-ranges"] == "bytes"
    assert scrub.status_code == 206 and scrub.headers["content-range"] == "bytes 60000-69999/70000"
    assert scrub.content == s3_server.objects(PREFIX)[speech_path][60000:]

    # prune_logs deletes the objects with their rows.
    done = subprocess.run([sys.executable, "manage.py", "prune_logs", "--older-than", "0s"], cwd=ROOT, timeout=120,
                          env=proc_env(data, "http://127.0.0.1:9", **s3_server.env(PREFIX)),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "deleted 4 exchanges and 4 files" in done.stdout
    assert db_rows(gw.db, "SELECT count(*) FROM binary_files")[0][0] == 0
    assert s3_server.objects(PREFIX) == {}
    assert "Traceback" not in gw.stderr()


def test_store_down_then_up_loses_nothing(s3_gateway, s3_server):
    gw = s3_gateway
    s3_server.stop()
    ids = _traffic(gw.url)  # clients are unaffected: every answer complete (asserted inside)
    # The records wait (in the journal, their bytes in the spool folder) while the store is away.
    assert wait_until(lambda: "payload store unavailable" in gw.stderr(), 30), gw.stderr()[-3000:]
    assert not set(ids.values()) & set(exchanges_read(gw.db))
    assert httpx.get(f"{gw.url}/health", timeout=10).json()["pending_log_records"] > 0

    s3_server.start()  # moto comes back empty: the bucket is new
    by_req = wait_until(lambda: _files_logged(gw.db, ids), 30)
    assert by_req, gw.stderr()[-3000:]
    _bucket_matches(s3_server, by_req)
    logged = exchanges_read(gw.db)
    assert len(logged) == len(ids)  # exactly once
    # The exchanges whose files waited say so; nothing is missing, so they are not errors.
    for kind in ("image", "speech", "edit"):
        note = logged[ids[kind]]["response"]["error"]
        assert "payload store unavailable" in note and "files stored when it answered again" in note
        assert not logged[ids[kind]]["response"]["is_error"]
    assert not logged[ids["chat"]]["response"]["error"]
    assert not [p for p in (gw.data_dir / "spool").rglob("*") if p.is_file()]
    assert wait_until(lambda: httpx.get(f"{gw.url}/health", timeout=10).json()["pending_log_records"] == 0, 10)


def test_large_upload_goes_to_the_bucket_in_parts(s3_gateway, s3_server):
    gw = s3_gateway
    upload = PNG + hashlib.sha256(b"seed").digest() * (20 * 1024 * 1024 // 32)  # ~20 MB: three 8 MiB parts
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEY, max_retries=0, timeout=60)
    edit = client.images.with_raw_response.edit(model="gpt-image-1", prompt="x", image=("big.png", upload, "image/png"))
    rid = edit.headers["x-gateway-request-id"]
    part = wait_until(lambda: db_rows(gw.db, "SELECT file_path, size, sha256 FROM binary_files WHERE request_id = ? "
                                             "AND role = 'request_part'", (rid,)), 30)
    assert part, gw.stderr()[-3000:]
    path, size, sha = part[0]
    assert size == len(upload) and sha == hashlib.sha256(upload).hexdigest()
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"{PREFIX}/{path}")
    assert head["ContentLength"] == len(upload)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload: the body never went up in one piece
    assert s3_server.objects(PREFIX)[path] == upload  # exactly the part's bytes, not the rest of the request
