"""Two gateway instances as two hosts run them (each its own DATA_DIR, journal and ingest, two workers)
sharing one PostgreSQL database, one Redis and one S3-compatible bucket (moto) behave as one gateway:
one log holding both instances' exchanges exactly once with their files, either admin serving the
other's files, one response cache, one request limit, one hold queue; a SIGKILL of one instance
mid-burst loses nothing once it is back; and the S3 server going away during traffic on both
instances costs the clients nothing, the files arriving once it is back.

Runs on the PostgreSQL pass (marked `database`; skipped unless DATABASE_URL is PostgreSQL and Redis
answers). It creates and drops a database of its own on that server.
"""

import asyncio
import hashlib
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest
from django.conf import settings

from tests.e2e.test_gateway_keys_procs import N, _assert_exact, _burst, _key_create, needs_redis
from tests.e2e.test_s3_store import ADMIN, _bucket_matches, _traffic
from tests.hold.conftest import Background, until
from tests.procs import ROOT, GatewayProcess, proc_env

_DB = settings.DATABASES["default"]
pytestmark = [
    pytest.mark.database,
    pytest.mark.skipif(_DB["ENGINE"] != "django.db.backends.postgresql",
                       reason="two instances share a PostgreSQL log: run with DATABASE_URL=postgres://..."),
    needs_redis,
]
REDIS_URL = "redis://127.0.0.1:6379/13"
PREFIX = "shared"
# Each instance's command: exactly the gateway services' command in compose.yaml (and the one in
# docs/deploy.md; tests/e2e/test_deploy_files.py keeps them equal). Host, port and the balancer's
# address come from uvicorn's environment (UVICORN_HOST, UVICORN_PORT, UVICORN_FORWARDED_ALLOW_IPS),
# so the command itself has nothing that differs between a container and this test.
INSTANCE_COMMAND = ["uvicorn", "gateway_project.asgi:application", "--workers", "2", "--no-access-log",
                    "--no-server-header", "--no-date-header"]


def _instance(data_dir, upstream_url: str, **env: str) -> GatewayProcess:
    """One instance as compose.yaml runs it, with this environment's uvicorn (the image's is on PATH)."""
    command = [str(Path(sys.executable).with_name("uvicorn")), *INSTANCE_COMMAND[1:]]
    return GatewayProcess(data_dir, upstream_url, workers=2, command=command, **env)


def _server_url() -> str:
    user = _DB.get("USER") or "postgres"
    auth = f"{user}:{_DB['PASSWORD']}" if _DB.get("PASSWORD") else user
    return f"postgres://{auth}@{_DB.get('HOST') or '127.0.0.1'}:{_DB.get('PORT') or 5432}"


