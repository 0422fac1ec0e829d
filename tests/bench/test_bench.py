"""The benchmark's own pieces: the pass-through reference, the wrk check, the log-write probe, the ingest start."""

import asyncio

import httpx
import pytest

from bench import load, passthrough
from logs.pipeline.ingest import DB_NAME_ENV
from tests.procs import ROOT, db_rows, migrated_copy, proc_env, sqlite_only


def test_passthrough_reference_forwards_and_streams(upstream):
    async def run() -> httpx.Response:
        passthrough.UPSTREAM = upstream.url
        passthrough._client = passthrough.client_build()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=passthrough.app),
                                         base_url="http://ref") as client:
                return await client.post("/v1/chat/completions?x=1", json={"model": "m", "stream": True},
                                         headers={"Authorization": "Bearer sk-ref"})
        finally:
            await passthrough._client.aclose()
    r = asyncio.run(run())
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    got = upstream.received[-1]
    assert got.path == "/v1/chat/completions" and got.query == "x=1"
    assert got.header("authorization") == "Bearer sk-ref" and got.header("host") != "ref"


def test_missing_wrk_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(load.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as stop:
        load.wrk_require()
    assert "apt-get install -y wrk" in str(stop.value)


@pytest.mark.django_db(transaction=True)
def test_log_write_probe_counts_committed_rows():
    from bench.logprobe import logprobe_run

    out = logprobe_run(50)
    assert out["drained"] and out["rows"] == [50, 50] and out["exchanges_per_s"] > 0


@sqlite_only
def test_ingest_start_times_a_process_that_wrote_the_exchange(tmp_path, tmp_path_factory):
    from bench.ingest_start import start_once

    db = migrated_copy(tmp_path, tmp_path_factory)
    acked, cpu, rss = start_once(ROOT, {**proc_env(tmp_path, "http://127.0.0.1:9"), DB_NAME_ENV: str(db)})
    assert db_rows(db, "SELECT count(*) FROM responses WHERE cost_usd IS NOT NULL") == [(1,)]  # priced, written
    assert acked > 0 and 0 < cpu and rss > 10
