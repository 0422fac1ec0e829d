"""The gateway-key step's work (KeyStep in proxy/steps.py): what a key of the keys app may do, and its limits.

The key was identified before the request was logged (proxy/access.py). This step refuses a
provider or model the key does not allow (403), a body it must read and cannot read for sure (400: bad
input, Exchange.body_refusal), applies its limits (budget, tokens and requests
per minute; 429 with Retry-After), puts the RateLimit fields on every answer to a limited key,
and swaps the key's stored provider credential in upstream. Each refusal is an exchange of the
log with no upstream call; a refusal by a limit has the outcome `rate_limited`. A realtime session,
admitted at its upgrade, is then held to its key as it runs (SessionLimits): stopped when the key
is revoked or goes over its budget or tokens per minute, and refused a model the key does not allow
or, for a key with a budget, one without a price (a Gemini Live session, whose model only its first
message names, is refused by that message, before it goes upstream).
"""

import dataclasses
import json
import re
import time
from collections import deque
from functools import lru_cache
from datetime import datetime, timezone
from decimal import Decimal
from math import ceil
from urllib.parse import unquote

from django.db import DatabaseError
from django.http import HttpResponse

from keys.crypto import CredentialUnreadable, credential_decrypt
from keys.limits import Verdict, limits_apply, limits_recheck, policies
from keys.models import GatewayKey
from keys.selectors import TOKENS_WINDOW, keys_exist_known
from keys.store import REDIS_AWAY_SECONDS, StoreUnavailable
from logs.outcomes import Outcome
from logs.pricing import price_known
from logs.redaction.scrub import Scrubber, byte_replacements
from providers import Provider
from providers.base import SUBPROTOCOL_HEADER, usage_counts
from proxy.access import KeyGrant, key_current, key_refusal, keys_unreadable
from proxy.exchange import Exchange, json_error
from proxy.session_policy import ModelAsked, SessionStop, model_in_first_message, session_model_judge_add
from wire.jsonutil import text_valid


STEP = "gateway_key"


async def key_request(x: Exchange) -> HttpResponse | None:
    """Refuse what the key may not do or has no room left for; otherwise swap in its provider credential."""
    grant = x.gateway_key
    if not isinstance(grant, KeyGrant):
        return None  # unkeyed (GATEWAY_ALLOW_UNKEYED) or a GATEWAY_API_KEYS key: no limits
    key = grant.key
    try:
        refused = await _permission_refusal(x, key)
    except BodyUnread as exc:
        answer = x.body_refusal(STEP, str(exc), _reads_for(key))
    else:
        answer = _refuse(x, 403, refused, kind="permission_error", outcome=Outcome.GATEWAY_ERROR) if refused else None
    if answer is not None:
        if key.limited:  # every answer to a limited key says its limits (this one took nothing from them)
            x.answer_headers.extend(policies(key))
        return answer
    if _holds_models(key) and x.websocket:  # what its messages ask for: Gemini Live's setup, a session.update
        session_model_judge_add(x, lambda asked: _session_model_judge(x, asked))
    if key.limited:
        try:
            verdict: Verdict = await limits_apply(key)
        except StoreUnavailable as exc:
            if exc.detail:
                x.notes.append(f"limit store: {exc.detail}")
            x.answer_headers.extend([*policies(key), ("Retry-After", str(ceil(REDIS_AWAY_SECONDS)))])
            return _refuse(x, 503, f"Gateway key limits cannot be checked: {exc}. Retry shortly.", kind="api_error",
                           outcome=Outcome.GATEWAY_ERROR)
        x.answer_headers.extend(verdict.headers())
        x.usage_counted = key.tpm is not None or key.budget_usd is not None
        if verdict.refusal:
            # Admitted requests are not noted (one JSON value fewer to write per exchange): their
            # key is on the request row, and what it had left is in the answer's RateLimit field.
            x.decisions.append({"step": STEP, "decision": "refused", "limit": verdict.limit,
                                "key": key.name, "remaining": verdict.remaining})
            return _refuse(x, 429, verdict.refusal, kind="rate_limit_error", outcome=Outcome.RATE_LIMITED)
    if key.provider_credential:
        if key.allowed_providers != [x.provider.name]:  # a key made before it had to name its one provider
            return _refuse(x, 403, f"Gateway key '{key.name}' holds a provider credential but does not name the one "
                                   "provider it is for: set its allowed providers to that one (admin, Gateway keys).",
                           kind="permission_error", outcome=Outcome.GATEWAY_ERROR)
        try:
            _credential_swap(x, grant, credential_decrypt(key.provider_credential))
        except CredentialUnreadable as exc:
            # It stays unreadable until an administrator sets it again: without this the SDKs (openai-python
            # and -node, anthropic, each retrying a 500 twice by default) sent every call three times.
            x.answer_headers.append(("X-Should-Retry", "false"))
            return _refuse(x, 500, f"Gateway key '{key.name}': {exc}", kind="api_error",
                           outcome=Outcome.GATEWAY_ERROR)
    return None


