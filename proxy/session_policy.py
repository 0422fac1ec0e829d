"""What the policy steps decide about a realtime session after its upgrade: why the gateway ends one (SessionStop), and
the judges of the models its client's messages ask for.

A step that holds sessions to models (a gateway key limited to models or with a budget, a hook's on_session_model)
judges the upgrade's model when the steps run, but a client may ask for a model later: Gemini Live's setup (its first
message, the session naming no model before it), OpenAI Realtime's session.update, a second setup. So the step
leaves a judge on the exchange (session_model_judge_add), and proxy/websocket.py asks every judge, in the steps'
order, about each client message that asks for a model (or whose JSON the provider may read otherwise: it may ask
for one), before that message goes upstream. The first judge that refuses decides, and has logged its decision as
its step's: a first message refused ends the session before the upstream is opened (a refused session never
reaches the provider); a later one is answered with the protocol's error event and not forwarded, the session going
on (OpenAI), or ends the session where the protocol has no error event (Gemini Live). One path for every step and
every message, so the key and the hooks see the same message read the same way.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote

from proxy.exchange import Exchange


@dataclass
class SessionStop:
    """Why the gateway ends a realtime session: for the client's error event and close frame, and the log."""

    message: str  # the whole reason, as an HTTP refusal would say it (the error event's message)
    reason: str  # the close frame's reason (at most 123 bytes)
    kind: str  # the provider's error type, as the HTTP refusal's
    code: str  # the error event's code: gateway_key_budget, gateway_key_tokens, gateway_key_revoked...
    close_code: int  # 1008 (policy violation: the SDKs do not reconnect), 1011 (a hook failed) or 1013 (try later)


@dataclass(frozen=True)
class ModelAsked:
    """A client message that asks for a model, or may (its JSON read otherwise upstream), as the judges see it."""

    model: str | None  # the model it names; None: none, or not for sure (ambiguity)
    ambiguity: str  # wire.jsonutil.json_ambiguity's words ("repeats a key"...), or ""
    seq: int  # its frame's seq in the log
    event: str | None  # its event's type, for the log (None: not an object with a str type)
    first: bool  # the session's first message, the upstream not opened yet (a session naming its model there)
    ends: bool  # a refusal ends the session: the first message, or a protocol without error events (Gemini Live)


# A step's judge: the stop (for a message that does not end the session, the error event's message, kind and code),
# its decision already logged by the step, or None to let the message go on.
SessionModelJudge = Callable[[ModelAsked], Awaitable[SessionStop | None]]


def model_in_first_message(x: Exchange) -> bool:
    """A realtime session whose model only its first message names (Gemini Live's setup), not its upgrade."""
    return x.websocket and x.provider.realtime_model_in_first_message(unquote(x.route.upstream_path))


def session_model_judge_add(x: Exchange, judge: SessionModelJudge) -> None:
    """A step will judge the models the session's messages ask for (after the steps before it, before the ones after
    it)."""
    x.session_model_judges = (*x.session_model_judges, judge)


async def session_model_judged(x: Exchange, asked: ModelAsked) -> SessionStop | None:
    """The first judge's stop, in the steps' order, or None when every judge lets the message go on."""
    for judge in x.session_model_judges:
        stop = await judge(asked)
        if stop is not None:
            return stop
    return None
