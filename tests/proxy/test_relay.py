"""relay_stream: every way a relayed body can end, and what the exchange records for each."""

import asyncio
from types import SimpleNamespace

import httpx
import pytest

import proxy.exchange
from logs.pipeline.capture import BodyCapture
from logs.records import record_parse
from providers import registry
from proxy.exchange import Exchange, exchanges_inflight, exchanges_interrupt
from proxy.paths import Route
from proxy.relay import RelayEnd, UpstreamBroken, _IdleWatch, chunks_replay, relay_collect, relay_stream
from proxy.request_body import BodySpool


@pytest.fixture(autouse=True)
def inflight_clear():
    """Exchanges made by a test and never ended must not leak into the next one."""
    yield
    proxy.exchange._INFLIGHT.clear()


@pytest.fixture(autouse=True)
def journal(monkeypatch):
    """The records the exchanges journal (a stand-in log writer: no database, no pipe)."""
    records = []
    writer = SimpleNamespace(instance="test", submit=lambda line, kind: records.append(record_parse(line)))
    monkeypatch.setattr(proxy.exchange, "writer_get", lambda: writer)
    return records


def _exchange() -> Exchange:
    """An exchange for a bodiless POST to OpenAI, as the ASGI adapter would hand it over."""
    request = SimpleNamespace(method="POST", META={"QUERY_STRING": "", "CONTENT_TYPE": "", "REMOTE_ADDR": "127.0.0.1"},
                              scope={"headers": []}, gateway_body=BodySpool("test.request"), gateway_refusal=None)
    route = Route(registry().get("openai"), "/v1/chat/completions", "/v1/chat/completions", "http://upstream.test")
    return Exchange(request, route)


class Scripted(httpx.AsyncByteStream):
    """An upstream body played from a script: bytes, pauses (floats) and exceptions."""

    def __init__(self, *steps) -> None:
        self.steps = steps
        self.closed = False

    async def __aiter__(self):
        for step in self.steps:
            if isinstance(step, bytes):
                yield step
            elif isinstance(step, float):
                await asyncio.sleep(step)
            else:
                raise step

    async def aclose(self) -> None:
        self.closed = True


def _setup(*steps, ctype="text/event-stream", headers=None):
    body = Scripted(*steps)
    upstream = httpx.Response(200, headers={"content-type": ctype, **(headers or {})}, stream=body)
    exchange = _exchange()
    capture = BodyCapture(spool_name=f"{exchange.request_id}.response", content_type=ctype,
                          stream=ctype == "text/event-stream", started=exchange.started)
    ended = []
    return body, upstream, exchange, capture, ended


async def _drain(gen) -> list[bytes]:
    return [chunk async for chunk in gen]


def _relay(upstream, exchange, capture, ended, *, idle=None):
    """relay_stream, ending the way relay_response ends it: the capture fills the response record, logged."""
    is_sse = capture.framer is not None

    async def on_end() -> None:
        record = exchange.response_record(status=upstream.status_code, headers=[],
                                          content_type=capture.content_type, is_stream=is_sse)
        capture.finish(record, exchange.scrubber)
        exchange.response_log(record)
        ended.append(record)

    return relay_stream(upstream, exchange, capture, RelayEnd(upstream, exchange, on_end), is_sse=is_sse,
                        idle_timeout=idle)


def test_complete_body_is_relayed_and_logged_once(journal):
    body, upstream, exchange, capture, ended = _setup(b"data: 1\n\n", b"data: [DONE]\n\n")
    out = asyncio.run(_drain(_relay(upstream, exchange, capture, ended)))
    assert out == [b"data: 1\n\n", b"data: [DONE]\n\n"]
    assert exchange.outcome == "completed" and len(ended) == 1 and body.closed
    assert ended[0].body == "data: 1\n\ndata: [DONE]\n\n" and journal == ended
    assert exchanges_inflight() == 0


def test_idle_stream_gets_a_final_error_event():
    body, upstream, exchange, capture, ended = _setup(b"data: 1\n\n", 2.0, b"data: 2\n\n")
    out = asyncio.run(_drain(_relay(upstream, exchange, capture, ended, idle=0.2)))
    assert out[0] == b"data: 1\n\n" and out[-1].startswith(b"event: error\ndata: {")
    assert b"STREAM_IDLE_TIMEOUT" in out[-1] and len(out) == 2
    assert exchange.outcome == "upstream_error" and ended[0].body == "data: 1\n\n" and body.closed
    assert 150 < exchange.elapsed_ms() < 1900  # before the next chunk (2 s)


def test_steady_events_slower_in_total_than_the_idle_timeout_complete():
    """The timeout counts each silence, not the stream's length: the one timer is moved on, not fired."""
    steps = [s for i in range(6) for s in (0.08, f"data: {i}\n\n".encode())]
    body, upstream, exchange, capture, ended = _setup(*steps)
    out = asyncio.run(_drain(_relay(upstream, exchange, capture, ended, idle=0.2)))
    assert len(out) == 6 and exchange.outcome == "completed" and b"event: error" not in b"".join(out)