async def key_rejudge(x: Exchange, after: str) -> HttpResponse | None:
    """Judge a request again, as it goes upstream now, after a step that changed it or made it wait (`after`: the
    hooks, the hold): its key as it is now (revoked, expired or deleted meanwhile: 401, as at arrival) and what
    that key may do with the method, path and body that go upstream (a hook's or an operator's edit may name
    another model or endpoint: 403, as key_request refuses it). Its limits are not taken again: the request
    counted when it arrived."""
    grant = x.gateway_key
    if not isinstance(grant, KeyGrant):
        return None
    try:
        key = await key_current(grant.key.secret_hash)
    except DatabaseError as exc:  # as at arrival (proxy/refusals.py): a 503 the client may retry, not a 500
        x.notes.append(f"gateway keys not read: {type(exc).__name__}: {exc}")
        return _refuse(x, 503, keys_unreadable(exc), kind="gateway_error", outcome=Outcome.GATEWAY_ERROR)
    status, kind, refused = 401, "authentication_error", key_refusal(key)
    try:
        if not refused:
            status, kind, refused = 403, "permission_error", await _permission_refusal(x, key)
    except BodyUnread as exc:  # one decision for the one refusal: the body_refusal's, saying when
        return x.body_refusal(STEP, str(exc), _reads_for(key), decision=_rejudge_decision(after), key=grant.name)
    if not refused:
        return None
    x.decisions.append({"step": STEP, "decision": _rejudge_decision(after), "key": grant.name, "reason": refused})
    return _refuse(x, status, refused, kind=kind, outcome=Outcome.GATEWAY_ERROR)


def _rejudge_decision(after: str) -> str:
    return f"refused after the {after}, not forwarded"


