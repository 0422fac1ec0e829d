"""Load: 200 concurrent mixed exchanges through `uvicorn --workers 2` on SQLite, each logged once."""

import asyncio
import json

import httpx

from testing.media import PNG
from tests.e2e.faults import AUTH, CHAT
from tests.procs import GatewayProcess, db_rows, exchanges_read, migrated_copy, sqlite_only
from tests.e2e.faults import wait_until

pytestmark = sqlite_only

COUNT = 200
SPEECH_SIZE = 100_000


async def _one(client: httpx.AsyncClient, i: int) -> tuple[str, str]:
    """Exchange number i (kind chosen by i); checks the answer, returns (kind, request id)."""
    kind = ("plain", "stream", "binary", "upload")[i % 4]
    if kind == "plain":
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.json()["choices"][0]["message"]["content"]
    elif kind == "stream":
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert r.text.rstrip().endswith("data: [DONE]")
    elif kind == "binary":
        r = await client.post("/v1/audio/speech", headers={"x-mock-size": str(SPEECH_SIZE)},
                              json={"model": "tts-1", "input": "x", "voice": "alloy"})
        assert len(r.content) == SPEECH_SIZE
    else:
        r = await client.post("/v1/images/edits", files={"image": (f"{i}.png", PNG + bytes([i % 256]) * 2000,
                                                                     "image/png")},
                              data={"model": "gpt-image-1", "prompt": f"n{i}"})
        assert r.json()["data"][0]["b64_json"]
    assert r.status_code == 200
    return kind, r.headers["x-gateway-request-id"]


async def _burst(url: str) -> list[tuple[str, str]]:
    """All exchanges at once."""
    limits = httpx.Limits(max_connections=COUNT, max_keepalive_connections=COUNT)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(_one(client, i) for i in range(COUNT)))


def test_200_concurrent_mixed_exchanges_two_workers(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, workers=2)
    try:
        sent = asyncio.run(asyncio.wait_for(_burst(gw.url), 90))
        ids = [rid for _, rid in sent]
        assert len(set(ids)) == COUNT
        logged = wait_until(lambda: (lambda rows: rows if len(rows) == COUNT and all(
            r["response"] for r in rows.values()) else None)(exchanges_read(db)), 30)
        assert logged, f"not every exchange reached the log:\n{gw.stderr()[-3000:]}"
    finally:
        code = gw.stop()
    stderr = gw.stderr()
    assert "database is locked" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert code in (0, -15)
    # Every exchange exactly once, with its response, as it ended.
    assert set(logged) == set(ids)
    assert db_rows(db, "SELECT count(*), count(DISTINCT request_id) FROM responses") == [(COUNT, COUNT)]
    assert all(row["response"]["outcome"] == "completed" and row["response"]["status"] == 200
               for row in logged.values())
    workers = {i for (i,) in db_rows(db, "SELECT DISTINCT instance FROM requests")}
    assert len(workers) == 2  # both workers really served
    kinds = dict((rid, kind) for kind, rid in sent)
    for rid, row in logged.items():
        if kinds[rid] == "binary":
            assert row["response"]["body_size"] == SPEECH_SIZE
    # Files: one audio file per binary answer, one part + one image per upload; no orphans.
    files = db_rows(db, "SELECT request_id, role, file_path, size FROM binary_files")
    store = data / "files"
    on_disk = {p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()}
    assert on_disk == {path for _, _, path, _ in files}
    assert all((store / path).stat().st_size == size for _, _, path, size in files)
    roles = sorted(role for _, role, _, _ in files)
    assert roles.count("response_body") == COUNT // 4
    assert roles.count("request_part") == roles.count("response_image") == COUNT // 4
    sample = next(rid for rid, kind in kinds.items() if kind == "upload")
    body = json.loads(db_rows(db, "SELECT body FROM requests WHERE id = ?", (sample,))[0][0])
    assert body["complete"] and body["files"][0]["filename"].endswith(".png")
    assert list((data / "journal").glob("*.jsonl")) == []
