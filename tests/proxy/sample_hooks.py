"""Hooks the hook tests load by dotted path (GATEWAY_HOOKS=tests.proxy.sample_hooks.NAME)."""

import asyncio
import threading
import time

from django.http import JsonResponse

calls: list[tuple[str, str]] = []  # (hook, request id), in the order they ran
seen: list[dict] = []  # what on_response saw
slow_started = threading.Event()


class Rewrite:
    """Changes every part of the request it may: method stays, path, header, body (through json)."""

    def on_request(self, exchange):
        calls.append(("rewrite", exchange.request_id))
        payload = exchange.json
        payload["messages"].append({"role": "system", "content": "added by a hook"})
        exchange.json = payload
        exchange.headers.append(("X-Hooked", "yes"))
        exchange.metadata["by"] = "rewrite"


def on_request(exchange):
    """A module is a hook too: this one answers requests for the model "canned" itself."""
    if exchange.model == "canned":
        return JsonResponse({"canned": True, "model": exchange.model, "key": exchange.gateway_key}, status=200)
    return None


class Boom:
    def on_request(self, exchange):
        secret = dict((k.lower(), v) for k, v in exchange.headers)["authorization"]
        raise RuntimeError(f"cannot handle this request ({secret})")


class Slow:
    """A sync hook that blocks its thread for a while on requests that ask for it."""

    def on_request(self, exchange):
        if exchange.model == "slow":
            slow_started.set()
            time.sleep(0.8)
        calls.append(("slow", threading.current_thread().name))


class AsyncTag:
    async def on_request(self, exchange):
        await asyncio.sleep(0)
        exchange.headers.append(("X-Async-Hook", "1"))

    async def on_response(self, exchange):
        seen.append({"status": exchange.status, "streamed": exchange.streamed,
                     "body": exchange.response_body})


class Shout:
    """Replaces a non-streamed answer's body."""

    def on_response(self, exchange):
        seen.append({"status": exchange.status, "streamed": exchange.streamed})
        if not exchange.streamed:
            exchange.response_body = exchange.response_body.replace(b"Hello!", b"HELLO FROM A HOOK!")


class Repath:
    """Sends the request to another path (the embeddings endpoint) with another method body."""

    def on_request(self, exchange):
        exchange.path = "/v1/embeddings"
        exchange.json = {"model": "text-embedding-3-small", "input": "moved"}


class BadReturn:
    def on_request(self, exchange):
        return {"not": "a response"}


class NoMethods:
    pass


class Noop:
    def on_request(self, exchange):
        return None


class Inline:
    blocking = False

    def on_request(self, exchange):
        calls.append(("inline", threading.current_thread().name))


class BadBlocking:
    blocking = "no"

    def on_request(self, exchange):
        return None


class Reput:
    """Changes the method and the query string."""

    def on_request(self, exchange):
        exchange.method = "put"
        exchange.query = "dry_run=1"


class BadPath:
    def on_request(self, exchange):
        exchange.path = "/v1/../admin/"


class GeminiModel:
    """Moves a Gemini call to another model: Gemini names it in the path."""

    def on_request(self, exchange):
        exchange.path = exchange.path.replace("gemini-2.0-flash", "gemini-held")


class SetsLength:
    """Sets a framing header: with the gateway's own Content-Length, the upstream read 5 bytes of the body."""

    def on_request(self, exchange):
        exchange.headers.append(("Content-Length", "5"))


class BoomOnAnswer:
    """Fails on the answer (after the upstream answered)."""

    def on_response(self, exchange):
        raise RuntimeError("cannot handle this answer")


INJECTED = "sk-" + "proj-HOOKinjected0123456789abcdef"


class InjectKey:
    """Puts the team's provider key in, in place of the client's."""

    def on_request(self, exchange):
        exchange.headers = [(k, v) for k, v in exchange.headers if k.lower() != "authorization"]
        exchange.headers.append(("Authorization", f"Bearer {INJECTED}"))


class InjectKeyThenFail(InjectKey):
    """Puts the team's key in, then fails with it in the message (a failing hook's own credential)."""

    def on_request(self, exchange):
        super().on_request(exchange)
        raise RuntimeError(f"the team key {INJECTED} was refused")