async def _permission_refusal(x: Exchange, key: GatewayKey) -> str:
    """Why the key may not make this request as it would go upstream (provider or model not allowed, a model without
    a price for a key with a budget), or ""."""
    if key.allowed_providers and x.provider.name not in key.allowed_providers:
        return (f"Gateway key '{key.name}' may not call provider '{x.provider.name}' "
                f"(allowed: {', '.join(key.allowed_providers)}).")
    counted = key.budget_usd is not None or key.tpm is not None
    post = x.method == "POST"
    # A realtime session runs a model: one its upgrade does not name is the upstream's choice (OpenAI's without
    # ?model=), unless its provider names it in the session's first message, which the session checks.
    unmetered, known, runs, formats = _post_facts(x.provider, x.route.upstream_path) if post \
        else (False, True, x.websocket, False)
    if counted and unmetered:
        return (f"Gateway key '{key.name}' counts its spend or tokens, and what "
                f"'{unquote(x.route.upstream_path)}' uses never comes in an answer the gateway logs (a batch's "
                "results come later as a file, a fine-tuning job is billed apart, a client secret's holder and a WebRTC "
                "call talk to the upstream directly: open a realtime session through the gateway's WebSocket "
                "instead): it would count nothing. A key without a budget or a token limit may call it.")
    if (counted or key.allowed_models) and not known:
        limits = "is limited to some models" if key.allowed_models else "counts its spend or tokens"
        return (f"Gateway key '{key.name}' {limits}, and {x.provider.label} endpoint "
                f"'{unquote(x.route.upstream_path)}' is not one whose model the gateway knows (it may run any "
                "model, and its use may not come in an answer the gateway reads): a key without a model list, a "
                "budget or a token limit may call it.")
    formats = formats and counted
    if not key.allowed_models and key.budget_usd is None and not formats:
        return ""
    if model_in_first_message(x):
        return ""  # the judge key_request leaves on the exchange checks it, before that message goes upstream
    try:
        models, unread, payload = await _models_asked(x, runs)
    except BodyUnread:
        if key.allowed_models or formats or runs:
            raise
        models, unread, payload = [], "", None  # a key with a budget alone judges the model of what runs one
    if formats:
        if unread:
            return (f"Gateway key '{key.name}' counts its spend or tokens, and {unread}, so whether its answer "
                    "reports its usage cannot be known.")
        if withheld := x.provider.usage_withheld(unquote(x.route.upstream_path), payload):
            return (f"Gateway key '{key.name}' counts its spend or tokens, and {withheld}: it would count nothing. "
                    "Ask for a format that reports it, or use a key without a budget or a token limit.")
    if key.allowed_models:
        if unread:
            return f"Gateway key '{key.name}' is limited to some models, and {unread}."
        if not models and runs:
            return (f"Gateway key '{key.name}' is limited to some models ({', '.join(key.allowed_models)}), and this "
                    "request names none (the upstream would choose one): name the model.")
        refused = next((m for m in models if m not in key.allowed_models), None)
        if refused is not None:
            return f"Gateway key '{key.name}' may not use model '{refused}' (allowed: {', '.join(key.allowed_models)})."
    if key.budget_usd is not None:
        return _unpriced_refusal(x, key.name, models, unread, runs)
    return ""


def _unpriced_refusal(x: Exchange, name: str, models: list[str], unread: str, runs: bool) -> str:
    """Why a key with a budget may not make this request, or "": an answer the gateway cannot price costs
    nothing against the budget while the provider bills it, so a model without a price is refused (fail closed),
    and so is a request that runs a model it does not name or whose model cannot be read."""
    if x.method != "POST" and not x.websocket:
        return ""
    if unread and runs:
        return f"Gateway key '{name}' has a budget, and {unread}, so its price cannot be known."
    if not models and runs:
        return (f"Gateway key '{name}' has a budget, and this request names no model (the upstream would choose "
                "one, whose price the gateway cannot know): name the model.")
    unpriced = next((m for m in models if not price_known(x.provider, m)), None)
    return "" if unpriced is None else _unpriced_message(x.provider, name, unpriced)


def _unpriced_message(provider: Provider, name: str, model: str) -> str:
    """The refusal of a model without a price to a key with a budget, naming the entry that would allow it."""
    entry = json.dumps({provider.name: {model: {"input": 0, "output": 0}}})
    return (f"Gateway key '{name}' has a budget, and model '{model}' has no price for provider "
            f"'{provider.name}' (genai-prices does not know it): its answers would cost nothing against the "
            f"budget. An administrator can allow it by giving it a price, in USD per million tokens, in the "
            f"PRICE_TABLE_PATH file (a price of 0 is allowed): {entry}.")


class BodyUnread(Exception):
    """The key must read the request's body and cannot read it for sure (its message says why): bad input,
    answered 400 (Exchange.body_refusal), not a permission refused."""


def _reads_for(key: GatewayKey) -> str:
    """What the key reads a body for, as a refusal names it."""
    what = "is limited to some models" if key.allowed_models else (
        "has a budget" if key.budget_usd is not None else "counts its tokens")
    return f"gateway key '{key.name}', which {what}"


def _holds(key: GatewayKey) -> str:
    return "is limited to some models" if key.allowed_models else "has a budget"


def _holds_models(key: GatewayKey | None) -> bool:
    """Whether the key judges the models a session asks for: limited to some, or with a budget."""
    return key is not None and (bool(key.allowed_models) or key.budget_usd is not None)


