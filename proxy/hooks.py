"""Request hooks (GATEWAY_HOOKS): the user's code, run on every request before it goes upstream and on its answer.

Each entry is a dotted path to an object (an instance, a class built with no arguments, or a
module) with `on_request(exchange)`, `on_response(exchange)` and/or `on_session_model(exchange)` (a
model a realtime session's client message asks for: proxy/session_policy.py), sync or async. They are
loaded once, at start (a bad one stops the start with ImproperlyConfigured naming it). Sync
hooks run in a worker thread (proxy/threads.py), so a slow one never blocks the event loop; one that says it never
waits on I/O (`blocking = False`) runs on the loop and saves the thread hop. The hooks share one
proxy/hook_exchange.HookExchange per request; what they changed is applied to the Exchange
and logged once they have all run (see docs/hooks.md).
"""

import asyncio
import dataclasses
import importlib
import inspect
import json
import logging
import traceback
from collections.abc import Callable
from functools import lru_cache
from types import ModuleType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponseBase
from django.utils.module_loading import import_string

from logs.outcomes import Outcome
from logs.redaction.redact import credentials_collect
from logs.redaction.scrub import Scrubber, error_scrub
from proxy.exchange import Exchange, json_error
from proxy.hook_exchange import HookExchange
from proxy.paths import PathRefused, path_check
from proxy.request_body import body_decoded
from proxy.session_policy import ModelAsked, SessionStop, session_model_judge_add
from proxy.threads import ParkedThreads
from proxy.upstream import HOP_BY_HOP, header_problem

log = logging.getLogger(__name__)

STEP = "hooks"
# What a hook's call may raise and still be its failure: a hook (or a library it calls) that calls sys.exit()
# ended the exchange with uvicorn's bare 500, unlogged. A CancelledError (the client left) goes on up.
HOOK_FAILURES = (Exception, SystemExit)
LOGGED_BODY_MAX = 64 * 1024  # a replaced answer body longer than this is logged by size and hash only


@dataclasses.dataclass(frozen=True)
class Hook:
    """One loaded hook: its dotted path (its name in logs and errors) and its two methods."""

    path: str
    on_request: Callable | None
    on_response: Callable | None
    skip_on_error: bool  # GATEWAY_HOOKS_SKIP_ON_ERROR: a failure is logged and the hook skipped
    blocking: bool = True  # False: its sync methods never wait on I/O, so they run on the event loop
    on_session_model: Callable | None = None  # judges the models a realtime session's client messages ask for

    async def call(self, method: Callable, hx: HookExchange) -> Any:
        """Run one of its methods: a coroutine function awaited; a plain one in a thread, unless it
        declared itself non-blocking (the thread hop is most of a no-op hook's cost, docs/benchmark.md).

        At most HOOK_TIMEOUT_SECONDS, else HookTimedOut: a coroutine is cancelled; a thread cannot be, so
        the gateway stops waiting and its result is dropped (proxy/threads.py). A method run on the loop
        holds the loop while it runs: nothing can interrupt it, so it has no limit.
        """
        if not self.blocking and not _is_async(method):
            return method(hx)
        limit = settings.HOOK_TIMEOUT_SECONDS
        try:
            async with asyncio.timeout(limit) as deadline:  # a timer on the loop, no task of its own
                result = await (method(hx) if _is_async(method) else _THREADS.run(method, hx))
        except TimeoutError:
            if deadline.expired():
                raise HookTimedOut(limit) from None
            raise  # the hook's own TimeoutError (its HTTP call's): a failure like any other
        if deadline.expired():  # a coroutine that swallowed its cancellation and came back late
            raise HookTimedOut(limit)
        return result


_THREADS = ParkedThreads("hook")  # its own threads: a slow hook never delays the gateway's own file work


@lru_cache(maxsize=64)
def _is_async(method: Callable) -> bool:
    """Whether a hook method is a coroutine function (asked once per method: inspect's answer is slow)."""
    return inspect.iscoroutinefunction(method)


