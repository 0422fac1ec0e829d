"""The policy steps: an ordered list run on every exchange between recording the request and calling the upstream.

A step may change what goes upstream (Exchange.forward_headers / forward_body), answer the
request itself (return a response: the exchange then ends without an upstream call, logged as
its response), add headers to the client's answer (Exchange.answer_headers, on every answer),
and filter what the client gets back. Each step says when it is on, so a step that is off costs
nothing. Every change a step makes is visible in the log: the request row keeps what was
received, and the step records its decision (Exchange.decisions -> responses.steps) and, when it
changed the request, what went upstream (Exchange.forwarded -> responses.forwarded).
"""

import logging
import traceback

from django.conf import settings
from django.http import HttpResponseBase

from keys.selectors import keys_exist_known
from logs.outcomes import Outcome
from logs.redaction.scrub import error_scrub
from logs.tags import tag_header
from providers import Provider
from providers.base import UsageUnknowable, json_bytes
from proxy.cache import cache_request
from proxy.exchange import Exchange, json_error
from proxy.forwarded import forwarded_note
from proxy.hold import hold_may_apply, hold_request
from proxy.hooks import hooks_loaded, hooks_request
from proxy.key_policy import key_rejudge, key_request
from proxy.relay import AnswerFilter, AnswerFilters
from proxy.request_body import BodyReading
from wire.sse import EventFilter

log = logging.getLogger(__name__)


class Step:
    """One policy step (subclasses override what they use)."""

    name = ""

    def enabled(self) -> bool:
        """Whether the step runs at all with the current settings."""
        return True

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        """Look at (and maybe change) the request; a response answers it instead of the upstream."""
        return None

    def relay_filter(self, x: Exchange, is_sse: bool) -> AnswerFilter | None:
        """A filter for the answer's bytes on their way to the client, or None."""
        return None


class KeyStep(Step):
    """Gateway keys of the keys app (proxy/key_policy.py): permissions, limits, stored provider credential."""

    name = "gateway_key"

    def enabled(self) -> bool:
        # As the request's own key lookup left it (proxy/access.py asks on every request, at most
        # once a second from the database): no database here, and no expiry between the two.
        return keys_exist_known()

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        return await key_request(x)

    def relay_filter(self, x: Exchange, is_sse: bool) -> AnswerFilter | None:
        return x.echo_mask  # event streams too: an error event may quote the key it was sent with


class TagsStep(Step):
    """The gateway's tag headers (X-Gateway-User, X-Gateway-Session-Id, X-Gateway-Meta-*) stay out of the upstream request.

    They are the gateway's business (logs/tags.py: the log stores them on the request row); a
    provider could reject or echo them. Their removal is logged like any change to the request.
    """

    name = "tags"

    async def request(self, x: Exchange) -> None:
        removed = [k for k, _ in x.forward_headers if tag_header(k)]
        if not removed:
            return None
        x.forward_headers = [(k, v) for k, v in x.forward_headers if not tag_header(k)]
        x.decisions.append({"step": self.name, "decision": "kept the gateway's tag headers from the upstream",
                            "changed": [f"removed header {k}" for k in removed]})
        x.request_changed = True
        return None


class HooksStep(Step):
    """GATEWAY_HOOKS: the user's request hooks (proxy/hooks.py); off, and free, when none are configured."""

    name = "hooks"

    def enabled(self) -> bool:
        return bool(settings.GATEWAY_HOOKS)

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        before = (x.method, x.route.upstream_path, x.query, x.forward_body)
        answer = await hooks_request(x, hooks_loaded())
        unchanged = (x.method, x.route.upstream_path, x.query) == before[:3] and x.forward_body is before[3]
        if answer is not None or unchanged:
            return answer
        # A hook sent it elsewhere or changed its query (a realtime upgrade's model) or body: its gateway key is
        # held to what goes upstream (a model it may not use, or one without a price for a key with a budget,
        # counts as at arrival).
        return await _key_rejudged(x, "hooks")


class CacheStep(Step):
    """The response cache (proxy/cache.py): X-Gateway-Cache asks for it, so it is always listening.

    After the hooks (a hook's change is part of what is cached) and the key step (a refused key
    never reaches it; the key scopes it), before the hold queue (a hit is never held).
    """

    name = "cache"

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        return await cache_request(x)


class HoldStep(Step):
    """The hold queue (proxy/hold.py): a matching request waits for an operator's decision.

    Off (an attribute read) while the switch, read from the database at most a second ago, is off.
    An approved request is judged again by its gateway key (key_rejudge): the key may have been revoked
    while it waited, and an operator's edit may name a model the key may not use.
    """

    name = "hold"

    def enabled(self) -> bool:
        return hold_may_apply()

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        answer = await hold_request(x)
        if answer is not None or x.held_ms is None:  # rejected, or not held
            return answer
        return await _key_rejudged(x, "hold")


async def _key_rejudged(x: Exchange, after: str) -> HttpResponseBase | None:
    """The gateway key's refusal of the request as a step left it (key_rejudge), or None; a changed request's
    log keeps what it was made into (a hook's or an operator's edit) beside the refusal, though never sent."""
    answer = await key_rejudge(x, after)
    if answer is not None and x.request_changed:
        await forwarded_note(x)
    return answer