def _model_refusal(x: Exchange, key: GatewayKey, model: str | None, ambiguity: str) -> tuple[str, str]:
    """Why a client's event may not ask for this model, and the close frame's short reason, or ("", ""): a key
    limited to other models, or a key with a budget and a model without a price (its use would count nothing:
    refused as a request naming it is, _unpriced_refusal). An event whose JSON the provider may read otherwise
    than the gateway (`ambiguity`, wire.jsonutil.json_ambiguity: a key repeated, nesting too deep) is refused
    whatever model it seems to name: it may ask for another, or be another type of event."""
    if ambiguity and _holds_models(key):
        return (f"Gateway key '{key.name}' {_holds(key)}, and this message {ambiguity} (JSON): what "
                f"{x.provider.label} reads in it cannot be known, so it is refused (the SDKs never send "
                "one).", f"gateway key '{key.name}': a message {ambiguity}")
    if not model:
        return "", ""
    if key.allowed_models and model not in key.allowed_models:
        return (f"Gateway key '{key.name}' may not use model '{model}' (allowed: {', '.join(key.allowed_models)}).",
                f"gateway key '{key.name}' may not use model '{model}'")
    if key.budget_usd is not None and not price_known(x.provider, model):
        return (_unpriced_message(x.provider, key.name, model),
                f"gateway key '{key.name}' has a budget and model '{model}' has no price")
    return "", ""


async def _session_model_judge(x: Exchange, asked: ModelAsked) -> SessionStop | None:
    """The key's judge of a session's message asking for a model, left by key_request: the stop of one that names a
    model the key may not use, or may read otherwise upstream (_model_refusal), or of a first message that names
    none (the key cannot be held to what it does not see: refused, fail closed); None lets it go on. The key as it
    is now (SessionLimits.check reads it again): a model it no longer allows is refused from then on."""
    key = x.gateway_key.key
    if asked.model or asked.ambiguity:
        message, reason = _model_refusal(x, key, asked.model, asked.ambiguity)
        if not message:
            return None
    else:
        message = (f"Gateway key '{key.name}' {_holds(key)}, and this session's first message names no model: a "
                   f"{x.provider.label} realtime session must open with its setup message naming the model "
                   "(as the SDKs' do).")
        reason = f"gateway key '{key.name}': the first message names no model"
    stop = SessionStop(message, reason, "permission_error", "gateway_key_model", 1008)
    if asked.ends:
        _stop_note(x, key, stop, Outcome.GATEWAY_ERROR, "", decision="session refused",
                   model=None if asked.ambiguity else asked.model, seq=asked.seq)
    else:
        x.decisions.append({"step": STEP, "decision": "client event refused", "seq": asked.seq, "event": asked.event,
                            "reason": message})
    return stop


def _stop_note(x: Exchange, key: GatewayKey, stop: SessionStop, outcome: str, limit: str,
               remaining: dict | None = None, *, decision: str = "session stopped", model: str | None = None,
               seq: int | None = None) -> None:
    """Note a session's stop in the exchange's steps and outcome (the session's row says the key's step ended it)."""
    noted = {"step": STEP, "decision": decision, "key": key.name, "reason": stop.message}
    if limit:
        noted["limit"] = limit
    if remaining:
        noted["remaining"] = remaining
    if seq is not None:  # the client message it refused (its frame in the log), and the model it named
        noted.update(seq=seq, model=model)
    x.decisions.append(noted)
    x.fail(outcome, stop.message)


@lru_cache(maxsize=4096)
def _post_facts(provider: Provider, upstream_path: str) -> tuple[bool, bool, bool, bool]:
    """(unmetered, known, runs a model, reports usage in some formats only) of a POST to this upstream path, as
    the provider module's lists say: a handful of regexes over the percent-decoded path, read once per path and
    process rather than on each request of a limited key (they were 15 us of one; the paths are the client's
    word, so the memo is bounded)."""
    formats = provider.usage_format_posts
    return (provider.post_unmetered("POST", upstream_path), provider.post_known(upstream_path),
            provider.model_runs("POST", upstream_path),
            formats is not None and bool(formats.search(unquote(upstream_path))))


