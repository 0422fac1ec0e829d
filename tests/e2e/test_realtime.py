"""Realtime sessions over WebSocket: relayed both ways as they come, and logged frame by frame."""

import asyncio
import base64
import json
import signal
import time
import wave
from decimal import Decimal
from io import BytesIO

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.core.files.storage import storages
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from logs.models import BinaryFile, Frame, Request, Response
from logs.pricing import cost_compute
from providers import Usage, registry
from testing.mock_realtime import PCM_CHUNK, MockRealtimeThread
from hold.models import HeldRequest
from hold.services import HoldError
from keys.services import key_revoke
from tests.e2e.faults import wait_until
from tests.hold.conftest import Background, decide, held_ids, switch, switch_seen
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)
from tests.procs import GatewayProcess, db_rows, migrated_copy, sqlite_only
from tests.sqlite_writes import locked_retry

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "realtimeTEST0123456789abcdef"


@pytest.fixture(scope="module")
def realtime_mock():
    mock = MockRealtimeThread()
    yield mock
    mock.stop()


@pytest.fixture
def rt(realtime_mock, gateway, settings):
    """A live gateway whose OpenAI and Gemini upstreams are the realtime mock."""
    realtime_mock.mock.sessions.clear()
    realtime_mock.mock.handshakes = 0
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": realtime_mock.url, "gemini": realtime_mock.url}
    return gateway


async def _openai_session(url: str) -> list:
    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        for _ in range(4):
            await conn.input_audio_buffer.append(audio=base64.b64encode(PCM_CHUNK).decode())
        await conn.input_audio_buffer.commit()
        return await _one_response(conn)


async def _one_response(conn) -> list:
    """response.create, then every event up to its response.done."""
    await conn.response.create()
    events = []
    async for event in conn:
        events.append(event)
        if event.type == "response.done":
            break
    return events


def test_openai_sdk_session_is_relayed_and_logged(rt, realtime_mock, log_flush):
    events = asyncio.run(_openai_session(rt.url))
    kinds = [e.type for e in events]
    assert kinds[0] == "session.created" and kinds[-1] == "response.done"
    assert kinds.count("response.output_audio.delta") == 3 and "input_audio_buffer.committed" in kinds
    mock = realtime_mock.mock.sessions[-1]
    assert mock.path == "/v1/realtime?model=gpt-realtime"
    assert dict((k.lower(), v) for k, v in mock.headers)["authorization"] == f"Bearer {KEY}"  # real key upstream

    log_flush()
    req = Request.objects.get()
    resp = Response.objects.get(request=req)
    assert req.endpoint == "/v1/realtime" and req.query_string == "model=gpt-realtime"
    assert req.model == "gpt-realtime"  # the upgrade's ?model=, on the request row too
    assert KEY not in json.dumps(req.headers)
    assert resp.status_code == 101 and resp.outcome == "completed" and "client closed" in resp.error_message
    # Usage from response.done, and its cost.
    assert (resp.input_tokens, resp.output_tokens, resp.cached_tokens, resp.total_tokens) == (12, 18, 4, 30)
    assert resp.model == "gpt-realtime"
    assert resp.cost_usd > 0 and resp.price_source.startswith("genai-prices")  # priced like any exchange
    # Its audio tokens (4 in, 12 out) at audio prices, several times text's.
    spoken = Usage("gpt-realtime", 12, 18, 4, price_counts=(("input_audio_tokens", 4), ("output_audio_tokens", 12)))
    assert resp.cost_usd == cost_compute(registry().get("openai"), spoken, at=resp.created_at).cost
    assert resp.cost_usd > cost_compute(registry().get("openai"), Usage("gpt-realtime", 12, 18, 4), at=resp.created_at).cost
    assert resp.stream_result["session_usage"]["output_audio_tokens"] == 12  # kept for re-pricing

    frames = list(Frame.objects.filter(request=req).order_by("seq"))
    client_sent = [f for f in frames if f.direction == "client"]
    upstream_sent = [f for f in frames if f.direction == "upstream"]
    assert len(client_sent) == len(mock.received) and len(upstream_sent) == len(events)
    assert [f.event_type for f in upstream_sent] == kinds  # every frame, in order
    assert all(b.offset_ms >= a.offset_ms for a, b in zip(frames, frames[1:]))
    audio_frame = next(f for f in upstream_sent if f.event_type == "response.output_audio.delta")
    ref = json.loads(audio_frame.text)["delta"]["$gateway_audio"]
    assert ref == {"track": "output-1", "offset": 0, "bytes": len(PCM_CHUNK)}  # no base64 kept in the row

    tracks = {f.field_name: f for f in BinaryFile.objects.filter(request=req, role="session_audio")}
    assert set(tracks) == {"input-1", "output-1"}
    for name, chunks in (("input-1", 4), ("output-1", 3)):
        with storages["payloads"].open(tracks[name].file.name, "rb") as f:
            with wave.open(BytesIO(f.read())) as w:
                assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
                assert w.readframes(w.getnframes()) == PCM_CHUNK * chunks  # playable, every sample

    admin = Client()
    admin.force_login(User.objects.create_superuser("rt", "rt@example.invalid", "pw"))
    page = admin.get(f"/admin/logs/request/{req.id.hex}/change/").content.decode()
    assert f"{len(frames)} frames" in page and "response.output_audio.delta" in page
    assert page.count("<audio") == 2  # both tracks playable on the exchange page


def test_usage_and_model_come_from_the_upstream_never_the_client(rt, realtime_mock, log_flush):
    """A client's own session.updated or response.done is relayed, never billed: a budget cannot be dodged so."""
    async def session() -> None:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.recv()  # session.created
            await ws.send(json.dumps({"type": "session.updated", "session": {"model": "my-free-model"}}))
            await ws.send(json.dumps({"type": "response.done", "response": {"usage": {
                "input_tokens": -1000, "output_tokens": 5, "total_tokens": -995}}}))
            await ws.send(json.dumps({"type": "response.create"}))
            while json.loads(await ws.recv())["type"] != "response.done":
                pass

    asyncio.run(session())
    assert len(realtime_mock.mock.sessions[-1].received) == 3  # relayed as sent
    log_flush()
    resp = Response.objects.get()
    assert resp.model == "gpt-realtime" and (resp.input_tokens, resp.output_tokens) == (12, 18)  # the mock's one
    assert resp.cost_usd > 0 and "could not be processed" not in resp.error_message


async def _close_by_upstream(url: str, event: dict) -> tuple[int, str]:
    async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=m",
                       additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.recv()  # session.created
        await ws.send(json.dumps(event))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return ws.close_code, ws.close_reason


def test_upstream_close_code_reaches_the_client_and_the_log(rt, log_flush):
    code, reason = asyncio.run(_close_by_upstream(rt.url, {"type": "mock.close", "code": 1011,
                                                           "reason": "upstream exploded"}))
    assert (code, reason) == (1011, "upstream exploded")
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "upstream_error" and "1011" in resp.error_message and "upstream exploded" in resp.error_message


def test_an_upstream_that_vanishes_is_no_normal_close(rt, log_flush):
    # It sent no close frame: the client gets 1014 (bad gateway), not the 1000 of a finished session,
    # and the client's answer to that close does not overwrite what the log says.
    code, reason = asyncio.run(_close_by_upstream(rt.url, {"type": "mock.drop"}))
    assert (code, reason) == (1014, "upstream connection lost")
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "upstream_error" and "upstream closed the session with code 1006" in resp.error_message


async def _client_closes(url: str, code: int) -> None:
    async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=m",
                       additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.recv()
        await ws.close(code, "done here")


@pytest.mark.parametrize("code", [1000, 4000])
def test_a_client_that_closes_with_its_own_code_ended_the_session_normally(rt, realtime_mock, log_flush, code):
    asyncio.run(_client_closes(rt.url, code))
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "completed" and not resp.is_error
    assert wait_until(lambda: realtime_mock.mock.sessions[-1].closed_code == code, 5)  # passed on upstream


def test_an_upstream_refusal_reaches_the_client_as_sent(rt, log_flush):
    refused = asyncio.run(_open_refused(f"{rt.url.replace('http', 'ws')}/v1/realtime/refuse-401?model=m"))
    assert refused.response.status_code == 401
    assert json.loads(refused.response.body)["error"]["message"] == "refused: Unauthorized"  # bytes, not digits
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 401 and json.loads(resp.body)["error"]["message"] == "refused: Unauthorized"


