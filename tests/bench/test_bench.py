"""The benchmark's own pieces: the pass-through reference, the wrk check, the log-write probe."""

import asyncio

import httpx
import pytest

from bench import load, passthrough


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
