"""Each provider's upstream slots: one provider with every slot busy cannot delay another."""

import asyncio
import gc
import json
import socket

import httpx
import pytest

from logs.models import Response
from proxy.slots import ProviderSlots, SlotReturningStream, SlotWaitTimeout
from tests.e2e.faults import wait_until


STALL = {"x-mock-fault": "stall", "x-mock-stall-s": "60"}  # held until the test hangs up


@pytest.fixture
def two_slots(settings):
    """Two slots per provider and a short wait for one, set before the gateway builds its client."""
    settings.UPSTREAM_MAX_CONNECTIONS = 2
    settings.UPSTREAM_POOL_TIMEOUT = 0.5
    # Long enough that a connect wait cannot pass for the pool wait in the messages below.
    settings.UPSTREAM_CONNECT_TIMEOUT = 3


def _stalled_chat(gateway) -> socket.socket:
    """An OpenAI chat call whose upstream stays silent; it holds its slot until the socket closes."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in STALL.items()) + "\r\n")
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(head.encode() + body)
    return sock


@pytest.mark.django_db(transaction=True)
def test_busy_provider_does_not_delay_another(two_slots, gateway, upstream, log_flush):
    stalled = [_stalled_chat(gateway) for _ in range(2)]
    try:
        assert wait_until(lambda: len(upstream.received) == 2), "the stalled calls did not reach the upstream"
        # Anthropic, on the same upstream host, is answered while OpenAI's two slots are taken.
        r = httpx.post(f"{gateway.url}/anthropic/v1/messages", timeout=30,
                       json={"model": "claude-sonnet-4", "max_tokens": 5, "messages": []})
        assert r.status_code == 200 and r.json()["type"] == "message"
        # A third OpenAI call waits UPSTREAM_POOL_TIMEOUT for a slot, then gets the pool-wait error.
        r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []},
                       timeout=30)
        message = r.json()["error"]["message"]
        assert r.status_code == 504 and message == ("No free upstream connection for openai within 0.5 s "
                                                    "(UPSTREAM_MAX_CONNECTIONS per provider, UPSTREAM_POOL_TIMEOUT)")
        assert len(upstream.received) == 3  # the refused one never went upstream
    finally:
        for sock in stalled:
            sock.close()
    log_flush()
    assert Response.objects.get(status_code=504).error_message == message
    # Hanging up gives the slots back: both stalled calls end logged as aborted, the next one goes through.
    assert wait_until(lambda: log_flush() or Response.objects.filter(outcome="client_aborted").count() == 2)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}, timeout=30)
    assert r.status_code == 200


def test_a_slot_given_back_twice_is_freed_once():
    async def run() -> None:
        slots = ProviderSlots(1, 0.05)
        give_back = await slots.take("a")
        await slots.take("b")  # another provider's slots are its own
        give_back()
        give_back()  # a second call changes nothing...
        await slots.take("a")
        with pytest.raises(SlotWaitTimeout):  # ...so "a" has no slot left
            await slots.take("a")
    asyncio.run(run())


def test_an_answer_dropped_unclosed_gives_its_slot_back():
    async def run() -> None:
        slots = ProviderSlots(1, 0.05)
        stream = SlotReturningStream(httpx.ByteStream(b"answer"), await slots.take("a"))
        with pytest.raises(SlotWaitTimeout):
            await slots.take("a")
        del stream  # never closed, e.g. the client left before the relay started
        gc.collect()
        await slots.take("a")
    asyncio.run(run())