@pytest.mark.parametrize("userinfo, tail", [("t0kenS3cret@", ""), ("gw:S3cret@", "#x"), ("gw:%ffS3cret@", "")])
def test_an_upstream_url_the_websocket_client_refuses_is_a_logged_502_that_quotes_no_password(
        rt, realtime_mock, settings, log_flush, capfd, userinfo, tail):
    # HTTP takes a base URL of a user alone (a token), a fragment or a password not in UTF-8; the WebSocket client
    # refused it in words that quote the URL: a traceback with the password on the console, a bare 500, no log row.
    host = realtime_mock.url.split("://", 1)[1]
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": f"http://{userinfo}{host}{tail}"}
    refused = asyncio.run(_open_refused(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=m"))
    message = json.loads(refused.response.body)["error"]["message"]
    assert refused.response.status_code == 502 and "OPENAI_UPSTREAM_URL" in message, message
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 502 and resp.error_message == message
    assert "S3cret" not in message and "S3cret" not in "".join(capfd.readouterr())


def test_a_stored_credential_quoted_in_the_upstreams_refusal_of_the_upgrade_reaches_the_client_masked(
        rt, make_key, log_flush):
    # The upstream's HTTP answer to the upgrade (a 401 quoting the key it was sent) went to the client as it came,
    # handing the gateway key's holder the stored provider credential its answers and frames are masked of.
    stored = "sk-" + "storedUPGRADEcredential0123456789"
    _, secret = make_key("browser-app", credential=stored, providers=["openai"])

    async def refused() -> InvalidStatus:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime/refuse-401-echo?model=m",
                               additional_headers={"X-Gateway-Key": secret}):
                pass
        return caught.value

    answer = asyncio.run(refused()).response
    masked = "*" * (len(stored) - 4) + stored[-4:]
    assert answer.status_code == 401 and stored.encode() not in answer.body
    assert json.loads(answer.body)["error"]["message"] == f"Incorrect API key provided: {masked}"
    assert answer.headers["X-Echo"] == masked
    log_flush()
    assert stored not in json.dumps(list(Response.objects.values()), default=str)


async def _open_refused(url: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}):
            pass
    return caught.value


async def _client_leaves(url: str) -> None:
    ws = await connect(f"{url.replace('http', 'ws')}/v1/realtime?model=m",
                       additional_headers={"Authorization": f"Bearer {KEY}"})
    await ws.recv()
    ws.transport.abort()  # no close frame: the client just goes away


def test_a_client_that_leaves_while_the_upstream_opens_is_logged_and_the_upstream_closed(rt, realtime_mock, log_flush):
    async def impatient() -> None:
        with pytest.raises(TimeoutError):
            async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime/slow-open-600?model=m",
                               additional_headers={"Authorization": f"Bearer {KEY}"}, open_timeout=0.2):
                pass

    asyncio.run(impatient())
    assert wait_until(lambda: realtime_mock.mock.sessions and realtime_mock.mock.sessions[-1].closed_code is not None,
               timeout=5)  # the gateway closed the upstream it opened for nobody (it stayed open before)
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 101 and resp.outcome == "client_aborted"
    assert "client disconnected before the session opened" in resp.error_message


def test_a_client_message_over_the_servers_size_limit_is_named_as_such(rt, realtime_mock, log_flush):
    async def oversized() -> int:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime/echo?model=m", max_size=None,
                           additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.send("x" * (16 * 1024 * 1024 + 1))  # uvicorn's --ws-max-size is 16 MiB by default
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(oversized()) == 1009
    log_flush()
    resp = Response.objects.get()
    assert "a client message over its size limit (uvicorn --ws-max-size" in resp.error_message


def test_a_text_frame_too_large_for_its_row_is_kept_in_a_file(rt, realtime_mock, log_flush, settings):
    """As a request body over LOG_BODY_INLINE_MAX_BYTES is: an image sent inline was kept whole in the frames table,
    once per direction."""
    settings.LOG_BODY_INLINE_MAX_BYTES = 4096
    image = {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 10_000}]}}
    small = {"type": "response.create"}

    async def echo() -> None:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime/echo?model=m",
                           additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            for event in (image, small):
                await ws.send(json.dumps(event))
                assert json.loads(await ws.recv()) == event  # relayed as sent

    asyncio.run(echo())
    log_flush()
    req = Request.objects.get()
    frames = list(Frame.objects.filter(request=req).order_by("seq"))
    big = [f for f in frames if f.event_type == "conversation.item.create"]
    assert [(f.direction, f.kind, f.text) for f in big] == [("client", "text", None), ("upstream", "text", None)]
    for f in big:
        stored = BinaryFile.objects.get(request=req, field_name=f.file_key, role="session_frames")
        with storages["payloads"].open(stored.file.name, "rb") as fh:
            fh.seek(f.file_offset)
            assert json.loads(fh.read(f.size)) == image  # every byte, as it passed
    assert [json.loads(f.text) for f in frames if f.event_type == "response.create"] == [small, small]


def test_client_disconnect_is_logged_and_the_upstream_closed(rt, realtime_mock, log_flush):
    asyncio.run(_client_leaves(rt.url))
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "client_aborted" and "client went away without a close code (100" in resp.error_message
    # The gateway closed its upstream session; the mock, on its own thread, notes the close a moment later.
    assert wait_until(lambda: realtime_mock.mock.sessions[-1].closed_code is not None, 5)


async def _browser_session(url: str) -> str:
    """A browser cannot set headers on a WebSocket: its key comes in a subprotocol."""
    async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                       subprotocols=["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]) as ws:
        return json.loads(await ws.recv())["type"]


def test_a_subprotocol_a_hook_changes_is_what_goes_upstream(rt, realtime_mock, settings, log_flush):
    from tests.proxy.sample_hooks import INJECTED

    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.SubprotocolKey"]
    assert asyncio.run(_browser_session(rt.url)) == "session.created"
    sent = dict(realtime_mock.mock.sessions[-1].headers)["Sec-WebSocket-Protocol"]
    assert f"openai-insecure-api-key.{INJECTED}" in sent and KEY not in sent and sent.startswith("realtime, ")
    log_flush()
    forwarded = dict((k.lower(), v) for k, v in Response.objects.get().forwarded["headers"])
    assert "sec-websocket-key" not in forwarded  # the upstream connection makes its own: not what went
    assert INJECTED[-4:] in forwarded["sec-websocket-protocol"] and INJECTED not in forwarded["sec-websocket-protocol"]


def test_a_key_in_the_subprotocol_reaches_the_upstream_and_is_logged_masked(rt, realtime_mock, log_flush, capsys):
    assert asyncio.run(_browser_session(rt.url)) == "session.created"
    got = dict(realtime_mock.mock.sessions[-1].headers)
    assert f"openai-insecure-api-key.{KEY}" in got["Sec-WebSocket-Protocol"]  # the client's key, as sent
    log_flush()
    req = Request.objects.get()
    [protocols] = [v for k, v in req.headers if k.lower() == "sec-websocket-protocol"]
    assert protocols.startswith("realtime, openai-insecure-api-key.sk-…") and protocols.endswith(", openai-beta.realtime-v1")
    assert req.key_fingerprint  # the key is known, by its fingerprint
    dumped = json.dumps([list(Request.objects.values()), list(Response.objects.values())], default=str)
    assert "realtime, openai-insecure-api-key" in dumped and KEY not in dumped and KEY[-12:] not in dumped
    assert KEY not in capsys.readouterr().err


def test_a_browser_presents_a_gateway_key_in_the_subprotocol(rt, realtime_mock, make_key, log_flush):
    # A browser cannot send X-Gateway-Key on a WebSocket: it puts the gateway key where the provider key
    # goes (the subprotocol), and a key holding the provider credential sends that upstream instead.
    stored = "sk-" + "storedREALTIMEcredential0123456789"
    _, secret = make_key("browser-app", credential=stored, providers=["openai"])
    _, bare = make_key("no-credential")

    async def session(key: str) -> str:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           subprotocols=["realtime", f"openai-insecure-api-key.{key}"]) as ws:
            return json.loads(await ws.recv())["type"]

    assert asyncio.run(session(secret)) == "session.created"
    got = dict(realtime_mock.mock.sessions[-1].headers)
    assert got["Authorization"] == f"Bearer {stored}" and got["Sec-WebSocket-Protocol"] == "realtime"
    with pytest.raises(InvalidStatus) as refused:  # a key without a stored credential cannot be used so
        asyncio.run(session(bare))
    assert refused.value.response.status_code == 401 and len(realtime_mock.mock.sessions) == 1
    log_flush()
    req = Request.objects.get(response__status_code=101)
    assert req.gateway_key.startswith("browser-app (")
    [protocols] = [v for k, v in req.headers if k.lower() == "sec-websocket-protocol"]
    assert protocols == f"realtime, openai-insecure-api-key.{req.gateway_key}"
    dumped = json.dumps([list(Request.objects.values()), list(Response.objects.values())], default=str)
    assert secret not in dumped and secret[-12:] not in dumped and stored not in dumped and bare not in dumped