def _pg(dbname: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(f"{_server_url()}/{dbname}", autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def shared(tmp_path, mock_upstream, s3_server):
    """A fresh PostgreSQL database, migrated once; the environment both instances share."""
    name = f"gw_two_{uuid.uuid4().hex[:10]}"
    _pg("postgres", f'CREATE DATABASE "{name}"')
    env = {"DATABASE_URL": f"{_server_url()}/{name}", "CACHE_URL": REDIS_URL, "GATEWAY_ALLOW_UNKEYED": "true",
           **s3_server.env(PREFIX)}
    ops = tmp_path / "ops"  # where the operator's manage.py commands run (migrations once, keys, hold)
    ops.mkdir()
    hosts = []
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                       env=proc_env(ops, mock_upstream.url, **env), check=True, timeout=120)
        subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput"], cwd=ROOT, check=True,
                       env=proc_env(ops, mock_upstream.url, **env, **ADMIN), capture_output=True, timeout=120)
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        for host in ("host-a", "host-b"):
            (tmp_path / host).mkdir()
            hosts.append(_instance(tmp_path / host, mock_upstream.url, **env))
        yield name, env, ops, hosts  # a test that restarts an instance puts the new one in hosts
    finally:
        for h in hosts:
            h.stop()
        _pg("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(ops, mock_url: str, env: dict, *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=proc_env(ops, mock_url, **env),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _admin_get(url: str, path: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=20) as admin:
        admin.get("/admin/login/")
        admin.post("/admin/login/", data={"username": "ops", "password": ADMIN["DJANGO_SUPERUSER_PASSWORD"],
                                          "csrfmiddlewaretoken": admin.cookies["csrftoken"], "next": "/admin/"})
        return admin.get(path)


def _files(name: str) -> dict[str, list[tuple]]:
    """{request id: [(file id, file_path, role, size, sha256)]} as logged."""
    by_req: dict[str, list[tuple]] = {}
    for rid, *row in _pg(name, "SELECT request_id, id, file_path, role, size, sha256 FROM binary_files"):
        by_req.setdefault(rid.hex, []).append(tuple(row))
    return by_req


def test_two_instances_one_log_one_cache_one_limit_one_hold_queue(shared, mock_upstream, s3_server):
    name, env, ops, (a, b) = shared

    # --- one log: both instances' exchanges, each exactly once, with its files in the bucket
    ids = {}
    for host in (a, b):
        for kind, rid in _traffic(host.url).items():
            ids[f"{host.port}:{kind}"] = rid
        stream = openai.OpenAI(base_url=f"{host.url}/v1", api_key="sk-test", max_retries=0)
        with stream.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True) as answer:
            ids[f"{host.port}:stream"] = answer.headers["x-gateway-request-id"]
            assert "".join(c.choices[0].delta.content or "" for c in answer.parse() if c.choices)
    assert len(set(ids.values())) == 10

    def logged():
        rows = _pg(name, "SELECT r.id, count(resp.id) FROM requests r LEFT JOIN responses resp "
                         "ON resp.request_id = r.id GROUP BY r.id")
        done = {rid.hex: n for rid, n in rows}
        return done if all(done.get(i) == 1 for i in ids.values()) else None

    done = until(logged, timeout=30, what="every exchange in PostgreSQL with its response")
    assert set(done) == set(ids.values())  # exactly these, once each (ids are primary keys)
    files = _pg(name, "SELECT id, request_id, file_path, size, sha256 FROM binary_files")
    assert len(files) == 2 * 4  # per host: the image, the audio, the upload part and the edited image
    stored = s3_server.objects(PREFIX)
    assert sorted(stored) == sorted(f[2] for f in files)
    for _, _, path, size, sha in files:
        assert len(stored[path]) == size and hashlib.sha256(stored[path]).hexdigest() == sha
    # Either instance's admin serves the other's files.
    by_request = {rid.hex: (fid.hex, path) for fid, rid, path, _, _ in files}
    for viewer, writer in ((a, b), (b, a)):
        fid, path = by_request[ids[f"{writer.port}:image"]]
        served = _admin_get(viewer.url, f"/admin/logs/request/file/{fid}/")
        assert served.status_code == 200 and served.content == stored[path]

    # --- one cache: an answer stored through A is a hit through B, with no second upstream call
    question = [{"role": "user", "content": f"cached {name}"}]
    answers = [openai.OpenAI(base_url=f"{h.url}/v1", api_key="sk-test", max_retries=0).chat.completions
               .with_raw_response.create(model="gpt-4o-mini", messages=question,
                                         extra_headers={"X-Gateway-Cache": "600"}) for h in (a, b)]
    (stored_id, hit_id) = (r.headers["x-gateway-request-id"] for r in answers)
    assert [r.headers["x-gateway-cache"] for r in answers] == ["MISS", "HIT"]
    assert answers[1].headers["x-gateway-cache-source"] == stored_id and answers[1].content == answers[0].content
    assert sum(f"cached {name}".encode() in r.body for r in mock_upstream.mock.received) == 1
    cached = until(lambda: (rows := _pg(name, "SELECT r.id, resp.cache_hit, resp.cache_source FROM requests r JOIN "
                                              "responses resp ON resp.request_id = r.id WHERE r.id IN (%s, %s)",
                                        (stored_id, hit_id))) and len(rows) == 2 and rows,
                   timeout=30, what="both cache exchanges logged")
    logged = {rid.hex: (hit, source and source.hex) for rid, hit, source in cached}
    assert logged == {stored_id: (False, None), hit_id: (True, stored_id)}

    # --- one limit: a key allowed N requests a minute gets exactly N across both instances
    secret = _key_create(ops, mock_upstream.url, "shared-limit", **env)
    _assert_exact(asyncio.run(_burst([a.url, b.url], secret, 3 * N)))

    # --- one hold queue: held on B, released by `hold decide` run against A's configuration
    assert _manage(ops, mock_upstream.url, env, "hold", "on", "--path", "/v1/chat/").startswith("hold: on")
    time.sleep(1.2)  # the documented bound: every worker reads the switch within a second
    client = openai.OpenAI(base_url=f"{b.url}/v1", api_key="sk-test", max_retries=0)
    call = Background(lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "held on b"}]))
    held = until(lambda: _manage(a.data_dir, mock_upstream.url, env, "hold", "list").split(), timeout=20,
                 what="the request held")
    assert len(held) == 1 and not call.done
    _manage(a.data_dir, mock_upstream.url, env, "hold", "decide", held[0], "approve")
    call.wait(20)
    assert call.error is None and call.result.choices[0].message.content
    _manage(ops, mock_upstream.url, env, "hold", "off")
    for host in (a, b):
        assert "Traceback" not in host.stderr()