class BadHeaderName:
    """A header name with a space: on the wire it would end the header block of a lenient server."""

    def on_request(self, exchange):
        exchange.headers.append(("X Bad Name", "v"))


class ModelInPlace:
    """Changes the model in the parsed body without assigning it back."""

    blocking = False

    def on_request(self, exchange):
        exchange.json["model"] = "gpt-4o-mini"


class NotJson:
    """Assigns a value JSON cannot hold."""

    blocking = False

    def on_request(self, exchange):
        exchange.json = {**exchange.json, "temperature": float("nan")}


class SubprotocolKey:
    """A browser's realtime key (in a subprotocol) replaced by the team's, server side."""

    def on_request(self, exchange):
        exchange.headers = [(k, ", ".join(f"openai-insecure-api-key.{INJECTED}" if p.strip().startswith(
            "openai-insecure-api-key.") else p.strip() for p in v.split(","))) if k.lower() == "sec-websocket-protocol"
            else (k, v) for k, v in exchange.headers]


class BiggerModel:
    """Sends every chat to gpt-4o."""

    blocking = False

    def on_request(self, exchange):
        if exchange.path.endswith("/chat/completions"):
            exchange.json = {**exchange.json, "model": "gpt-4o"}


class BiggerRealtimeModel:
    """Opens every realtime session on gpt-realtime (OpenAI names it in the upgrade's query)."""

    blocking = False

    def on_request(self, exchange):
        if exchange.websocket:
            exchange.query = "model=gpt-realtime"


class CheaperImages:
    """Sends image generations to the mini model."""

    blocking = False

    def on_request(self, exchange):
        if exchange.path.endswith("/images/generations"):
            exchange.json = {**exchange.json, "model": "gpt-image-1-mini"}


class BodySize:
    """Notes the size of the body it is shown."""

    blocking = False

    def on_request(self, exchange):
        seen.append({"body_size": len(exchange.body)})


TEAM_KEY = "sk-" + "proj-HOOKteamKEY0123456789abcdef"


class QuotesSecrets:
    """Fails quoting what is no credential of the request: the body (with a field named like one) and the
    team key it holds, not yet put in; and a KeyError, whose key name must stay readable."""

    def on_request(self, exchange):
        if exchange.model == "missing":
            return exchange.json["messages_missing"]
        raise ValueError(f"cannot use {TEAM_KEY} for {exchange.json}")


PNG = b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10


async def _events():
    yield b'data: {"choices": [{"delta": {"content": "canned"}}]}\n\n'
    await asyncio.sleep(0)
    yield b"data: [DONE]\n\n"


class AnswersOwnWay:
    """Answers with what a hook may return besides JSON: by the model asked for."""

    def on_request(self, exchange):
        import gzip

        from django.http import HttpResponse, StreamingHttpResponse

        if exchange.model == "binary":
            return HttpResponse(PNG, content_type="image/png")
        if exchange.model == "gzip":
            answer = HttpResponse(gzip.compress(b'{"canned": true}'), content_type="application/json")
            answer["Content-Encoding"] = "gzip"
            return answer
        if exchange.model == "stream":
            return StreamingHttpResponse(_events(), content_type="text/event-stream")
        return StreamingHttpResponse(iter([b"sync ", "stream"]), content_type="text/plain")  # a sync iterator


class Exits:
    """Calls sys.exit(), as a library giving up may (sync: in a thread)."""

    def on_request(self, exchange):
        import sys

        sys.exit(3)


class ExitsOnAnswer:
    """Raises SystemExit on the answer, on the event loop."""

    async def on_response(self, exchange):
        raise SystemExit(4)


class FormToJson:
    """Sends a form upload's fields as JSON (a body the gateway reads as no JSON: exchange.json is None)."""

    blocking = False

    def on_request(self, exchange):
        if exchange.json is None:
            exchange.json = {"model": "whisper-1", "prompt": "from a hook"}


async def _breaks():
    yield b"data: {}\n\n"
    raise RuntimeError("the hook's generator broke")


class StreamBreaks:
    """Answers with a stream whose generator raises after its first event."""

    def on_request(self, exchange):
        from django.http import StreamingHttpResponse

        return StreamingHttpResponse(_breaks(), content_type="text/event-stream")