def test_a_stored_credential_quoted_back_by_the_upstream_reaches_the_client_masked(rt, realtime_mock, make_key,
                                                                                      log_flush):
    # An upstream error event quoting the key the session was opened with handed the gateway key's holder the
    # stored provider credential, which never leaves the server. (The echo route plays that upstream.)
    stored = "sk-" + "storedREALTIMEcredential0123456789"
    _, secret = make_key("browser-app", credential=stored, providers=["openai"])
    event = {"type": "error", "error": {"message": f"Incorrect API key provided: {stored}."}}

    async def echoed() -> tuple[str, bytes]:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime/echo?model=m",
                           additional_headers={"X-Gateway-Key": secret}) as ws:
            await ws.send(json.dumps(event))
            text = await ws.recv()
            await ws.send(f"bin {stored}".encode())
            return text, await ws.recv()

    text, data = asyncio.run(echoed())
    masked = "*" * (len(stored) - 4) + stored[-4:]
    assert stored not in text and json.loads(text)["error"]["message"] == f"Incorrect API key provided: {masked}."
    assert data == f"bin {masked}".encode()
    log_flush()
    dumped = json.dumps([list(Request.objects.values()), list(Response.objects.values()),
                         list(Frame.objects.values())], default=str)
    assert stored not in dumped and secret not in dumped and "Incorrect API key provided: " in dumped  # frames read


def test_a_hook_that_changes_the_upgrade_is_logged_with_what_went_upstream(rt, realtime_mock, settings, log_flush):
    from tests.proxy.sample_hooks import INJECTED

    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.InjectKey"]
    assert asyncio.run(_browser_session(rt.url)) == "session.created"
    got = dict((k.lower(), v) for k, v in realtime_mock.mock.sessions[-1].headers)
    assert got["authorization"] == f"Bearer {INJECTED}"
    log_flush()
    resp = Response.objects.get()
    forwarded = dict((k.lower(), v) for k, v in resp.forwarded["headers"])
    assert resp.forwarded["path"] == "/v1/realtime" and forwarded["authorization"].startswith("Bearer sk-")
    assert INJECTED not in json.dumps(resp.forwarded) and resp.steps[0]["hook"] == "tests.proxy.sample_hooks.InjectKey"


def test_a_hooks_change_of_the_upgrades_model_is_held_to_the_gateway_key(rt, realtime_mock, settings, make_key,
                                                                          log_flush):
    # A hook's change of the method, path or body is judged again by the request's gateway key; its change of the
    # query was not, and OpenAI's Realtime names its model there: a key limited to a model opened a session on
    # another.
    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.BiggerRealtimeModel"]
    _, secret = make_key("mini-only", models=["gpt-realtime-mini"])
    refused = asyncio.run(_refused(rt.url, {"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret},
                                   model="gpt-realtime-mini"))
    assert refused.response.status_code == 403 and realtime_mock.mock.sessions == []
    assert b"may not use model 'gpt-realtime'" in refused.response.body
    log_flush()
    assert Response.objects.get().steps[-1]["decision"] == "refused after the hooks, not forwarded"


def test_a_hooks_refusal_of_an_upgrade_sends_and_logs_its_cookies(rt, realtime_mock, settings, log_flush):
    """The denial was sent without the Set-Cookie of the hook's answer, which the log's headers list."""
    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.SetsCookies"]
    refused = asyncio.run(_refused(rt.url, {"Authorization": f"Bearer {KEY}"}))
    assert refused.response.status_code == 200 and realtime_mock.mock.sessions == []
    sent = refused.response.headers.get_all("Set-Cookie")
    assert len(sent) == 2 and sent[0].startswith("session=s3cr3t-session-value;") and sent[1].startswith("theme=")
    log_flush()
    logged = [v for k, v in Response.objects.get().headers if k.lower() == "set-cookie"]
    assert len(logged) == 2 and logged[1].startswith("theme=")


async def _refused(url: str, headers: dict | None = None, model: str = "m") -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model={model}", additional_headers=headers):
            pass
    return caught.value


async def _open(url: str, headers: dict) -> None:
    async with connect(url, additional_headers=headers):
        pass


async def _keyed_session(url: str, secret: str) -> str:
    async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                       additional_headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}) as ws:
        assert ws.response.headers["ratelimit-policy"] == '"requests";q=1;w=60'  # on the 101 of a limited key
        assert ws.response.headers["ratelimit"].startswith('"requests";r=0;')
        return json.loads(await ws.recv())["type"]


def test_refused_upgrade_gets_an_http_error_before_the_handshake(rt, settings, log_flush):
    settings.GATEWAY_API_KEYS = ["ops:gk-realtime-0123456789abcdef"]
    refused = asyncio.run(_refused(rt.url))
    assert refused.response.status_code == 401 and b"X-Gateway-Key" in refused.response.body
    log_flush()
    assert Response.objects.get().status_code == 401


def test_gateway_key_limits_and_models_apply_at_the_upgrade(rt, realtime_mock, log_flush, make_key):
    _, secret = make_key("voice", rpm=1, models=["gpt-realtime"])
    headers = {"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}
    assert asyncio.run(_keyed_session(rt.url, secret)) == "session.created"  # the minute's one session
    limited = asyncio.run(_refused(rt.url, headers, model="gpt-realtime"))
    assert limited.response.status_code == 429 and limited.response.headers.get("retry-after")
    assert b"rate_limit_error" in limited.response.body
    other_model = asyncio.run(_refused(rt.url, headers, model="gpt-4o-realtime-preview"))
    assert other_model.response.status_code == 403 and b"may not use model" in other_model.response.body
    # Two models in the query: the key read the first, a server taking the last ran the other.
    twice = asyncio.run(_refused(rt.url, headers, model="gpt-realtime&model=gpt-4o-realtime-preview"))
    assert twice.response.status_code == 403 and b"not named in its upgrade request" in twice.response.body
    assert len(realtime_mock.mock.sessions) == 1  # no refusal reached the upstream
    log_flush()
    assert sorted(r.status_code for r in Response.objects.all()) == [101, 403, 403, 429]
    assert Response.objects.get(status_code=429).outcome == "rate_limited"


ONE_RESPONSE = Usage("gpt-realtime", 12, 18, 4, price_counts=(("input_audio_tokens", 4), ("output_audio_tokens", 12)))


def _keyed_client(url: str, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0, default_headers={"X-Gateway-Key": secret})


async def _responses_until_stopped(url: str, secret: str, most: int = 5) -> tuple[list, Exception]:
    """A session asking for one response after another, with the official SDK, until the gateway ends it."""
    client = _keyed_client(url, secret)
    events: list = []
    try:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.response.create()
            async for event in conn:  # read to the end: the gateway's error event comes before its close
                events.append(event)
                if event.type == "response.done" and len(events) < 100:
                    try:
                        await conn.response.create()
                    except ConnectionClosed:
                        pass  # closed meanwhile: the loop reads why
            return events, AssertionError("the session was never stopped")
    except Exception as exc:  # websockets' ConnectionClosedError, or the SDK's error holding it
        return events, exc


def _close_of(exc: Exception):
    closed = exc if isinstance(exc, ConnectionClosed) else exc.__cause__
    assert isinstance(closed, ConnectionClosed), repr(exc)
    return closed.rcvd


@pytest.mark.parametrize("limit", ["budget", "tokens"])
def test_a_session_is_stopped_once_its_key_is_over_its_limit(rt, realtime_mock, log_flush, make_key, limit):
    """Usage counts as each response.done passes: a key cannot run one session past its budget or its tokens."""
    one = cost_compute(registry().get("openai"), ONE_RESPONSE).cost
    if limit == "budget":  # room for one response and a half: the second goes over
        _, secret = make_key("voice", budget_usd=(one * 3 / 2).quantize(Decimal("0.00000001")), budget_period="total")
    else:
        _, secret = make_key("voice", tpm=50)  # 30 tokens a response
    events, exc = asyncio.run(asyncio.wait_for(_responses_until_stopped(rt.url, secret), 20))
    kinds = [e.type for e in events]
    assert kinds.count("response.done") == 2 and kinds[-1] == "error"
    error = events[-1].error  # the Realtime API's error event, as the SDK parses it
    assert error.type == "rate_limit_error" and error.code == f"gateway_key_{limit}" and "voice" in error.message
    close = _close_of(exc)
    assert close.code == 1008 and close.reason == f"gateway key over its {'budget' if limit == 'budget' else 'tokens per minute'}"
    received = [json.loads(m)["type"] for m in realtime_mock.mock.sessions[-1].received]
    assert received.count("response.create") == 2  # none after the stop reached the upstream

    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "rate_limited" and resp.status_code == 101 and resp.total_tokens == 60
    stop = next(s for s in resp.steps if s["decision"] == "session stopped")
    assert stop["step"] == "gateway_key" and stop["limit"] == limit and stop["key"] == "voice"
    assert "used its budget" in resp.error_message if limit == "budget" else "tokens per minute" in resp.error_message
    assert "gateway closed the session with code 1008" in resp.error_message
    # The next session of the key is refused at its upgrade once the log shows the session (within 2 s).
    assert wait_until(lambda: asyncio.run(_upgrade_status(rt.url, secret)) == 429, timeout=3, step=0.1)


async def _upgrade_status(url: str, secret: str) -> int:
    try:
        async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def _idle_until_closed(url: str, secret: str, opened: asyncio.Event) -> tuple[float, object]:
    """A session that sends nothing: only the gateway can end it. (monotonic time of the close, its frame)."""
    async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                       additional_headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}) as ws:
        await ws.recv()  # session.created
        opened.set()
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return time.monotonic(), exc.rcvd


