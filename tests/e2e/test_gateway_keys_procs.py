"""Request limits across real processes: 4 uvicorn workers on the default store and on Redis, and
two gateways ("hosts", each its own DATA_DIR) sharing Redis and PostgreSQL.

Each test starts real servers (a few seconds each): what is measured is exactly the sharing
between processes, which an in-process gateway cannot show.
"""

import asyncio
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from tests.procs import ROOT, GatewayProcess, migrated_copy, proc_env

N = 10  # requests per minute allowed; 3N sent at once
REDIS_URL = "redis://127.0.0.1:6379/14"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"


def _redis_up() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def _pg_up() -> bool:
    try:
        import psycopg

        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=2).close()
        return True
    except Exception:
        return False


needs_redis = pytest.mark.skipif(not _redis_up(), reason=f"no Redis at {REDIS_URL}")
needs_pg = pytest.mark.skipif(not _pg_up(), reason=f"no PostgreSQL at {PG_SERVER}")


def _key_create(data_dir, upstream_url, name: str, **env: str) -> str:
    """`manage.py gateway_key create` as an operator runs it; the secret is its last line."""
    out = subprocess.run([sys.executable, "manage.py", "gateway_key", "create", name, "--rpm", str(N)], cwd=ROOT,
                         env=proc_env(data_dir, upstream_url, **env), check=True, capture_output=True, text=True,
                         timeout=60).stdout
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("gk-") and " " not in secret
    return secret


async def _burst(urls: list[str], secret: str, count: int) -> list[int]:
    """`count` chat calls at once, spread over the given gateways; their statuses."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=count)) as client:
        async def one(i: int) -> int:
            r = await client.post(f"{urls[i % len(urls)]}/v1/chat/completions",
                                  json={"model": "gpt-4o-mini", "messages": []},
                                  headers={"X-Gateway-Key": secret, "Authorization": "Bearer sk-test"})
            return r.status_code
        return await asyncio.gather(*(one(i) for i in range(count)))


def _assert_exact(statuses: list[int]) -> None:
    assert sorted(set(statuses)) == [200, 429], statuses
    assert statuses.count(200) == N, f"{statuses.count(200)} admitted out of {len(statuses)}, limit {N}"


@pytest.mark.parametrize("store", ["database", pytest.param("redis", marks=needs_redis)])
def test_four_workers_admit_exactly_n(store, tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "gw"
    migrated_copy(data, tmp_path_factory)
    env = {"CACHE_URL": REDIS_URL} if store == "redis" else {}
    secret = _key_create(data, mock_upstream.url, f"burst-{store}", **env)
    gw = GatewayProcess(data, mock_upstream.url, workers=4, **env)
    try:
        _assert_exact(asyncio.run(_burst([gw.url], secret, 3 * N)))
    finally:
        gw.stop()


@needs_redis
@needs_pg
def test_two_hosts_sharing_redis_and_postgres_enforce_one_limit(tmp_path, mock_upstream):
    import psycopg

    name = f"gw_keys_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {"DATABASE_URL": f"{PG_SERVER}/{name}", "CACHE_URL": REDIS_URL}
    hosts = []
    try:
        first = tmp_path / "host-a"
        first.mkdir()
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                       env=proc_env(first, mock_upstream.url, **env), check=True, timeout=120)
        secret = _key_create(first, mock_upstream.url, "shared", **env)
        for host in ("host-a", "host-b"):
            (tmp_path / host).mkdir(exist_ok=True)
            hosts.append(GatewayProcess(tmp_path / host, mock_upstream.url, workers=2, **env))
        _assert_exact(asyncio.run(_burst([h.url for h in hosts], secret, 3 * N)))
        # Revoked on host A's command line: refused by both hosts within a second.
        subprocess.run([sys.executable, "manage.py", "gateway_key", "revoke", "shared"], cwd=ROOT,
                       env=proc_env(first, mock_upstream.url, **env), check=True, timeout=60)
        revoked_at = time.monotonic()
        statuses = []
        while time.monotonic() - revoked_at < 5:
            statuses = asyncio.run(_burst([h.url for h in hosts], secret, 4))
            if set(statuses) == {401}:
                break
            time.sleep(0.05)
        assert set(statuses) == {401}
        assert time.monotonic() - revoked_at < 1.5  # the lookup cache is 1 s; the rest is the calls themselves
    finally:
        for h in hosts:
            h.stop()
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