# --- hooks that take too long (HOOK_TIMEOUT_SECONDS), and write to their exchange after the gateway gave up
release = threading.Event()  # lets a hung sync hook go on (the test sets it; it waits at most 10 s)
late_written = threading.Event()  # a hung hook made its late writes
release_answer, late_written_answer = threading.Event(), threading.Event()  # the same for on_response


class Hangs:
    """A sync hook stuck in its thread (on a lock, a call with no timeout) until the test lets it go."""

    def on_request(self, exchange):
        release.wait(10)


class HangsOnModel:
    """Hangs on requests for the model "hang" until the test lets it go; answers others at once."""

    def on_request(self, exchange):
        if exchange.model == "hang":
            release.wait(10)


class HangsOnAnswer:
    def on_response(self, exchange):
        release.wait(10)


class HangsAsync:
    async def on_request(self, exchange):
        await asyncio.sleep(30)


class HangsAsyncOnAnswer:
    async def on_response(self, exchange):
        await asyncio.sleep(30)


class HangsThenWrites:
    """Hangs past the timeout, then changes everything it may: too late, none of it may count."""

    def on_request(self, exchange):
        exchange.metadata["before the hang"] = True
        exchange.metadata["tags"] = ["before the hang"]
        release.wait(10)
        exchange.headers.append(("X-Late", "1"))
        exchange.body = b'{"late": true}'
        exchange.metadata["late"] = True
        exchange.metadata["tags"].append("late")  # into a value the metadata holds, not the metadata itself
        late_written.set()

    def on_response(self, exchange):
        release_answer.wait(10)
        if exchange.response_body is not None:
            exchange.response_body = b"late"
        exchange.metadata["late answer"] = True
        exchange.metadata["tags"].append("late answer")
        late_written_answer.set()


class AfterTheHung:
    """Runs after HangsThenWrites timed out: lets it make its late writes, waits for them, then changes a header
    (so the hooks' headers are applied) and, on the answer, its body (so it is sent)."""

    async def on_request(self, exchange):
        release.set()
        await _until(late_written)
        exchange.headers.append(("X-After", "1"))

    async def on_response(self, exchange):
        release_answer.set()
        await _until(late_written_answer)
        if exchange.response_body is not None:
            exchange.response_body = exchange.response_body.replace(b"Hello!", b"after")


async def _until(event: threading.Event) -> None:
    for _ in range(500):
        if event.is_set():
            return
        await asyncio.sleep(0.01)


class SetsCookies:
    """Answers itself with cookies (Django keeps them apart from the headers)."""

    def on_request(self, exchange):
        from django.http import HttpResponse

        answer = HttpResponse(b"{}", content_type="application/json")
        answer.set_cookie("session", "s3cr3t-session-value", httponly=True)
        answer.set_cookie("theme", "dark")
        return answer


class BadStatus:
    """Answers with a status no server can send (Django takes one set after the response is built), by model."""

    def on_request(self, exchange):
        from django.http import HttpResponse

        answer = HttpResponse(b"{}", content_type="application/json")
        answer.status_code = {"zero": 0, "big": 1000, "text": "200", "informational": 100}[exchange.model]
        return answer


class EnumStatus:
    """Refuses with http.HTTPStatus.FORBIDDEN set after the response is built (an IntEnum, an int)."""

    def on_request(self, exchange):
        from http import HTTPStatus

        from django.http import HttpResponse

        answer = HttpResponse(b'{"error": "no"}', content_type="application/json")
        answer.status_code = HTTPStatus.FORBIDDEN
        return answer


class SessionModelBoom:
    """Fails on a realtime session's first message (its model), as a hook with a bug would."""

    def on_session_model(self, exchange):
        raise KeyError(exchange.model)


class SessionModelSeen:
    """Notes the model a session's first message named, and lets it open."""

    blocking = False

    def on_session_model(self, exchange):
        exchange.metadata["session_model"] = exchange.model


class RepeatsModel:
    """Sends a body naming its model twice: which one an upstream reads cannot be known."""

    blocking = False

    def on_request(self, exchange):
        exchange.body = b'{"model": "gpt-4o-mini", "model": "gpt-4o", "messages": []}'