def test_a_slow_client_is_not_an_idle_upstream():
    """Time the client takes between chunks is not counted as upstream silence."""
    body, upstream, exchange, capture, ended = _setup(b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n")

    async def run():
        got = []
        async for chunk in _relay(upstream, exchange, capture, ended, idle=0.1):
            got.append(chunk)
            await asyncio.sleep(0.25)
        return got

    assert asyncio.run(run()) == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    assert exchange.outcome == "completed"


def test_no_timer_outlives_the_relay():
    """A relay that ended leaves no timer behind (it would keep the exchange alive for the timeout)."""
    body, upstream, exchange, capture, ended = _setup(b"data: 1\n\n", b"data: [DONE]\n\n")

    async def run():
        await _drain(_relay(upstream, exchange, capture, ended, idle=300.0))
        return [h for h in asyncio.get_running_loop()._scheduled if not h.cancelled()]

    assert asyncio.run(run()) == [] and exchange.outcome == "completed"


def test_a_client_cancel_as_the_idle_timer_fires_stays_a_cancel():
    """Both at once: the client's cancellation wins (the task is cancelled, not timed out)."""

    async def forever():
        await asyncio.Event().wait()
        yield b""

    async def run():
        watch = _IdleWatch(10.0)
        task = asyncio.create_task(watch.chunk_next(forever()))
        await asyncio.sleep(0)
        task.cancel()  # the client left
        watch.since -= 20  # and the wait is older than the timeout when the timer runs
        watch._check()
        assert watch.fired
        with pytest.raises(asyncio.CancelledError):
            await task
        watch.close()

    asyncio.run(run())


def test_broken_plain_body_cuts_the_client():
    body, upstream, exchange, capture, ended = _setup(b'{"a": ', httpx.RemoteProtocolError("peer closed"),
                                                      ctype="application/json")
    got = []

    async def run():
        async for chunk in _relay(upstream, exchange, capture, ended):
            got.append(chunk)

    with pytest.raises(UpstreamBroken):
        asyncio.run(run())
    assert got == [b'{"a": '] and exchange.outcome == "upstream_error" and "peer closed" in exchange.error
    assert ended[0].body == '{"a": '


def test_collected_small_body_breaks_off_where_the_upstream_did():
    _, upstream, exchange, capture, ended = _setup(b'{"a": ', b"1, ", httpx.RemoteProtocolError("peer closed"),
                                                   ctype="application/json")
    chunks, broken = asyncio.run(relay_collect(_relay(upstream, exchange, capture, ended)))
    assert chunks == [b'{"a": ', b"1, "] and isinstance(broken, UpstreamBroken)
    assert exchange.outcome == "upstream_error" and ended[0].body == '{"a": 1, '  # logged once, already
    replayed = []

    async def replay():
        async for chunk in chunks_replay(chunks, broken):
            replayed.append(chunk)

    with pytest.raises(UpstreamBroken):
        asyncio.run(replay())
    assert replayed == chunks and len(ended) == 1
    _, upstream, exchange, capture, ended = _setup(b'{"a": 1}', ctype="application/json")
    assert asyncio.run(relay_collect(_relay(upstream, exchange, capture, ended))) == ([b'{"a": 1}'], None)


def test_a_break_inside_an_event_sends_only_whole_events_then_the_error():
    """An event's start waits for its end (any line ending); on a break it is dropped from what the
    client gets, so the error event starts a line of its own; the log keeps every byte received."""
    steps = (b"data: 1\n\nda", b"ta: 2\r\n", b"\r\nevent: x\r", b"\rdata: {\"half", httpx.RemoteProtocolError("gone"))
    _, upstream, exchange, capture, ended = _setup(*steps)
    out = asyncio.run(_drain(_relay(upstream, exchange, capture, ended)))
    assert out[:-1] == [b"data: 1\n\n", b"data: 2\r\n\r\n", b"event: x\r\r"]
    assert out[-1].startswith(b"event: error\ndata: {") and b"gone" in out[-1]
    assert ended[0].body == b"".join(steps[:-1]).decode() and exchange.outcome == "upstream_error"


def test_events_split_anywhere_reach_the_client_unchanged():
    """Held back or not, the client gets every byte in order: an unfinished event at a clean end, and
    an event longer than HELD_EVENT_MAX, which is sent as it comes instead of waiting for its end."""
    from proxy.relay import HELD_EVENT_MAX
    big = b"data: " + b"x" * (HELD_EVENT_MAX + 10) + b"\n\n"
    steps = (b"data: 1\n", b"\n", big[:1000], big[1000:HELD_EVENT_MAX + 100], big[HELD_EVENT_MAX + 100:],
             b"data: [DONE]")
    _, upstream, exchange, capture, ended = _setup(*steps)
    out = asyncio.run(_drain(_relay(upstream, exchange, capture, ended)))
    assert b"".join(out) == b"".join(steps) and exchange.outcome == "completed"
    assert out[:2] == [b"data: 1\n\n", big[:HELD_EVENT_MAX + 100]]  # the big event did not wait for its end
    assert out[-1] == b"data: [DONE]"


def test_compressed_stream_gets_no_plain_error_event():
    _, upstream, exchange, capture, ended = _setup(httpx.ReadError("reset"), headers={"content-encoding": "gzip"})
    with pytest.raises(UpstreamBroken):
        asyncio.run(_drain(_relay(upstream, exchange, capture, ended)))


def test_client_closing_early_is_client_aborted_and_stops_upstream():
    body, upstream, exchange, capture, ended = _setup(b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n")

    async def run():
        gen = _relay(upstream, exchange, capture, ended)
        assert await anext(gen) == b"data: 1\n\n"
        await gen.aclose()  # what a consumer does when it stops reading

    asyncio.run(run())
    assert exchange.outcome == "client_aborted" and body.closed and ended[0].body == "data: 1\n\n"


def test_cancelled_task_is_client_aborted_and_duration_stops_there():
    body, upstream, _, capture, ended = _setup(b"data: 1\n\n", 5.0, b"data: 2\n\n")

    async def run():
        holder = {}

        async def view():
            holder["ex"] = ex = _exchange()
            await _drain(_relay(upstream, ex, capture, ended))

        task = asyncio.create_task(view())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return holder["ex"]

    ex = asyncio.run(run())
    assert ex.outcome == "client_aborted" and body.closed and 150 < ex.elapsed_ms() < 4000  # not 5 s


def test_shutdown_interrupt_marks_interrupted():
    body, upstream, _, capture, ended = _setup(b"data: 1\n\n", 5.0, b"data: 2\n\n")

    async def run():
        holder = {}

        async def view():
            holder["ex"] = ex = _exchange()
            await _drain(_relay(upstream, ex, capture, ended))

        task = asyncio.create_task(view())
        await asyncio.sleep(0.2)
        assert exchanges_interrupt() >= 1
        with pytest.raises(asyncio.CancelledError):
            await task
        return holder["ex"]

    ex = asyncio.run(run())
    assert ex.outcome == "interrupted" and "SHUTDOWN_GRACE_SECONDS" in ex.error and body.closed
    assert ended[0].body == "data: 1\n\n"


class _SignallingStream(httpx.AsyncByteStream):
    """An upstream body that says when it is being closed."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()

    async def __aiter__(self):
        yield b'{"ok": true}'

    async def aclose(self) -> None:
        self.closing.set()


def test_cancel_while_closing_the_upstream_still_logs():
    async def run() -> list:
        stream = _SignallingStream()
        upstream = httpx.Response(200, stream=stream, headers={"content-type": "application/json"})
        ended = []
        capture = BodyCapture(spool_name="cancel.response", content_type="application/json")

        async def consume() -> None:
            async def on_end() -> None:
                ended.append(True)

            x = _exchange()
            async for _ in relay_stream(upstream, x, capture, RelayEnd(upstream, x, on_end), is_sse=False):
                pass

        task = asyncio.ensure_future(consume())
        await stream.closing.wait()
        task.cancel()  # lands while relay_stream awaits the upstream's release in its finally
        with pytest.raises(asyncio.CancelledError):
            await task
        return ended
    assert asyncio.run(run()) == [True]


def test_a_stored_credential_echoed_in_the_answer_reaches_the_client_masked_whatever_the_reads():
    from proxy.key_policy import EchoMask
    secret = "sk-stored-0123456789abcdef"
    x = _exchange()
    mask = EchoMask(x, secret)
    answer = ('{"error": "Incorrect key ' + secret + '", "url": "https://x/?k=' + secret + '"}').encode()
    for at in (1, 20, 30, len(answer) - 2):  # an echo split across two reads
        mask = EchoMask(x, secret)
        out = mask(answer[:at]) + mask(answer[at:]) + mask.rest()
        assert len(out) == len(answer) and secret.encode() not in out and b"Incorrect key ***" in out
        assert out.count(b"cdef") == 2 and out.count(b"*" * 22) == 2
    assert mask.headers([("x-echo", f"Bearer {secret}")]) == [("x-echo", "Bearer " + "*" * 22 + "cdef")]
    assert x.decisions[-1]["decision"] == "stored provider credential masked in the answer"


def test_a_streamed_answer_sent_with_a_stored_credential_is_not_held_a_read_behind():
    # Gemini's streamGenerateContent without alt=sse is one JSON array written piece by piece: each piece
    # must reach the client as it comes, not when the next one arrives (only what may start an echo waits).
    from proxy.key_policy import EchoMask
    secret = "sk-stored-0123456789abcdef"
    mask = EchoMask(_exchange(), secret)
    pieces = [b'[{"candidates": [{"content": {"parts": [{"text": "Hello"}]}}]}', b',\r\n{"candidates": [{"content": '
              b'{"parts": [{"text": " there"}]}}]}', b"]"]
    assert [mask(piece) for piece in pieces] == pieces and mask.rest() == b""
    # A read ending with what may start the credential keeps just that back, and masks it once it is whole.
    assert mask(b'{"echo": "sk-st') == b'{"echo": "'
    assert mask(b"ored-0123456789abcdef") == b"*" * 22 + b"cdef" and mask(b'"}') == b'"}' and mask.rest() == b""