async def _models_asked(x: Exchange, runs: bool) -> tuple[list[str], str, object]:
    """The models the request asks for (a batch's every one), or why they cannot be known ("" when it names none);
    and what its body says, when it was read. BodyUnread when the body itself cannot be read for sure."""
    if x.websocket:  # OpenAI's Realtime names it in the upgrade's query (Gemini Live's first message: not here)
        model = x.provider.realtime_model(x.route.upstream_path, x.query)
        return ([model], "", None) if model else ([], "this session's model is not named in its upgrade request", None)
    # The path as the upstream routes it: /v1/messages/batche%73 creates a batch, whose requests name models.
    endpoint = unquote(x.route.upstream_path)
    in_path = x.provider.request_model(endpoint, None)  # Gemini's and Replicate's paths name it: the body has no say
    if in_path:
        return [in_path], "", None
    # What goes upstream: the body received, or a step's replacement (an operator's edit in the hold queue).
    if x.forward_body is None and x.body.size and not runs and x.body.in_memory() is None:
        return [], "", None  # a large upload that runs no model (a file, known by free_posts): nothing to hold
    # A generating request's model is read however large its body (a long prompt, an image): off the loop.
    reading = await x.body_reading()
    payload = reading.payload
    if reading.unread:
        raise BodyUnread(reading.unread)
    if isinstance(payload, dict) and any(k != "model" and k.lower() == "model" for k in payload):
        # Go's JSON (Ollama, many compatible servers) matches field names in any case, the last one winning.
        raise BodyUnread("this request names its model in more than one field ('model' in another case)")
    batch = x.provider.batch_models(endpoint, payload)
    if batch is not None:
        if not batch:
            return [], "this batch's models are in its uploaded file, which the gateway does not read", payload
        if None in batch:
            return [], "a request of this batch names no model the gateway can read", payload
        return [text_valid(m) for m in batch], "", payload
    model = x.provider.request_model(endpoint, payload)
    # The body is read exactly (the stream usage step writes it back): a lone surrogate is no character to name.
    return ([text_valid(model)] if model else []), "", payload


def _refuse(x: Exchange, status: int, message: str, *, kind: str, outcome: str) -> HttpResponse:
    """The step's own answer, in the provider's error shape; step_answered logs it (no upstream call)."""
    x.outcome, x.error = outcome, message
    return json_error(status, x.provider.error_body(message, kind=kind, status=status))


def _credential_swap(x: Exchange, grant: KeyGrant, credential: str) -> None:
    """Send the key's stored provider credential upstream instead of whatever the client put there."""
    provider = x.provider
    x.scrubber = Scrubber([*x.scrubber.secrets, credential])  # an upstream echoing it must not put it in the log
    x.echo_mask = EchoMask(x, credential)  # nor in the client's answer
    kept = [(k, v) for k, v in x.forward_headers if k.lower() not in provider.credential_headers]
    if provider.credential_subprotocols:  # a browser's key in a WebSocket subprotocol stays here too
        kept = [(k, provider.subprotocols_without_credential(v) if k.lower() == SUBPROTOCOL_HEADER else v)
                for k, v in kept]
        kept = [(k, v) for k, v in kept if v or k.lower() != SUBPROTOCOL_HEADER]
    name, value = provider.credential_pair(credential)
    changed = [f"{name}: the key's stored provider credential (the key came in {where})"
               for where in ["X-Gateway-Key" if not grant.in_provider_header else grant.carrier]]
    query = provider.query_without_credential(x.query)
    if query != x.query:  # the client's own key in the query (Gemini's ?key=) would go upstream beside the stored one
        x.query = query
        changed.append(f"query: the client's {', '.join(provider.credential_query)} parameter removed")
    if not x.websocket:
        # The answer comes uncompressed: the mask reads its bytes as they come, and an echo inside a gzip body
        # reached the client whole (its HTTP client decodes it), handing the key's holder the credential.
        kept = [(k, v) for k, v in kept if k.lower() != "accept-encoding"]
        kept.append(("Accept-Encoding", "identity"))
        changed.append("Accept-Encoding: identity (an echo of the credential is masked in the plain answer)")
    x.forward_headers = [*kept, (name, value)]
    x.request_changed = True  # what goes upstream is logged if it goes (forwarded_note), not before
    x.decisions.append({"step": STEP, "decision": "provider credential swapped in", "changed": changed})