def test_an_idle_session_is_stopped_by_what_the_keys_other_sessions_used(rt, realtime_mock, log_flush, make_key):
    """What the key used elsewhere reaches an open session that asks for nothing: counted in this worker while the
    other session runs, and from the log once it has ended (within 2 s)."""
    _, secret = make_key("voice", tpm=50)

    async def both():
        opened = asyncio.Event()
        idle = asyncio.ensure_future(_idle_until_closed(rt.url, secret, opened))
        await opened.wait()
        _, exc = await asyncio.wait_for(_responses_until_stopped(rt.url, secret), 20)
        stopped = time.monotonic()
        closed_at, close = await asyncio.wait_for(idle, 10)
        return closed_at - stopped, close, exc

    took, close, exc = asyncio.run(both())
    assert _close_of(exc).code == 1008  # the session that spent it
    assert close.code == 1008 and close.reason == "gateway key over its tokens per minute"
    assert took < 3.0


def _key_revoke_closed(name: str) -> None:
    """Revoke a key from a thread of asyncio's executor, closing that thread's connection: the thread ends with the
    loop, and its connection only when the garbage collector frees it (never, once a later gateway's start has
    frozen it with gc.freeze()): PostgreSQL then cannot drop the test database."""
    from django.db import connection

    try:
        locked_retry(key_revoke, name=name)
    finally:
        connection.close()


async def _revoked_mid_session(url: str, secret: str) -> tuple[float, Exception]:
    client = _keyed_client(url, secret)
    try:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await _one_response(conn)
            await asyncio.to_thread(_key_revoke_closed, "voice")
            revoked = time.monotonic()
            async for event in conn:  # an idle session: only the gateway can end it
                pass
            return time.monotonic() - revoked, AssertionError("the session ended normally")
    except Exception as exc:
        return time.monotonic() - revoked, exc


def test_a_session_of_a_key_revoked_meanwhile_is_cut_within_a_second_or_so(rt, realtime_mock, log_flush, make_key):
    _, secret = make_key("voice")
    took, exc = asyncio.run(asyncio.wait_for(_revoked_mid_session(rt.url, secret), 10))
    close = _close_of(exc)
    assert close.code == 1008 and "revoked" in close.reason
    assert took < 2.0  # the key is re-read every second (KEY_TTL), the session checks it every quarter
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "gateway_error" and "has been revoked" in resp.error_message
    assert any(s["decision"] == "session stopped" for s in resp.steps)


async def _session_updates(url: str, secret: str) -> list:
    events = []
    async with _keyed_client(url, secret).realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        await conn.send({"type": "session.update", "event_id": "ev_other",
                         "session": {"type": "realtime", "model": "gpt-4o-realtime-preview"}})
        events.append(await conn.recv())
        await conn.session.update(session={"type": "realtime", "instructions": "be brief"})
        return events + await _one_response(conn)


def test_a_model_limited_key_cannot_switch_models_with_session_update(rt, realtime_mock, log_flush, make_key):
    _, secret = make_key("voice", models=["gpt-realtime"])
    events = asyncio.run(_session_updates(rt.url, secret))
    first = events[0]
    assert first.type == "error" and first.error.type == "permission_error" and first.error.event_id == "ev_other"
    assert "may not use model 'gpt-4o-realtime-preview'" in first.error.message
    assert events[-1].type == "response.done"  # the session goes on
    received = [json.loads(m) for m in realtime_mock.mock.sessions[-1].received]
    assert [e["type"] for e in received] == ["session.update", "response.create"]  # the allowed update, then
    assert "model" not in received[0]["session"]  # the refused update never went upstream
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "completed"
    refused = next(s for s in resp.steps if s["decision"] == "client event refused")
    assert refused["event"] == "session.update" and "gpt-4o-realtime-preview" in refused["reason"]


def test_a_budget_key_cannot_switch_a_session_to_a_model_without_a_price(rt, realtime_mock, log_flush, make_key):
    """Its usage would count nothing against the budget: refused as a request naming that model is."""
    _, secret = make_key("voice", budget_usd=Decimal("5"), budget_period="total")

    async def switch() -> list:
        async with _keyed_client(rt.url, secret).realtime.connect(model="gpt-realtime") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.send({"type": "session.update", "event_id": "ev_free",
                             "session": {"type": "realtime", "model": "my-unpriced-realtime"}})
            return [await conn.recv(), *await _one_response(conn)]

    events = asyncio.run(switch())
    error = events[0].error
    assert events[0].type == "error" and error.type == "permission_error" and error.code == "gateway_key_model"
    assert error.event_id == "ev_free" and "'voice' has a budget" in error.message
    assert "'my-unpriced-realtime' has no price" in error.message and "PRICE_TABLE_PATH" in error.message
    assert events[-1].type == "response.done"  # the session goes on, on its priced model
    received = [json.loads(m)["type"] for m in realtime_mock.mock.sessions[-1].received]
    assert received == ["response.create"]  # the update never went upstream
    log_flush()
    resp = Response.objects.get()
    refused = next(s for s in resp.steps if s["decision"] == "client event refused")
    assert refused["event"] == "session.update" and "my-unpriced-realtime" in refused["reason"]
    assert resp.cost_usd > 0


