"""The response cache across real processes: 4 uvicorn workers on the default file store and on
Redis, and two gateways ("hosts", each its own DATA_DIR) sharing Redis.

An answer stored by one worker is a hit on every other one as soon as its exchange has ended.
"""

import uuid

import httpx
import pytest

from tests.e2e.test_gateway_keys_procs import REDIS_URL, needs_redis
from tests.procs import GatewayProcess, migrated_copy

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "shared?"}]}


def _call(url: str, nonce: str) -> httpx.Response:
    # A new connection each time: uvicorn's workers share the listening socket, so calls spread over them.
    return httpx.post(f"{url}/v1/chat/completions", json={**BODY, "user": nonce}, timeout=10,
                      headers={"Authorization": "Bearer sk-test", "X-Gateway-Cache": "60", "Connection": "close"})


@pytest.mark.parametrize("store", ["file", pytest.param("redis", marks=needs_redis)])
def test_an_answer_stored_by_one_worker_is_a_hit_on_all(store, tmp_path, tmp_path_factory, mock_upstream):
    mock_upstream.mock.received.clear()
    data = tmp_path / "gw"
    migrated_copy(data, tmp_path_factory)
    env = {"CACHE_URL": REDIS_URL} if store == "redis" else {}
    gw = GatewayProcess(data, mock_upstream.url, workers=4, **env)
    nonce = f"{store}-{uuid.uuid4().hex}"  # Redis outlives the test (and the run): a body of its own
    try:
        first = _call(gw.url, nonce)
        assert first.headers["x-gateway-cache"] == "MISS"
        # At once (no wait) and then on whichever worker takes each connection.
        later = [_call(gw.url, nonce) for _ in range(12)]
        assert [r.headers["x-gateway-cache"] for r in later] == ["HIT"] * 12
        assert {r.content for r in later} == {first.content}
        assert len(mock_upstream.mock.received) == 1
    finally:
        gw.stop()


@needs_redis
def test_two_hosts_share_answers_through_redis(tmp_path, tmp_path_factory, mock_upstream):
    mock_upstream.mock.received.clear()
    hosts = []
    try:
        for name in ("host-a", "host-b"):
            migrated_copy(tmp_path / name, tmp_path_factory)
            hosts.append(GatewayProcess(tmp_path / name, mock_upstream.url, CACHE_URL=REDIS_URL))
        nonce = f"hosts-{uuid.uuid4().hex}"  # Redis outlives the run: a name of this run only
        first = _call(hosts[0].url, nonce)
        second = _call(hosts[1].url, nonce)
        assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("MISS", "HIT")
        assert second.headers["x-gateway-cache-source"] == first.headers["x-gateway-request-id"]
        assert second.content == first.content and len(mock_upstream.mock.received) == 1
    finally:
        for h in hosts:
            h.stop()