class StreamUsageStep(Step):
    """Ask streams for usage the client did not ask for, and hide it from that client: with STREAM_USAGE=inject for
    every stream, and always for a gateway key that counts tokens or spend.

    OpenAI reports a stream's usage only in a final chunk the client must ask for
    (stream_options.include_usage). The provider module rewrites the body; this step forwards it
    with an uncompressed stream (its usage event is cut out of the plain text), and drops that
    one event on its way to the client. The log keeps the body the client sent and every byte
    the upstream answered; `usage_injected` says the body was changed. A key with a budget or a token
    limit counts what the log knows of each answer: a stream without its usage counted nothing, so its
    client could leave include_usage out and never spend. The body rewritten is the one that would go
    upstream (a hook's or the hold queue's change kept), decoded when it came compressed.
    """

    name = "stream_usage"

    def enabled(self) -> bool:
        return settings.STREAM_USAGE == "inject" or keys_exist_known()

    async def request(self, x: Exchange) -> HttpResponseBase | None:
        if not (settings.STREAM_USAGE == "inject" or x.usage_counted):
            return None
        if not x.provider.usage_injectable(x.method, x.route.upstream_path):
            return None
        if x.forward_body is None and not x.body.size:
            return None
        # The key step's reading when it read the body (one parse and one ambiguity check a request), decoded when
        # it came compressed (off the event loop, as a spooled body). One that decodes past READ_DECODED_MAX cannot
        # be read: a key counting usage is refused it (it went upstream unasked, its usage uncounted).
        reading = await x.body_reading()
        if reading.unread and x.usage_counted:
            # A body that may read otherwise upstream ({"stream": true, "stream": false}, read here as no stream)
            # may stream without its usage: the key counted nothing.
            return x.body_refusal(self.name, reading.unread, self._reads_for(x))
        try:
            injected = usage_body(x.provider, x.method, x.route.upstream_path, reading)
        except UsageUnknowable as exc:
            if x.usage_counted:  # its answer might count nothing: fail closed
                return x.body_refusal(self.name, f"{exc}: name the field in lower case, as the SDKs do",
                                      self._reads_for(x))
            x.decisions.append({"step": self.name, "decision": f"not asked for usage: {exc}"})
            return None  # STREAM_USAGE=inject alone: forwarded as it came
        if injected is None:
            return None
        encoded = any(k.lower() == "content-encoding" for k, _ in x.forward_headers)
        dropped = {"accept-encoding", "content-encoding"}
        x.forward_body, x.usage_injected = injected, True
        x.forward_headers = [(k, v) for k, v in x.forward_headers if k.lower() not in dropped]
        x.forward_headers.append(("Accept-Encoding", "identity"))
        changed = ["body: stream_options.include_usage = true", "Accept-Encoding: identity"]
        if encoded:
            changed.append("body: sent uncompressed (Content-Encoding removed)")
        x.decisions.append({"step": self.name, "decision": "asked the stream for usage", "changed": changed})
        return None

    @staticmethod
    def _reads_for(x: Exchange) -> str:
        return f"gateway key '{x.gateway_key.name}', which counts its spend or tokens (whether its answer streams)"

    def relay_filter(self, x: Exchange, is_sse: bool) -> AnswerFilter | None:
        return EventFilter(x.provider.injected_event) if x.usage_injected and is_sse else None


def usage_body(provider: Provider, method: str, upstream_path: str, reading: BodyReading) -> bytes | None:
    """The body with the provider's ask for its stream's usage, or None when it needs none (or is not JSON)."""
    if not reading.is_json:
        return None
    injected = provider.usage_inject(method, upstream_path, reading.payload)
    return None if injected is None else json_bytes(injected)


STEPS: list[Step] = [KeyStep(), TagsStep(), HooksStep(), CacheStep(), HoldStep(), StreamUsageStep()]


def steps_active() -> list[Step]:
    """The steps that are on, in order."""
    return [step for step in STEPS if step.enabled()]


async def steps_run(x: Exchange, steps: list[Step]) -> HttpResponseBase | None:
    """Run the request side of each step in order; the first answer ends the exchange."""
    try:
        for step in steps:
            try:
                answer = await step.request(x)
            except Exception as exc:  # noqa: BLE001  (CancelledError is not an Exception: it goes on up)
                return _step_failed(x, step, exc)
            if answer is not None:
                return answer
        return None
    finally:
        x.body_reading_drop()


def _step_failed(x: Exchange, step: Step, exc: Exception) -> HttpResponseBase:
    """A step that raised (a gateway bug, its store away): a 500 in the provider's shape naming the step,
    logged as the step's answer with its traceback (secrets scrubbed), never forwarded."""
    message = error_scrub(f"The gateway's {step.name} step failed: {type(exc).__name__}: {exc}", x.scrubber.secrets)
    trace = error_scrub("".join(traceback.format_exception(exc)), x.scrubber.secrets)
    log.error("exchange %s: %s\n%s", x.request_id, message, trace)
    x.decisions.append({"step": step.name, "decision": "error", "error": message, "traceback": trace})
    x.outcome, x.error = Outcome.GATEWAY_ERROR, message
    return json_error(500, x.provider.error_body(message, kind=x.provider.error_kind(500), status=500))


def relay_filter(x: Exchange, steps: list[Step], is_sse: bool) -> AnswerFilter | None:
    """The filter the steps put on the answer, in their order (one, most often, or none)."""
    found = [f for step in steps if (f := step.relay_filter(x, is_sse)) is not None]
    if len(found) > 1:
        return AnswerFilters(found)
    return found[0] if found else None