def test_a_budget_key_is_refused_a_session_whose_upgrade_names_no_model(rt, realtime_mock, log_flush, make_key):
    """The upstream would choose the model, whose price the gateway cannot know (a key with only a budget was let
    through: fail open)."""
    _, secret = make_key("voice", budget_usd=Decimal("5"), budget_period="total")
    headers = {"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}
    for query in ("", "?model=gpt-realtime&model=my-unpriced-realtime"):
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(_open(f"{rt.url.replace('http', 'ws')}/v1/realtime{query}", headers))
        assert refused.value.response.status_code == 403 and b"'voice' has a budget" in refused.value.response.body
    assert realtime_mock.mock.sessions == []
    log_flush()
    assert [r.outcome for r in Response.objects.all()] == ["gateway_error", "gateway_error"]


GEMINI_LIVE = "/gemini/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


async def _gemini_keyed(url: str, secret: str, first: dict | str) -> tuple[list, int | None, str]:
    """A Gemini Live session of a gateway key: its first message (a dict, or its JSON text as sent), then a turn;
    (what came, close code, reason)."""
    got: list = []
    async with connect(f"{url.replace('http', 'ws')}{GEMINI_LIVE}?key=AIza" + "TESTgeminiKEY0123456789",
                       additional_headers={"X-Gateway-Key": secret}) as ws:
        try:
            await ws.send(first if isinstance(first, str) else json.dumps(first))
            got.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
            got += [json.loads(await ws.recv()), json.loads(await ws.recv())]
        except ConnectionClosed:
            pass
    return got, ws.close_code, ws.close_reason


@pytest.mark.parametrize("limit", ["models", "budget"])
def test_a_gemini_live_session_is_held_to_the_model_its_setup_names(rt, realtime_mock, log_flush, make_key, limit):
    """Gemini Live names its model only in its first message: the session is admitted, and that message checked
    before it goes upstream (such keys could not use Gemini Live at all, and one with a budget ran any model)."""
    if limit == "models":
        _, secret = make_key("live", models=["gemini-live-2.5-flash"])
        refused_model, why = "gemini-2.5-pro", "may not use model 'gemini-2.5-pro'"
        closed = "gateway key 'live' may not use model 'gemini-2.5-pro'"
    else:
        _, secret = make_key("live", budget_usd=Decimal("5"), budget_period="total")
        refused_model, why = "my-unpriced-live", "model 'my-unpriced-live' has no price"
        closed = "gateway key 'live' has a budget and model 'my-unpriced-live' has no price"
    got, code, _ = asyncio.run(_gemini_keyed(rt.url, secret, {"setup": {"model": "models/gemini-live-2.5-flash"}}))
    assert "setupComplete" in got[0] and got[-1]["serverContent"]["turnComplete"] is True and code == 1000
    assert len(realtime_mock.mock.sessions[-1].received) == 2 and realtime_mock.mock.handshakes == 1
    unnamed = "gateway key 'live': the first message names no model"
    for first, reason in (({"setup": {"model": f"models/{refused_model}"}}, closed),
                          ({"clientContent": {"turnComplete": True}}, unnamed),  # fail closed: no setup first
                          ({"setup": {"generationConfig": {}}}, unnamed)):
        got, code, close_reason = asyncio.run(_gemini_keyed(rt.url, secret, first))
        assert (got, code, close_reason) == ([], 1008, reason)
        # The refused session never reached the provider: not its message, not even a connection with its key.
        assert realtime_mock.mock.handshakes == 1 and len(realtime_mock.mock.sessions) == 1
    if limit == "models":  # a later setup naming another model: Gemini Live has no error event, so the session ends
        async def resetup() -> tuple[int, str]:
            async with connect(f"{rt.url.replace('http', 'ws')}{GEMINI_LIVE}?key=AIza" + "TESTgeminiKEY0123456789",
                               additional_headers={"X-Gateway-Key": secret}) as ws:
                await ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
                await ws.recv()
                await ws.send(json.dumps({"setup": {"model": f"models/{refused_model}"}}))
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
            return ws.close_code, ws.close_reason

        assert asyncio.run(resetup()) == (1008, closed)
        assert len(realtime_mock.mock.sessions[-1].received) == 1  # the first setup only
        assert realtime_mock.mock.handshakes == 2
    log_flush()
    rows = list(Response.objects.order_by("created_at"))[:4]
    assert rows[0].outcome == "completed" and rows[0].model == "gemini-live-2.5-flash" and rows[0].cost_usd > 0
    assert [r.outcome for r in rows[1:]] == ["gateway_error"] * 3 and all(r.status_code == 101 for r in rows)
    assert why in rows[1].error_message and "names no model" in rows[2].error_message
    refusal = next(s for s in rows[1].steps if s["decision"] == "session refused")
    assert refusal == {**refusal, "step": "gateway_key", "key": "live", "model": refused_model, "seq": 1}
    assert "gateway closed the session with code 1008" in rows[1].error_message


@pytest.mark.parametrize("first", [
    '{"setup": {"model": "models/gemini-2.5-pro", "model": "models/gemini-live-2.5-flash"}}',
    '{"setup": {"model": "models/gemini-2.5-pro"}, "setup": {"model": "models/gemini-live-2.5-flash"}}',
])
def test_a_gemini_live_setup_naming_its_model_twice_is_refused(rt, realtime_mock, log_flush, make_key, first):
    """Python's json keeps a repeated key's last value: the key was held to the allowed model named last, and an
    upstream reading the first ran the other."""
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])
    got, code, reason = asyncio.run(_gemini_keyed(rt.url, secret, first))
    assert (got, code) == ([], 1008) and reason == "gateway key 'live': a message repeats a key"
    assert realtime_mock.mock.handshakes == 0 and realtime_mock.mock.sessions == []  # never reached the provider
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "gateway_error" and "repeats a key" in resp.error_message
    refusal = next(s for s in resp.steps if s["decision"] == "session refused")
    assert refusal["seq"] == 1 and "repeats a key" in refusal["reason"]


UPDATE = '{"type": "session.update", "event_id": "ev_dup", "session": {"type": "realtime", '


@pytest.mark.parametrize("update, why, event_id", [
    (UPDATE + '"model": "gpt-4o-realtime-preview", "model": "gpt-realtime"}}', "repeats a key", "ev_dup"),
    # read as a response.create, its last type: the key checked no model, an upstream reading the first ran one
    (UPDATE + '"model": "gpt-4o-realtime-preview"}, "type": "response.create"}', "repeats a key", "ev_dup"),
    # too deep for the gateway to read (no event: forwarded unchecked); a parser with a deeper limit reads it
    (UPDATE + '"model": "gpt-4o-realtime-preview"}, "pad": ' + "[" * 1100 + "]" * 1100 + "}",
     "nests too deep to read", None),
])
def test_an_openai_realtime_event_the_upstream_may_read_otherwise_is_refused_for_a_model_limited_key(
        rt, realtime_mock, log_flush, make_key, update, why, event_id):
    _, secret = make_key("voice", models=["gpt-realtime"])

    async def session() -> list:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(update)
            refused = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "response.create"}))  # the session goes on
            return [refused, json.loads(await ws.recv())]

    refused, after = asyncio.run(session())
    assert refused["type"] == "error" and refused["error"]["event_id"] == event_id
    assert refused["error"]["code"] == "gateway_key_model"
    assert f"this message {why} (JSON): what OpenAI reads in it cannot be known" in refused["error"]["message"]
    assert after["type"] == "response.created"
    assert [json.loads(m)["type"] for m in realtime_mock.mock.sessions[-1].received] == ["response.create"]
    log_flush()
    refused_step = next(s for s in Response.objects.get().steps if s["decision"] == "client event refused")
    assert refused_step["seq"] == 2 and why in refused_step["reason"]


@pytest.mark.parametrize("framed", [
    lambda text: text.encode(),  # a binary frame: the log keeps it as bytes, a provider may read it as an event
    lambda text: "\n  " + text,  # JSON may begin with white space: the gateway read no event in it
    lambda text: b"\t" + text.encode(),
], ids=["binary", "text after white space", "binary after white space"])
def test_a_model_limited_key_judges_every_json_event_of_the_client(rt, realtime_mock, log_flush, make_key, framed):
    """The SDKs send events as compact text; a session.update sent otherwise went upstream unchecked."""
    _, secret = make_key("voice", models=["gpt-realtime"])
    update = {"type": "session.update", "event_id": "ev_bin",
              "session": {"type": "realtime", "model": "gpt-4o-realtime-preview"}}

    async def session() -> list:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers={"Authorization": f"Bearer {KEY}", "X-Gateway-Key": secret}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            await ws.send(framed(json.dumps(update)))
            refused = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "response.create"}).encode())  # allowed, binary or not
            return [refused, json.loads(await ws.recv())]

    refused, after = asyncio.run(session())
    assert refused["type"] == "error" and refused["error"]["event_id"] == "ev_bin"
    assert "may not use model 'gpt-4o-realtime-preview'" in refused["error"]["message"]
    assert after["type"] == "response.created"
    assert [json.loads(m)["type"] for m in realtime_mock.mock.sessions[-1].received] == ["response.create"]
    log_flush()
    refused_step = next(s for s in Response.objects.get().steps if s["decision"] == "client event refused")
    assert refused_step["seq"] == 2 and refused_step["event"] == "session.update"


def test_a_gemini_live_setup_in_a_binary_frame_is_held_to_its_model(rt, realtime_mock, log_flush, make_key):
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])
    allowed = json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}).encode()
    got, code, _ = asyncio.run(_gemini_keyed(rt.url, secret, allowed.decode()))
    assert "setupComplete" in got[0] and code == 1000

    async def resetup() -> tuple[int, str]:
        async with connect(f"{rt.url.replace('http', 'ws')}{GEMINI_LIVE}?key=AIza" + "TESTgeminiKEY0123456789",
                           additional_headers={"X-Gateway-Key": secret}) as ws:
            await ws.send(allowed)  # binary: judged by the model it names, as text is
            assert "setupComplete" in json.loads(await ws.recv())
            await ws.send(json.dumps({"setup": {"model": "models/gemini-2.5-pro"}}).encode())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        return ws.close_code, ws.close_reason

    assert asyncio.run(resetup()) == (1008, "gateway key 'live' may not use model 'gemini-2.5-pro'")
    assert realtime_mock.mock.sessions[-1].received == [allowed]  # the allowed setup only, a binary frame as sent