class EchoMask:
    """The answer's filter for a request sent with a key's stored provider credential: the credential,
    wherever the upstream echoes it (an error quoting the key, a header), reaches the client masked.

    The mask keeps each echo's length (asterisks, then its last 4 characters), so a Content-Length
    stays true; an echo split across two reads is caught by holding back what may start one: only
    an end of the read that an echo begins with, so a streamed answer (Gemini's JSON array without
    alt=sse) is not held a read behind. Event streams too: an error event may quote the key.
    """

    def __init__(self, x: Exchange, credential: str) -> None:
        forms = sorted(byte_replacements([credential]), key=len, reverse=True)  # raw, JSON-escaped, URL-encoded
        self.forms = forms
        self.replacements = {form: b"*" * (len(form) - 4) + form[-4:] for form in forms}
        self.pattern = re.compile(b"|".join(re.escape(form) for form in forms))
        self.overlap = len(forms[0]) - 1
        self.starts = {form[:1] for form in forms}
        self.x, self.held, self.noted = x, b"", None

    def mask(self, data: bytes) -> bytes:
        """Every echo in a whole body masked (an answer decoded to point its links at the gateway)."""
        masked, n = self.pattern.subn(lambda m: self.replacements[m.group()], data)
        if n:
            if self.noted is None:  # in the log's steps as soon as it happens (a broken answer included)
                self.noted = {"step": STEP, "decision": "stored provider credential masked in the answer",
                              "echoes": 0}
                self.x.decisions.append(self.noted)
            self.noted["echoes"] += n
        return masked

    def headers(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, self.mask(v.encode("latin-1")).decode("latin-1")) for k, v in pairs]

    def __call__(self, chunk: bytes) -> bytes:
        data = self.mask(self.held + chunk)
        cut = self._echo_start(data)
        data, self.held = data[:cut], data[cut:]
        return data

    def _echo_start(self, data: bytes) -> int:
        """Where the end of data that an echo may begin with starts (len(data) when none may)."""
        first = max(len(data) - self.overlap, 0)
        for at in sorted(i for start in self.starts for i in _found(data, start, first)):
            tail = data[at:]
            if any(form.startswith(tail) for form in self.forms):
                return at
        return len(data)

    def rest(self) -> bytes:
        rest, self.held = self.held, b""
        return rest


def _found(data: bytes, sub: bytes, start: int):
    """Each position of sub in data from start on."""
    at = data.find(sub, start)
    while at >= 0:
        yield at
        at = data.find(sub, at + 1)


# Every realtime session of a limited key open in this process, by the key's secret hash: their usage is summed,
# as the log shows a session's only once it ends.
_open: dict[str, set["SessionLimits"]] = {}