def test_sigkill_of_one_instance_mid_burst_loses_nothing(shared, mock_upstream):
    from tests.e2e.faults import AUTH, CHAT
    from tests.e2e.test_faults_process import Call

    name, env, ops, (a, b) = shared
    slow = {"x-mock-events": "20", "x-mock-delay-ms": "100"}  # two-second streams: in flight at the kill
    calls = [Call(f"{h.url}/v1/chat/completions", slow, {**CHAT, "stream": True}) for h in (a, b) * 6]
    until(lambda: all(c.request_id for c in calls), timeout=20, what="every stream started")
    a.kill()
    for c in calls:
        c.join(30)
    killed = {c.request_id for c in calls[0::2]}
    survived = {c.request_id for c in calls[1::2]}
    assert all(c.error is not None or len(c.text) < 200 for c in calls[0::2])  # cut off by the kill
    assert all(c.error is None and "[DONE]" in c.text for c in calls[1::2])

    # A's host comes back (same DATA_DIR): its journal is replayed into the shared log.
    back = _instance(a.data_dir, mock_upstream.url, **env)
    shared[3][0] = back
    try:
        def outcomes():
            rows = dict((rid.hex, outcome) for rid, outcome in _pg(
                name, "SELECT r.id, resp.outcome FROM requests r JOIN responses resp ON resp.request_id = r.id"))
            return rows if (killed | survived) <= set(rows) else None

        done = until(outcomes, timeout=30, what="every exchange of both instances in the log")
        assert {done[i] for i in survived} == {"completed"}
        assert {done[i] for i in killed} <= {"completed", "interrupted"} and "interrupted" in {done[i] for i in killed}
        counts = _pg(name, "SELECT count(*), count(DISTINCT request_id) FROM responses")[0]
        assert counts[0] == counts[1]  # none twice
        assert _pg(name, "SELECT count(*) FROM requests r LEFT JOIN responses resp ON resp.request_id = r.id "
                         "WHERE resp.id IS NULL")[0][0] == 0  # every request has its response
        assert "Traceback" not in back.stderr()
    finally:
        back.stop()


def test_store_down_during_traffic_on_both_instances_loses_nothing(shared, s3_server):
    name, env, ops, (a, b) = shared
    s3_server.stop()
    # Clients are unaffected: every answer complete (asserted inside _traffic).
    ids = {f"{h.port}:{kind}": rid for h in (a, b) for kind, rid in _traffic(h.url).items()}
    until(lambda: all("payload store unavailable" in h.stderr() for h in (a, b)), timeout=30,
          what="both instances waiting for the store")
    assert _pg(name, "SELECT count(*) FROM binary_files")[0][0] == 0  # the bytes wait in each host's spool

    s3_server.start()  # moto comes back empty: the bucket is new
    expected = {"chat": 0, "image": 1, "speech": 1, "edit": 2}  # the edit: the upload part + the image

    def arrived():
        by_req = _files(name)
        ok = all(len(by_req.get(rid, [])) == expected[key.split(":")[1]] for key, rid in ids.items())
        return by_req if ok else None

    by_req = until(arrived, timeout=60, what="every file of both instances in the log")
    _bucket_matches(s3_server, by_req, PREFIX)
    rows = _pg(name, "SELECT request_id, error_message, is_error FROM responses")
    notes = {rid.hex: (error, is_error) for rid, error, is_error in rows}
    assert len(rows) == len(notes) == len(ids)  # these exchanges, exactly once each
    for key, rid in ids.items():
        error, is_error = notes[rid]
        assert not is_error and (("payload store unavailable" in (error or "")) == (not key.endswith(":chat")))
    for host in (a, b):
        assert not [p for p in (host.data_dir / "spool").rglob("*") if p.is_file()]
        assert "Traceback" not in host.stderr()