async def _gemini_first(url: str, secret: str | None, first: str | bytes | None, path: str = GEMINI_LIVE,
                        close_after: bool = False) -> tuple[list, int | None, str]:
    """A Gemini Live client (of a gateway key, unless secret is None) that sends `first` (None: nothing) then waits
    for what comes, up to the close; close_after: it closes (1000) instead of waiting. (what came, close code,
    reason)."""
    got: list = []
    async with connect(f"{url.replace('http', 'ws')}{path}?key=AIza" + "TESTgeminiKEY0123456789",
                       additional_headers={"X-Gateway-Key": secret} if secret else {}) as ws:
        if first is not None:
            await ws.send(first)
        if not close_after:
            try:
                while True:
                    got.append(await ws.recv())
            except ConnectionClosed:
                pass
    return got, ws.close_code, ws.close_reason


@pytest.mark.parametrize("first", [
    '  {"setup":{"model":"models/gemini-live-2.5-flash",  "generationConfig": {}}}\n',  # text, spaced oddly
    b'{"setup": {"model": "models/gemini-live-2.5-flash"}}',  # binary
], ids=["text", "binary"])
def test_a_checked_first_message_is_the_first_thing_the_upstream_gets_as_sent(rt, realtime_mock, log_flush, make_key,
                                                                              first):
    """The gateway reads the setup before it opens the upstream: it then sends it first, byte for byte, in a frame
    of the same type, and the session is relayed and logged as before."""
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])

    async def session() -> list:
        async with connect(f"{rt.url.replace('http', 'ws')}{GEMINI_LIVE}?key=AIza" + "TESTgeminiKEY0123456789",
                           additional_headers={"X-Gateway-Key": secret}) as ws:
            await ws.send(first)
            got = [json.loads(await ws.recv())]
            await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
            return got + [json.loads(await ws.recv()), json.loads(await ws.recv())]

    got = asyncio.run(session())
    assert "setupComplete" in got[0] and got[-1]["serverContent"]["turnComplete"] is True
    assert realtime_mock.mock.handshakes == 1
    assert realtime_mock.mock.sessions[0].received == [first, '{"clientContent": {"turnComplete": true}}']
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 101 and resp.outcome == "completed" and resp.model == "gemini-live-2.5-flash"
    assert resp.cost_usd > 0
    frames = list(Frame.objects.filter(request=resp.request).order_by("seq").values_list("seq", "direction", "kind"))
    assert frames[:2] == [(1, "client", "text" if isinstance(first, str) else "binary"), (2, "upstream", "text")]


def test_a_client_that_never_sends_its_first_message_is_closed_and_logged(rt, realtime_mock, log_flush, make_key,
                                                                          settings):
    """Nothing to check, nothing to open: after REQUEST_BODY_TIMEOUT of silence the session is closed (it was held
    open with the provider's connection until the provider gave up)."""
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])
    settings.REQUEST_BODY_TIMEOUT = 0.3
    # Bounded here only so that a gateway holding it open fails the test instead of hanging it.
    got, code, reason = asyncio.run(asyncio.wait_for(_gemini_first(rt.url, secret, None), 30))
    assert (got, code, reason) == ([], 1008, "no first message within 0.3 s (REQUEST_BODY_TIMEOUT)")
    assert realtime_mock.mock.handshakes == 0
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 101 and resp.outcome == "gateway_error"
    assert resp.error_message.startswith("The client sent no first message within 0.3 s (REQUEST_BODY_TIMEOUT)")
    assert "gateway closed the session with code 1008" in resp.error_message


def test_a_client_that_leaves_before_its_first_message_opens_nothing(rt, realtime_mock, log_flush, make_key):
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])
    _, code, _ = asyncio.run(_gemini_first(rt.url, secret, None, close_after=True))
    assert code == 1000 and realtime_mock.mock.handshakes == 0
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 101 and resp.outcome == "completed"
    assert "client closed the session with code 1000" in resp.error_message


def test_an_upstream_that_refuses_after_the_checked_setup_closes_the_accepted_client(rt, realtime_mock, log_flush,
                                                                                     make_key):
    """The client was accepted before the upstream was asked: the upstream's HTTP refusal reaches it as a close
    frame (1014, bad gateway) naming the status; the log keeps the upstream's answer, as for any upgrade."""
    _, secret = make_key("live", models=["gemini-live-2.5-flash"])
    got, code, reason = asyncio.run(_gemini_first(
        rt.url, secret, json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}),
        path=GEMINI_LIVE.replace("/ws/", "/ws/refuse-401/")))
    assert (got, code, reason) == ([], 1014, "upstream did not open the session (HTTP 401)")
    assert realtime_mock.mock.handshakes == 1 and realtime_mock.mock.sessions == []
    log_flush()
    resp = Response.objects.get()
    assert resp.status_code == 401 and json.loads(resp.body)["error"]["message"] == "refused: Unauthorized"
    assert Frame.objects.filter(request=resp.request, direction="client").count() == 1  # the setup it read


def test_the_model_policy_hook_judges_a_session_by_its_upgrade(rt, realtime_mock, settings, log_flush):
    settings.GATEWAY_HOOKS = ["gateway_hooks.model_policy.ModelPolicy"]
    settings.MODEL_POLICY_ALLOW = ["gpt-realtime"]
    headers = {"Authorization": f"Bearer {KEY}"}
    other_model = asyncio.run(_refused(rt.url, headers, model="gpt-4o-realtime-preview"))
    assert other_model.response.status_code == 403 and b"'gpt-4o-realtime-preview' is not allowed" in (
        other_model.response.body)
    # An upgrade naming no model leaves it to the upstream: refused, not waved through.
    with pytest.raises(InvalidStatus) as unnamed:
        asyncio.run(_open(f"{rt.url.replace('http', 'ws')}/v1/realtime", headers))
    assert unnamed.value.response.status_code == 403 and b"names no model in its upgrade" in (
        unnamed.value.response.body)
    assert realtime_mock.mock.sessions == []

    async def allowed() -> str:
        async with connect(f"{rt.url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers=headers) as ws:
            return json.loads(await ws.recv())["type"]

    assert asyncio.run(allowed()) == "session.created" and len(realtime_mock.mock.sessions) == 1


async def _gemini_live(url: str, query: str = "") -> list:
    async with connect(f"{url.replace('http', 'ws')}/gemini/ws/google.ai.generativelanguage.v1beta."
                       "GenerativeService.BidiGenerateContent?key=AIza" + "TESTgeminiKEY0123456789" + query) as ws:
        await ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
        got = [json.loads(await ws.recv())]
        await ws.send(json.dumps({"realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=16000",
                                                              "data": base64.b64encode(PCM_CHUNK).decode()}}}))
        await ws.send(json.dumps({"clientContent": {"turnComplete": True}}))
        got += [json.loads(await ws.recv()), json.loads(await ws.recv())]
        return got


@pytest.mark.parametrize("query", ["", "&binary"])  # Google's Live API sends its JSON messages in binary frames
def test_gemini_live_session_over_a_raw_websocket(rt, log_flush, query):
    """A session's messages from Google come in binary frames: their usage went unread, the session cost nothing in
    the log and against a gateway key's budget or tokens per minute."""
    got = asyncio.run(_gemini_live(rt.url, query))
    assert "setupComplete" in got[0] and got[-1]["serverContent"]["turnComplete"] is True
    log_flush()
    req = Request.objects.get()
    resp = Response.objects.get(request=req)
    assert req.provider == "gemini" and "AIza" + "TESTgeminiKEY0123456789" not in req.query_string
    assert (resp.input_tokens, resp.output_tokens) == (9, 11)
    assert resp.model == "gemini-live-2.5-flash" and resp.cost_usd > 0  # named by the setup message
    tracks = {f.field_name: f.size for f in BinaryFile.objects.filter(request=req, role="session_audio")}
    assert tracks == {"input-1": 44 + len(PCM_CHUNK), "output-1": 44 + len(PCM_CHUNK)}


async def _session_then_hang(url: str, appended: int) -> None:
    ws = await connect(f"{url.replace('http', 'ws')}/v1/realtime?model=m",
                       additional_headers={"Authorization": f"Bearer {KEY}"})
    await ws.recv()
    for _ in range(appended):
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(PCM_CHUNK).decode()}))
    await ws.send(json.dumps({"type": "session.update", "session": {}}))
    await ws.recv()  # session.updated: everything before it passed through the gateway
    return ws