class SessionLimits:
    """A realtime session's gateway key, held to its limits as the session runs (proxy/websocket.py).

    The upgrade was admitted by key_request; a session then runs for as long as its client keeps it
    open, and the log counts its usage only when it ends. So the session counts its own usage as each
    response's usage passes (the upstream's response.done), prices it as the log will, and checks
    the key as the log shows it (re-read every second) plus what this process's open sessions of the
    key used: at once when a response's usage arrives, and every CHECK_EVERY seconds (a revoked key,
    usage logged by other requests). A session found over is stopped (SessionStop). Rpm is not
    checked here: it counts sessions, at the upgrade.
    """

    CHECK_EVERY = 0.25

    def __init__(self, x: Exchange) -> None:
        self.x = x
        self.spend = Decimal(0)
        self.tokens: deque[tuple[float, int]] = deque()  # (monotonic time, tokens) of each response
        self.stop: SessionStop | None = None
        if self.key is not None:
            _open.setdefault(self.key.secret_hash, set()).add(self)

    def close(self) -> None:
        """The session ended: from now on the log counts its usage (once the ingest process has written it)."""
        if self.key is not None:
            sessions = _open.get(self.key.secret_hash, set())
            sessions.discard(self)
            if not sessions:
                _open.pop(self.key.secret_hash, None)

    @property
    def key(self) -> GatewayKey | None:
        """The session's key as last read (check), on the exchange: its judge of the models asked for reads it there."""
        grant = self.x.gateway_key
        return grant.key if isinstance(grant, KeyGrant) else None

    def used(self, response_tokens: int, session_usage: dict[str, int], model: str | None) -> None:
        """A response's usage passed: the session's cost so far, priced as the log will price it at its end."""
        if self.key is None:
            return
        # Here, not at the top: genai-prices takes half a second to import and memory in every worker, and
        # only a worker relaying a session of a limited key prices anything (the ingest process prices the log).
        from logs.pricing import cost_compute

        if response_tokens > 0:
            self.tokens.append((time.monotonic(), response_tokens))
        price = cost_compute(self.x.provider, usage_counts(model, session_usage),
                             at=datetime.fromtimestamp(self.x.started_wall, timezone.utc))
        self.spend = price.cost or Decimal(0)  # unpriced counts nothing, as in the log

    def _tokens_recent(self, now: float) -> int:
        while self.tokens and self.tokens[0][0] < now - TOKENS_WINDOW - 1:  # the log's window: 60 to 61 s
            self.tokens.popleft()
        return sum(n for _, n in self.tokens)

    async def check(self) -> SessionStop | None:
        """The stop, when the key is revoked, expired or deleted, or over its budget or tokens per minute now."""
        if self.key is None or self.stop is not None:
            return self.stop
        try:
            key = await key_current(self.key.secret_hash)
            refusal = key_refusal(key)
            if refusal:
                return self._stopped(SessionStop(refusal, "gateway key revoked or expired", "authentication_error",
                                                 "gateway_key_revoked", 1008), Outcome.GATEWAY_ERROR, "")
            # As it is now: a model it no longer allows is refused from here on (_session_model_judge).
            self.x.gateway_key = dataclasses.replace(self.x.gateway_key, key=key)
            if key.tpm is None and key.budget_usd is None:
                return None
            now = time.monotonic()
            sessions = _open.get(key.secret_hash, ())
            verdict = await limits_recheck(key, spend=sum((s.spend for s in sessions), Decimal(0)),
                                           tokens=sum(s._tokens_recent(now) for s in sessions))
        except (StoreUnavailable, DatabaseError) as exc:  # a budget that cannot be checked is not waived (an
            # upgrade gets a 503): 1013, "try again later", which the SDKs retry (and the upgrade answers then)
            self.x.notes.append(f"limit store: {getattr(exc, 'detail', '') or f'{type(exc).__name__}: {exc}'}")
            return self._stopped(SessionStop("Gateway key limits cannot be checked (the database or the limit store "
                                             "is unreachable). Retry shortly.", "gateway key limits cannot be checked",
                                             "api_error", "gateway_key_limits_unavailable", 1013),
                                 Outcome.GATEWAY_ERROR, "store")
        if not verdict.refusal:
            return None
        words = {"budget": "its budget", "tokens": "its tokens per minute"}.get(verdict.limit, verdict.limit)
        return self._stopped(SessionStop(verdict.refusal, f"gateway key over {words}", "rate_limit_error",
                                         f"gateway_key_{verdict.limit}", 1008), Outcome.RATE_LIMITED,
                             verdict.limit, verdict.remaining)

    def _stopped(self, stop: SessionStop, outcome: str, limit: str, remaining: dict | None = None, *,
                 decision: str = "session stopped", model: str | None = None, seq: int | None = None) -> SessionStop:
        """Note the stop in the exchange's steps and outcome (the session's row says the key's step ended it)."""
        if self.stop is not None:  # the periodic check and a response's found it at once: one stop
            return self.stop
        self.stop = stop
        _stop_note(self.x, self.key, stop, outcome, limit, remaining, decision=decision, model=model, seq=seq)
        return stop