class HookTimedOut(Exception):
    """A hook call ran past HOOK_TIMEOUT_SECONDS: the gateway stopped waiting for it."""

    def __init__(self, limit: float) -> None:
        super().__init__(f"no answer within HOOK_TIMEOUT_SECONDS ({limit:g} s)")


class HookFailed(Exception):
    """A hook raised, or returned something it may not; the message names it."""

    def __init__(self, hook: Hook, message: str, trace: str) -> None:
        super().__init__(message)
        self.hook, self.trace = hook, trace


def _target_import(path: str) -> object:
    """A module (`myhooks.audit`, imported by its own name), else an object of one (`myhooks.audit.Tagger`):
    import_string alone looks up a module's submodule as an attribute, so it finds one only once imported."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name != path:  # the module exists and imports a missing one: that is the error
            raise
    return import_string(path)


def hook_load(path: str, skip_on_error: bool = False) -> Hook:
    """Import one hook; ImproperlyConfigured naming it when it cannot be imported or has no hook method."""
    try:
        target = _target_import(path)
    except Exception as exc:  # ImportError, and whatever the module raises as it is imported
        raise ImproperlyConfigured(f"GATEWAY_HOOKS: cannot import {path!r}: {type(exc).__name__}: {exc}") from None
    if inspect.isclass(target):
        try:
            target = target()
        except Exception as exc:
            raise ImproperlyConfigured(f"GATEWAY_HOOKS: {path!r} could not be built with no arguments: "
                                       f"{type(exc).__name__}: {exc}") from None
    on_request = getattr(target, "on_request", None)
    on_response = getattr(target, "on_response", None)
    on_session_model = getattr(target, "on_session_model", None)
    if not any(map(callable, (on_request, on_response, on_session_model))):
        kind = "module" if isinstance(target, ModuleType) else type(target).__name__
        raise ImproperlyConfigured(f"GATEWAY_HOOKS: {path!r} ({kind}) has none of on_request, on_response and "
                                   "on_session_model")
    blocking = getattr(target, "blocking", True)
    if not isinstance(blocking, bool):
        raise ImproperlyConfigured(f"GATEWAY_HOOKS: {path!r} has blocking = {blocking!r}; it must be True or False")
    return Hook(path, on_request if callable(on_request) else None, on_response if callable(on_response) else None,
                skip_on_error, blocking, on_session_model if callable(on_session_model) else None)


@lru_cache(maxsize=8)
def _hooks_load(paths: tuple[str, ...], skip: tuple[str, ...]) -> tuple[Hook, ...]:
    unknown = [p for p in skip if p not in paths]
    if unknown:
        raise ImproperlyConfigured(f"GATEWAY_HOOKS_SKIP_ON_ERROR names hooks not in GATEWAY_HOOKS: {', '.join(unknown)}")
    return tuple(hook_load(p, p in skip) for p in paths)


def hooks_loaded() -> tuple[Hook, ...]:
    """The configured hooks, in order (loaded once per setting value)."""
    paths, skip = settings.GATEWAY_HOOKS, settings.GATEWAY_HOOKS_SKIP_ON_ERROR
    if not paths and not skip:  # a skip list without hooks is a mistake too (GATEWAY_HOOKS misspelled): say so
        return ()
    return _hooks_load(tuple(paths), tuple(skip))


def _failure(hook: Hook, what: str, exc: BaseException, x: Exchange, hx: HookExchange) -> HookFailed:
    """A hook's exception as HookFailed, its traceback scrubbed of the exchange's secrets, and of any
    credential the hook had put in before it failed (not yet applied, so not yet the exchange's)."""
    secrets = list(x.scrubber.secrets)
    try:
        pairs = [(k, v) for k, v in hx.headers if isinstance(k, str) and isinstance(v, str)]
        secrets += [c for c in credentials_collect(pairs, hx.query if isinstance(hx.query, str) else "")
                    if c not in secrets]
    except (TypeError, ValueError):  # headers the hook left malformed: what they hold is in the trace only
        pass
    if isinstance(exc, HookTimedOut):  # its traceback would be the gateway's, not the hook's
        message = f"Hook {hook.path} timed out in {what}: {exc}"
        trace = f"{message}; it may still be running: what it returns or changes from now on is ignored"
        return HookFailed(hook, message, trace)
    trace = error_scrub("".join(traceback.format_exception(exc)), secrets)
    message = error_scrub(f"Hook {hook.path} failed in {what}: {type(exc).__name__}: {exc}", secrets)
    return HookFailed(hook, message, trace)


def _skipped_note(x: Exchange, failure: HookFailed) -> None:
    """A skipped failure is said in the response row's error_message too, where a list of exchanges shows it
    (the exchange itself went on, so its outcome stays as it ends)."""
    x.notes.append(f"{failure} (skipped: GATEWAY_HOOKS_SKIP_ON_ERROR)")


def _failed_decision(failure: HookFailed, skipped: bool) -> dict:
    return {"step": STEP, "hook": failure.hook.path, "decision": "skipped after an error" if skipped else "error",
            "error": str(failure), "traceback": failure.trace}


def _failure_noted(hook: Hook, what: str, exc: BaseException, x: Exchange, hx: HookExchange,
                   kept: bytes | None = None) -> tuple[HookFailed, dict, HookExchange]:
    """A hook's failure on the console and in the exchange's steps (and its note, when it is skipped); with the
    HookExchange the hooks after it see. What it changed before it failed is dropped: they start from what the hooks
    before it left (applied to the Exchange; the answer's body `kept`), and one that timed out keeps the old copy to
    itself."""
    failure = _failure(hook, what, exc, x, hx)
    log.error("%s\n%s", failure, failure.trace)
    decision = _failed_decision(failure, hook.skip_on_error)
    x.decisions.append(decision)
    if hook.skip_on_error:
        _skipped_note(x, failure)
    return failure, decision, hx.detached(kept)


def _failed_answer(x: Exchange, failure: HookFailed) -> HttpResponseBase:
    """The 500 naming the hook, in the provider's error shape, that the SDKs are told not to retry: a hook
    that raised raises again on the same request, and openai-python and -node and anthropic retry a 500 twice
    by default (three calls and log rows for one bug; on the answer, three upstream bills)."""
    x.outcome, x.error = Outcome.GATEWAY_ERROR, str(failure)
    answer = json_error(500, x.provider.error_body(str(failure), kind="hook_error", status=500), x.request_id)
    answer["X-Should-Retry"] = "false"
    return answer


def _answer_check(answer: object) -> None:
    """What on_request may answer with: an HttpResponse whose status an HTTP server can send (a Django response
    takes `status_code = 0` as it is, and the server then broke the connection)."""
    if not isinstance(answer, HttpResponseBase):
        raise TypeError(f"on_request returned {type(answer).__name__}; return None or an HttpResponse")
    status = answer.status_code
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:  # HTTPStatus is an int
        raise ValueError(f"on_request answered with status {status!r}; an answer's status is 200 to 599")


def _snapshot(hx: HookExchange) -> tuple:
    return hx.method, hx.path, hx.query, list(hx.headers)


def _changes(before: tuple, hx: HookExchange) -> list[str]:
    """What a hook changed in the request."""
    method, path, query, headers = before
    changed = [name for name, old, new in (("method", method, hx.method), ("path", path, hx.path),
                                           ("query", query, hx.query), ("headers", headers, hx.headers))
               if old != new]
    if hx.body_changed:
        changed.append("body")
        hx.body_changed = False
    return changed


def _apply(x: Exchange, hx: HookExchange, changed: set[str]) -> None:
    """Make the request what the hooks left (checked: a bad value is the last hook's fault)."""
    if "method" in changed:
        if not isinstance(hx.method, str) or not (hx.method.isascii() and hx.method.isalpha()):
            raise ValueError(f"method must be a word like POST, not {hx.method!r}")
        x.method = hx.method.upper()
    if "path" in changed:
        if not isinstance(hx.path, str):
            raise ValueError(f"path must be a str, not {type(hx.path).__name__}")
        try:
            path_check(hx.path)
        except PathRefused as exc:
            raise ValueError(f"path {hx.path!r} refused: {exc}") from None
        x.route = dataclasses.replace(x.route, upstream_path=hx.path)
    if "query" in changed:
        if not isinstance(hx.query, str) or not hx.query.isascii() or any(c in hx.query for c in " #\r\n"):
            raise ValueError(f"query must be an encoded query string, not {hx.query!r}")
        x.query = hx.query
    if "headers" in changed:
        pairs = [(str(k), str(v)) for k, v in hx.headers]
        if problem := next((p for k, v in pairs if (p := header_problem(k, v))), ""):
            raise ValueError(problem)
        framing = sorted({k for k, _ in pairs if k.lower() in HOP_BY_HOP})
        if framing:  # the gateway frames the body and names the host: one set here would contradict it
            raise ValueError(f"headers may not include {', '.join(framing)}: the gateway sets them itself")
        x.forward_headers = pairs
    if "body" in changed:
        x.forward_body = hx.body
        if hx.body_was_decoded:  # hooks read and write a compressed body decoded: it goes upstream as they left it
            x.forward_headers = [(k, v) for k, v in x.forward_headers if k.lower() != "content-encoding"]
            hx.headers[:] = [(k, v) for k, v in hx.headers if k.lower() != "content-encoding"]
            hx.body_was_decoded = False
    if "headers" in changed or "query" in changed:
        added = [c for c in credentials_collect(x.forward_headers, x.query) if c not in x.scrubber.secrets]
        if added:  # a credential a hook puts in goes upstream: an echo of it is masked in the log too
            x.scrubber = Scrubber([*x.scrubber.secrets, *added])


def _metadata_note(x: Exchange, hx: HookExchange) -> None:
    """The hooks' metadata, logged as a decision of its own (kept up to date until the log is written)."""
    if not hx.metadata:
        return
    try:
        data = json.loads(json.dumps(hx.metadata, default=str))
    except (TypeError, ValueError, RecursionError) as exc:
        data = {"unloggable": f"{type(exc).__name__}: {exc}"}
    for entry in x.decisions:
        if entry.get("step") == STEP and entry.get("decision") == "metadata":
            entry["metadata"] = data
            return
    x.decisions.append({"step": STEP, "decision": "metadata", "metadata": data})


async def hooks_request(x: Exchange, hooks: tuple[Hook, ...]) -> HttpResponseBase | None:
    """Run each hook's on_request; apply and log what they changed, or the answer one gave."""
    hx = HookExchange(x)
    changed: set[str] = set()
    answer = None
    for hook in hooks:
        if hook.on_request is None:
            continue
        before = _snapshot(hx)
        try:
            answer = await hook.call(hook.on_request, hx)
            if answer is not None:
                _answer_check(answer)
            hx.json_edits_take()
            hook_changed = _changes(before, hx)
            _apply(x, hx, set(hook_changed))
        except HOOK_FAILURES as exc:
            failure, _, hx = _failure_noted(hook, "on_request", exc, x, hx)
            if hook.skip_on_error:
                answer = None
                continue
            answer = _failed_answer(x, failure)
            break
        if hook_changed:
            changed.update(hook_changed)
            x.decisions.append({"step": STEP, "hook": hook.path, "decision": "changed", "changed": hook_changed})
        if answer is not None:
            x.decisions.append({"step": STEP, "hook": hook.path, "decision": "answered", "status": answer.status_code})
            if answer.status_code >= 400:
                x.outcome, x.error = Outcome.GATEWAY_ERROR, f"answered {answer.status_code} by hook {hook.path}"
            break
    _metadata_note(x, hx)
    if changed:
        x.request_changed = True  # proxy/forward.py logs what goes upstream once every step has run
    if answer is None and any(h.on_response is not None for h in hooks):
        x.answer_observer = lambda status, headers, body: hooks_response(x, hx, hooks, status, headers, body)
    if answer is None and x.websocket and any(h.on_session_model is not None for h in hooks):
        # A session's messages may ask for a model (Gemini Live's setup, a session.update): the hooks judge each, as
        # the key does, on the same path (proxy/session_policy.py).
        session_model_judge_add(x, lambda asked: hooks_session_model(x, hx, hooks, asked))
    return answer


async def hooks_session_model(x: Exchange, hx: HookExchange, hooks: tuple[Hook, ...],
                              asked: ModelAsked) -> SessionStop | None:
    """Run each hook's on_session_model on a realtime session's client message asking for a model, before it goes
    upstream (a first message: before the upstream is opened). A message the provider may read otherwise than the
    gateway (a key repeated) names no model for sure: the hooks see None. A str a hook returns refuses the message,
    a failure refuses it too (unless the hook is skipped on error): the stop ends the session when `asked.ends`
    (close 1008 with the str, 1011 for a failure), else it is the error event the client gets instead of the
    message going upstream. Changes to the request are not applied (the upgrade's were, after on_request)."""
    model = None if asked.ambiguity else asked.model
    hx.session_model_set(model)
    try:
        for hook in hooks:
            if hook.on_session_model is None:
                continue
            try:
                refusal = await hook.call(hook.on_session_model, hx)
                if refusal is not None and not isinstance(refusal, str):
                    raise TypeError(f"on_session_model returned {type(refusal).__name__}; return None or a str "
                                    "(why the session is refused)")
            except HOOK_FAILURES as exc:
                failure, _, hx = _failure_noted(hook, "on_session_model", exc, x, hx)
                if hook.skip_on_error:
                    continue
                if asked.ends:
                    x.fail(Outcome.GATEWAY_ERROR, str(failure))
                return SessionStop(str(failure), str(failure), "api_error", "gateway_hook_error", 1011)
            if refusal:
                if asked.ends:
                    x.decisions.append({"step": STEP, "hook": hook.path, "decision": "session refused",
                                        "reason": refusal, "seq": asked.seq, "model": model})
                    x.fail(Outcome.GATEWAY_ERROR, f"Hook {hook.path} refused the session: {refusal}")
                else:
                    x.decisions.append({"step": STEP, "hook": hook.path, "decision": "client event refused",
                                        "reason": refusal, "seq": asked.seq, "event": asked.event, "model": model})
                return SessionStop(refusal, refusal, "permission_error", "gateway_hook_refused", 1008)
    finally:
        _metadata_note(x, hx)
    return None


async def hooks_response(x: Exchange, hx: HookExchange, hooks: tuple[Hook, ...], status: int,
                         headers: list[tuple[str, str]], body: bytes | None) -> bytes | HttpResponseBase | None:
    """Run each hook's on_response: the new body (a replacement), a 500 naming a failed hook, or None."""
    decoded = body_decoded(headers, body, settings.HOOKS_RESPONSE_MAX_BYTES) if body is not None else None
    hx.answer_set(status, headers, decoded)
    try:
        for hook in hooks:
            if hook.on_response is None:
                continue
            kept = hx.response_body  # the answer as the hooks before it left it
            try:
                await hook.call(hook.on_response, hx)
            except HOOK_FAILURES as exc:
                failure, decision, hx = _failure_noted(hook, "on_response", exc, x, hx, kept)
                if hook.skip_on_error:
                    continue
                if body is None:  # a streamed answer (or one over the cap) is already with the client
                    if x.outcome == Outcome.COMPLETED:  # a broken stream keeps its own cause
                        x.outcome = Outcome.GATEWAY_ERROR
                        x.error = f"{failure}; the client had the upstream's answer already (streamed)"
                    continue
                answer = _failed_answer(x, failure)
                # The log keeps the upstream's answer (received, and billed: its usage and cost count); what the
                # client got instead is this step's to say, as for a replaced body.
                decision.update(status=answer.status_code, response_body=answer.content.decode())
                x.notes.append(f"the client got the hook's {answer.status_code} instead of the upstream's answer "
                               "logged here")
                return answer
            if hx.response_body_changed:
                hx.response_body_changed = False
                new = hx.response_body
                entry = {"step": STEP, "hook": hook.path, "decision": "changed", "changed": ["response body"],
                         "response_body_size": len(new)}
                if len(new) <= LOGGED_BODY_MAX:
                    entry["response_body"] = new.decode("utf-8", "replace")
                x.decisions.append(entry)
    finally:
        _metadata_note(x, hx)
    return hx.response_body if body is not None and hx.response_body is not decoded else None