@sqlite_only
def test_a_crash_mid_session_keeps_every_frame_and_the_audio_so_far(tmp_path, tmp_path_factory, realtime_mock):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, realtime_mock.url)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_session_then_hang(gw.url, appended=5))
        assert wait_until(lambda: db_rows(db, "SELECT count(*) FROM frames")[0][0] >= 8, 10)
    finally:
        gw.kill()  # SIGKILL mid-session: no response record, the input track unfinished
        loop.close()
    again = GatewayProcess(data, realtime_mock.url)
    try:
        assert wait_until(lambda: db_rows(db, "SELECT outcome FROM responses") == [("interrupted",)], 15)
        frames = db_rows(db, "SELECT direction, event_type FROM frames ORDER BY seq")
        assert [e for d, e in frames if d == "client"] == ["input_audio_buffer.append"] * 5 + ["session.update"]
        track = db_rows(db, "SELECT field_name, size, file_path FROM binary_files WHERE role = 'session_audio'")
        assert [(name, size) for name, size, _ in track] == [("input-1", 44 + 5 * len(PCM_CHUNK))]
        with wave.open(str(data / "files" / track[0][2])) as w:  # a playable file, header sizes fixed
            assert w.getnframes() == 5 * len(PCM_CHUNK) // 2
    finally:
        again.stop()


async def _session_until_shutdown(gw: GatewayProcess) -> int:
    async with connect(f"{gw.url.replace('http', 'ws')}/v1/realtime?model=m",
                       additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        await ws.recv()  # session.created
        gw.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        return ws.close_code


def test_a_session_cut_by_the_gateways_shutdown_is_logged_interrupted(tmp_path, tmp_path_factory, realtime_mock):
    # uvicorn closes every WebSocket at once with 1012 when it stops: the gateway's, not the client's doing.
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, realtime_mock.url)
    try:
        assert asyncio.run(_session_until_shutdown(gw)) == 1012
        gw.wait(30)
        [(outcome, error)] = db_rows(db, "SELECT outcome, error_message FROM responses")
        assert outcome == "interrupted" and "gateway shut down during the session" in error
    finally:
        gw.kill()
    assert wait_until(lambda: realtime_mock.mock.sessions[-1].closed_code == 1012, 5)


async def _upgrade(url: str) -> str | InvalidStatus:
    """The first event of a session, or the HTTP answer that refused the upgrade."""
    try:
        async with connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                           additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            return json.loads(await ws.recv())["type"]
    except InvalidStatus as refused:
        return refused


def test_the_hold_queue_applies_at_the_upgrade(rt, realtime_mock, log_flush):
    switch(on=True, by="test")
    approved = Background(lambda: asyncio.run(_upgrade(rt.url)))
    [rid] = held_ids(rt)
    assert not approved.done and realtime_mock.mock.sessions == []  # no handshake either way while held
    with pytest.raises(HoldError, match="has no body to edit"):  # it would be dropped without a word
        decide(rid, "approve", by="alice", body='{"edited": true}')
    decide(rid, "approve", by="alice")
    assert approved.wait() == "session.created"

    rejected = Background(lambda: asyncio.run(_upgrade(rt.url)))
    [rid2] = held_ids(rt)  # the first one is no longer waiting
    decide(rid2, "reject-400", by="bob")
    refused = rejected.wait()
    assert isinstance(refused, InvalidStatus) and refused.response.status_code == 400
    assert len(realtime_mock.mock.sessions) == 1  # the rejected upgrade never reached the upstream
    switch(on=False, by="test")
    log_flush()
    first, second = Response.objects.get(request_id=rid), Response.objects.get(request_id=rid2)
    assert first.status_code == 101 and first.steps[-1]["decision"] == "approve" and first.held_ms > 0
    assert second.status_code == 400 and second.steps[-1] == {**second.steps[-1], "step": "hold", "by": "bob"}


def test_the_hold_queues_model_filter_reads_the_upgrades_model(rt, realtime_mock):
    """`hold on --model gpt-realtime` let every session through: the model is in the upgrade's query, not a body.
    A Gemini Live session names its model only in its first message: held, as a request whose model cannot be read;
    refused under the content policy, it gets a 400, not Gemini's blocked-prompt 200."""
    switch_seen(on=True, model="gpt-4o")
    assert asyncio.run(_upgrade(rt.url)) == "session.created"
    switch_seen(on=True, model="gpt-realtime")
    held = Background(lambda: asyncio.run(_upgrade(rt.url)))
    [rid] = held_ids(rt)
    decide(rid, "reject-400", by="alice")
    assert isinstance(held.wait(), InvalidStatus) and held.result.response.status_code == 400
    live = Background(lambda: asyncio.run(_gemini_live(rt.url)))
    [rid] = held_ids(rt)
    assert HeldRequest.objects.get(pk=rid).provider == "gemini"
    decide(rid, "approve", by="alice")
    assert "setupComplete" in live.wait()[0]
    # Gemini's content-policy answer is a 200 with promptFeedback: no answer to a handshake.
    refused = Background(lambda: asyncio.run(_gemini_live(rt.url)))
    [rid] = held_ids(rt)
    decide(rid, "content-policy", by="alice")
    refused.wait()
    assert isinstance(refused.error, InvalidStatus) and refused.error.response.status_code == 400
    assert json.loads(refused.error.response.body)["error"]["status"] == "INVALID_ARGUMENT"
    assert b"content policy" in refused.error.response.body
    switch(on=False, by="test")


async def _leave_while_held(url: str, gateway) -> str:
    """Start an upgrade, wait until the hold queue holds it, then go away before any answer."""
    opening = asyncio.ensure_future(connect(f"{url.replace('http', 'ws')}/v1/realtime?model=gpt-realtime",
                                            additional_headers={"Authorization": f"Bearer {KEY}"}))
    [rid] = await asyncio.to_thread(held_ids, gateway)
    opening.cancel()  # the client gives up: its TCP connection closes mid-handshake
    try:
        await opening
    except asyncio.CancelledError:
        pass
    return rid


def test_a_client_that_leaves_while_its_upgrade_is_held_is_logged_and_never_forwarded(rt, realtime_mock, log_flush):
    switch(on=True, by="test")
    rid = asyncio.run(_leave_while_held(rt.url, rt))
    log_flush()
    assert wait_until(lambda: Response.objects.filter(request_id=rid).exists(), 10)
    resp = Response.objects.get(request_id=rid)
    assert resp.outcome == "client_aborted" and "while held" in resp.error_message
    assert HeldRequest.objects.get(id=rid).state == "aborted"
    with pytest.raises(HoldError, match="no longer waiting"):  # no decision can open a session now
        decide(rid, "approve", by="alice")
    assert realtime_mock.mock.sessions == []


POLICY = "gateway_hooks.model_policy.ModelPolicy"
SETUP_FLASH = json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}})


def test_the_model_policy_hook_judges_a_gemini_live_session_by_its_setup(rt, realtime_mock, settings, log_flush):
    """Gemini Live names its model only in its first message, after the hooks ran on the upgrade: under an allow-list
    every Gemini Live session was refused. The hook now judges that message, before the upstream is opened."""
    settings.GATEWAY_HOOKS = [POLICY]
    settings.MODEL_POLICY_ALLOW = ["gemini-live-*"]
    got = asyncio.run(_gemini_live(rt.url))  # an allowed model: opened and relayed
    assert "setupComplete" in got[0] and got[-1]["serverContent"]["turnComplete"] is True
    assert realtime_mock.mock.handshakes == 1
    assert json.loads(realtime_mock.mock.sessions[0].received[0]) == {"setup": {"model": "models/gemini-live-2.5-flash"}}
    refused = "Model 'gemini-2.5-pro' is not allowed by this gateway (allowed: gemini-live-*)"
    unread = "This realtime session's message names no model the gateway can read, so it is refused"
    for first, reason in ((json.dumps({"setup": {"model": "models/gemini-2.5-pro"}}), refused),
                          (json.dumps({"setup": {"generationConfig": {}}}), unread),
                          # Python's json reads the last, an upstream may read the first: no model for sure
                          ('{"setup": {"model": "models/gemini-2.5-pro", "model": "models/gemini-live-2.5-flash"}}',
                           unread)):
        assert asyncio.run(_gemini_first(rt.url, None, first)) == ([], 1008, reason)
        # Closed before the upstream was opened: no connection, not even a handshake.
        assert realtime_mock.mock.handshakes == 1 and len(realtime_mock.mock.sessions) == 1
    log_flush()
    rows = list(Response.objects.order_by("created_at"))
    assert rows[0].outcome == "completed" and rows[0].model == "gemini-live-2.5-flash"
    assert [r.outcome for r in rows[1:]] == ["gateway_error"] * 3 and all(r.status_code == 101 for r in rows)
    decided = [s for s in rows[1].steps if s["decision"] == "session refused"]
    assert decided == [{"step": "hooks", "hook": POLICY, "decision": "session refused", "reason": refused, "seq": 1,
                        "model": "gemini-2.5-pro"}]
    assert rows[1].error_message.startswith(f"Hook {POLICY} refused the session: {refused}")
    assert [s["model"] for r in rows[2:] for s in r.steps if s["decision"] == "session refused"] == [None, None]


