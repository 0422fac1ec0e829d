"""What the policy steps decide about a realtime session after its upgrade: why the gateway ends one (SessionStop), and
the judges of a session whose model only its first message names (Gemini Live's setup).

Such a session names no model at its upgrade, so a step that holds sessions to models (a gateway key limited to
models or with a budget, a hook's on_session_model) cannot judge it when the steps run. It leaves a judge on the
exchange instead (first_message_judge_add); proxy/websocket.py then accepts the client, reads its first message and
asks every judge, in the steps' order, before it opens the upstream. The first judge that refuses ends the session
(its close frame saying why) and has logged its decision as its step's: a refused session never reaches the
provider. One path for every step, so the key and the hooks see the same message read the same way.
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


# A step's judge of the first message: (the model it names or None, its JSON ambiguity or "", its frame's seq in the
# log) -> the stop, its decision already logged by the step, or None to let the session open.
FirstMessageJudge = Callable[[str | None, str, int], Awaitable[SessionStop | None]]


def model_in_first_message(x: Exchange) -> bool:
    """A realtime session whose model only its first message names (Gemini Live's setup), not its upgrade."""
    return x.websocket and x.provider.realtime_model_in_first_message(unquote(x.route.upstream_path))


def first_message_judge_add(x: Exchange, judge: FirstMessageJudge) -> None:
    """A step will judge the session by its first message (after the steps before it, before the ones after it)."""
    x.first_message_judges = (*x.first_message_judges, judge)


async def first_message_judged(x: Exchange, model: str | None, ambiguity: str, seq: int) -> SessionStop | None:
    """The first judge's stop, in the steps' order, or None when every judge lets the session open."""
    for judge in x.first_message_judges:
        stop = await judge(model, ambiguity, seq)
        if stop is not None:
            return stop
    return None