def test_a_gemini_live_setup_is_judged_by_the_key_then_the_hooks_on_one_read(rt, realtime_mock, settings, make_key,
                                                                            log_flush):
    """The key and the hooks judge the same first message, in the steps' order: the first refusal closes the session
    and is the only decision logged."""
    settings.GATEWAY_HOOKS = [POLICY]
    settings.MODEL_POLICY_ALLOW = ["gemini-live-*"]
    _, secret = make_key("live", models=["gemini-live-2.5-flash", "gemini-2.5-pro"])
    by_hook = asyncio.run(_gemini_first(rt.url, secret, json.dumps({"setup": {"model": "models/gemini-2.5-pro"}})))
    by_key = asyncio.run(_gemini_first(rt.url, secret, json.dumps({"setup": {"model": "models/gemini-live-2.0"}})))
    assert by_hook == ([], 1008, "Model 'gemini-2.5-pro' is not allowed by this gateway (allowed: gemini-live-*)")
    assert by_key == ([], 1008, "gateway key 'live' may not use model 'gemini-live-2.0'")
    assert realtime_mock.mock.handshakes == 0
    log_flush()
    first, second = ([s for s in r.steps if s["decision"] == "session refused"]
                     for r in Response.objects.order_by("created_at"))
    assert [(s["step"], s.get("hook")) for s in first] == [("hooks", POLICY)]
    assert [(s["step"], s.get("key")) for s in second] == [("gateway_key", "live")]


def test_a_hook_that_fails_on_a_sessions_model_closes_it_before_the_upstream(rt, realtime_mock, settings, log_flush):
    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.SessionModelBoom", "tests.proxy.sample_hooks.SessionModelSeen"]
    got, code, reason = asyncio.run(_gemini_first(rt.url, None, SETUP_FLASH))
    assert (got, code) == ([], 1011) and reason.startswith(
        "Hook tests.proxy.sample_hooks.SessionModelBoom failed in on_session_model: ")
    assert realtime_mock.mock.handshakes == 0
    settings.GATEWAY_HOOKS_SKIP_ON_ERROR = ["tests.proxy.sample_hooks.SessionModelBoom"]
    got = asyncio.run(_gemini_live(rt.url))  # skipped: the next hook saw it, the session opened and was relayed
    assert "setupComplete" in got[0] and realtime_mock.mock.handshakes == 1
    log_flush()
    failed, skipped = Response.objects.order_by("created_at")
    assert failed.outcome == "gateway_error" and "failed in on_session_model" in failed.error_message
    assert [s["decision"] for s in failed.steps] == ["error"]
    assert [s["decision"] for s in skipped.steps] == ["skipped after an error", "metadata"]
    assert skipped.steps[-1]["metadata"] == {"session_model": "gemini-live-2.5-flash"}


OTHER_MODEL = json.dumps({"type": "session.update", "event_id": "ev_other",
                          "session": {"type": "realtime", "model": "gpt-4o-realtime-preview"}})


async def _refused_then_a_response(url: str, refused: list[str], allowed_update: bool = False) -> list:
    """An OpenAI Realtime session of no gateway key sending each of `refused` (its JSON as sent) and reading what
    answers it, then (allowed_update) a session.update to its own model, then a response: every event received."""
    client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{url}/v1", max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        assert (await conn.recv()).type == "session.created"
        events = []
        for event in refused:
            await conn.send_raw(event)
            events.append(await conn.recv())
        if allowed_update:
            await conn.session.update(session={"type": "realtime", "model": "gpt-realtime"})
        return events + await _one_response(conn)


def test_the_model_policy_hook_judges_a_later_session_update_asking_for_another_model(rt, realtime_mock, settings,
                                                                                    log_flush):
    """The hooks judged only a session's upgrade (and Gemini Live's first message): an OpenAI session opened with an
    allowed model switched to any model with session.update. Each client message asking for a model is judged now,
    as a gateway key's list judges it: refused with an error event, never forwarded, and the session goes on."""
    settings.GATEWAY_HOOKS = [POLICY]
    settings.MODEL_POLICY_ALLOW = ["gpt-realtime"]

    # Which model an upstream reads in a key named twice cannot be known: no model for sure, refused.
    events = asyncio.run(_refused_then_a_response(rt.url, [
        OTHER_MODEL, UPDATE + '"model": "gpt-4o-realtime-preview", "model": "gpt-realtime"}}'], allowed_update=True))
    refused = "Model 'gpt-4o-realtime-preview' is not allowed by this gateway (allowed: gpt-realtime)"
    unread = "This realtime session's message names no model the gateway can read, so it is refused"
    assert [(e.type, e.error.type, e.error.code, e.error.event_id, e.error.message) for e in events[:2]] == [
        ("error", "permission_error", "gateway_hook_refused", "ev_other", refused),
        ("error", "permission_error", "gateway_hook_refused", "ev_dup", unread)]
    assert events[-1].type == "response.done"  # the session went on
    received = [json.loads(m) for m in realtime_mock.mock.sessions[-1].received]
    assert [e["type"] for e in received] == ["session.update", "response.create"]  # the allowed update only
    assert received[0]["session"]["model"] == "gpt-realtime"
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "completed"
    assert [s for s in resp.steps if s["decision"] == "client event refused"] == [
        {"step": "hooks", "hook": POLICY, "decision": "client event refused", "reason": refused, "seq": 2,
         "event": "session.update", "model": "gpt-4o-realtime-preview"},
        {"step": "hooks", "hook": POLICY, "decision": "client event refused", "reason": unread, "seq": 3,
         "event": "session.update", "model": None}]


def test_the_model_policy_hook_stops_a_gemini_live_session_whose_second_setup_names_another_model(
        rt, realtime_mock, settings, log_flush):
    """Gemini Live has no error event: a later setup naming a model the hook refuses ends the session, as a gateway
    key's refusal does, and never reaches the upstream."""
    settings.GATEWAY_HOOKS = [POLICY]
    settings.MODEL_POLICY_ALLOW = ["gemini-live-*"]

    async def resetup() -> tuple[dict, int, str]:
        async with connect(f"{rt.url.replace('http', 'ws')}{GEMINI_LIVE}?key=AIza" + "TESTgeminiKEY0123456789") as ws:
            await ws.send(SETUP_FLASH)
            opened = json.loads(await ws.recv())
            await ws.send(json.dumps({"setup": {"model": "models/gemini-2.5-pro"}}))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        return opened, ws.close_code, ws.close_reason

    refused = "Model 'gemini-2.5-pro' is not allowed by this gateway (allowed: gemini-live-*)"
    opened, code, reason = asyncio.run(resetup())
    assert "setupComplete" in opened and (code, reason) == (1008, refused)
    assert realtime_mock.mock.sessions[-1].received == [SETUP_FLASH]  # the first setup only
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "gateway_error" and f"Hook {POLICY} refused the session: {refused}" in resp.error_message
    assert [s for s in resp.steps if s["decision"] == "session refused"] == [
        {"step": "hooks", "hook": POLICY, "decision": "session refused", "reason": refused, "seq": 3,
         "model": "gemini-2.5-pro"}]


def test_a_hook_that_fails_on_a_later_session_update_refuses_that_event(rt, realtime_mock, settings, log_flush):
    """A failed judge fails closed: the event is refused (an error event naming the hook), never forwarded."""
    settings.GATEWAY_HOOKS = ["tests.proxy.sample_hooks.SessionModelBoom"]

    events = asyncio.run(_refused_then_a_response(rt.url, [OTHER_MODEL]))
    error = events[0].error
    assert events[0].type == "error" and (error.type, error.code, error.event_id) == (
        "api_error", "gateway_hook_error", "ev_other")
    assert error.message.startswith("Hook tests.proxy.sample_hooks.SessionModelBoom failed in on_session_model: ")
    assert events[-1].type == "response.done"  # the session went on
    assert [json.loads(m)["type"] for m in realtime_mock.mock.sessions[-1].received] == ["response.create"]
    log_flush()
    assert [s["decision"] for s in Response.objects.get().steps] == ["error"]
