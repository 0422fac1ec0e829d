"""A limited key's verdict for one request: its budget, its tokens per minute, then its requests per minute.

Awaited on the event loop: what needs the database or Redis runs in a thread (usage at most
every selectors.USAGE_TTL per key and process, the window take when the store is remote); a
window on this machine's file is taken in place. The answer carries the IETF RateLimit
fields (draft-ietf-httpapi-ratelimit-headers) for every limit the key has, refused or not:

  RateLimit-Policy: "requests";q=60;w=60, "tokens";q=100000;qu="tokens";w=60,
                    "budget";q=5000000;qu="usd-micros";w=2592000
  RateLimit: "requests";r=59;t=60, "tokens";r=99000;t=60, "budget";r=4990000;t=1209600

q is the quota, w the window in seconds (the current calendar period for a budget; none for a
total budget), r what is left, t the seconds until usage leaves the window (for requests: the
oldest admitted one; for tokens: an upper bound, except on a refusal where it is exact; for a
budget: the period's end). Budgets are counted in millionths of a dollar (qu="usd-micros"), as
the fields take integers.
"""

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_FLOOR, Decimal

from django.db import DatabaseError

from keys.models import GatewayKey
from keys.periods import period_end, period_start, period_words
from keys.refresh import in_thread, refresh_start, refreshed
from keys.selectors import TOKENS_WINDOW, KeyUsage, key_usage, key_usage_cached, tokens_free_in
from keys.store import StoreUnavailable, Take, store_blocks, window_take

REQUESTS_WINDOW = 60
MICROS = Decimal(1_000_000)


@dataclass
class Verdict:
    """Admitted (refusal empty) or refused, and the headers every answer to this key carries."""

    refusal: str = ""
    limit: str = ""  # which limit refused: requests, tokens or budget
    retry_after: int | None = None
    policies: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    remaining: dict[str, int | str] = field(default_factory=dict)  # for the log

    def headers(self) -> list[tuple[str, str]]:
        out = [("RateLimit-Policy", ", ".join(self.policies)), ("RateLimit", ", ".join(self.states))]
        if self.retry_after is not None:
            out.append(("Retry-After", str(self.retry_after)))
        if self.refusal and self.limit == "budget":
            # A spent budget comes back at the period's end, hours or weeks away: the SDKs (openai-python and
            # -node, anthropic) retry a 429 after Retry-After, however long (openai-node slept 21 hours, or,
            # past its timer's 24.8 days, retried at once). They read this header and raise at once.
            out.append(("X-Should-Retry", "false"))
        return out


def _seconds(value: float) -> int:
    """Whole seconds, rounded up (a client waiting that long finds the slot free)."""
    return max(math.ceil(value), 0)


def usd_text(value: Decimal) -> str:
    """A key's budget or spend as every place shows it (refusals, admin, command): at least 6 decimal
    places, up to the 8 that budgets and costs are kept with, so no amount shows rounded."""
    text = format(value.quantize(Decimal("0.00000001")), "f")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.rstrip('0').ljust(6, '0')}"


class _Plan:
    """What a limited key's answers say that this copy of the key fixes: read once per copy (a worker
    reads its keys again every second), not on every request. The budget's fields and refusal change
    only with its spend and the second: kept for the requests of that second (Decimal and calendar
    arithmetic cost more than the rest)."""

    __slots__ = ("tokens_policy", "requests_policy", "bucket", "budget_at", "budget")

    def __init__(self, key: GatewayKey) -> None:
        self.tokens_policy = f'"tokens";q={key.tpm};qu="tokens";w={int(TOKENS_WINDOW)}'
        self.requests_policy = f'"requests";q={key.rpm};w={REQUESTS_WINDOW}'
        self.bucket = key_bucket(key)
        self.budget_at: tuple[int, Decimal] | None = None
        self.budget: tuple[str, str, str, str, int | None] | None = None


def _plan(key: GatewayKey) -> _Plan:
    plan = key.__dict__.get("_limits_plan")
    if plan is None:
        plan = key.__dict__["_limits_plan"] = _Plan(key)
    return plan


def _budget(key: GatewayKey, plan: _Plan, spend: Decimal, v: Verdict) -> None:
    now = time.time()
    at = (int(now), spend)
    if plan.budget_at != at:
        plan.budget = _budget_compute(key, spend, datetime.fromtimestamp(now, timezone.utc))
        plan.budget_at = at
    policy, state, left, refusal, retry_after = plan.budget
    v.policies.append(policy)
    v.states.append(state)
    v.remaining["budget_usd"] = left
    if refusal and not v.refusal:
        v.refusal, v.retry_after, v.limit = refusal, retry_after, "budget"


def _budget_compute(key: GatewayKey, spend: Decimal, now: datetime) -> tuple[str, str, str, str, int | None]:
    """(RateLimit-Policy item, RateLimit item, what is left, refusal or "", Retry-After)."""
    budget = key.budget_usd
    end = period_end(key.budget_period, now)
    left = max(budget - spend, Decimal(0))
    policy = f'"budget";q={int(budget * MICROS)};qu="usd-micros"'
    if end is not None:
        policy += f";w={int((end - period_start(key.budget_period, now)).total_seconds())}"
    state = f'"budget";r={int((left * MICROS).to_integral_value(ROUND_FLOOR))}'
    if end is not None:
        state += f";t={_seconds((end - now).total_seconds())}"
    refusal, retry_after = "", None
    if spend >= budget:
        spent = f"{usd_text(spend)} spent"
        if end is None:
            refusal = (f"Gateway key '{key.name}' has used its budget of {usd_text(budget)} in total ({spent}). "
                       "A total budget does not reset: an administrator can raise it.")
        else:
            refusal = (f"Gateway key '{key.name}' has used its budget of {usd_text(budget)} "
                       f"{period_words(key.budget_period)} ({spent}). It resets at "
                       f"{end.strftime('%Y-%m-%d %H:%M')} UTC, in {_seconds((end - now).total_seconds())} s.")
            retry_after = _seconds((end - now).total_seconds())
    return policy, state, str(left), refusal, retry_after


def _tokens(key: GatewayKey, plan: _Plan, used: int, free_in: float | None, v: Verdict) -> None:
    """The tokens' fields; a refusal when the caller found the limit reached (free_in: when it frees up)."""
    v.policies.append(plan.tokens_policy)
    left = max(key.tpm - used, 0)
    reset = TOKENS_WINDOW if used else 0.0
    if free_in is not None:
        reset = free_in
        v.refusal = (f"Gateway key '{key.name}' is over its limit of {key.tpm} tokens per minute "
                     f"({used} in the last minute). Retry in {_seconds(reset)} s.")
        v.retry_after, v.limit = _seconds(reset), "tokens"
    v.states.append(f'"tokens";r={left};t={_seconds(reset)}')
    v.remaining["tokens"] = left


def key_bucket(key: GatewayKey) -> str:
    """The key's request window in the store: named by its secret's hash, unique across databases sharing a Redis."""
    return f"rpm:{key.secret_hash[:24]}"


def _requests(key: GatewayKey, take: Take, v: Verdict) -> None:
    left = max(key.rpm - take.used, 0)
    v.states.append(f'"requests";r={left};t={_seconds(take.reset)}')
    v.remaining["requests"] = left
    if not take.allowed:
        v.refusal = (f"Gateway key '{key.name}' is over its limit of {key.rpm} requests per minute. "
                     f"Retry in {_seconds(take.reset)} s.")
        v.retry_after, v.limit = _seconds(take.reset), "requests"


def policies(key: GatewayKey) -> list[tuple[str, str]]:
    """The RateLimit-Policy field alone, for an answer that took nothing from the limits (a 403)."""
    items = []
    if key.budget_usd is not None:
        now = datetime.now(timezone.utc)
        items.append(_budget_compute(key, Decimal(0), now)[0])
    if key.tpm is not None:
        items.append(_plan(key).tokens_policy)
    if key.rpm is not None:
        items.append(_plan(key).requests_policy)
    return [("RateLimit-Policy", ", ".join(items))]


def _read(read, *args):
    """A read of the key's usage from the log's tables (tokens, spend). A database that is down or not migrated
    (a table a new version adds) refuses the limited key as an unreachable limit store does (a 503), instead
    of failing the step with a 500 that told the client the driver's message (the database's host, port)."""
    try:
        return read(*args)
    except DatabaseError as exc:
        raise StoreUnavailable(f"the database cannot be read ({type(exc).__name__}; is it up, and migrated?)",
                               f"{type(exc).__name__}: {exc}") from None


async def _usage(key: GatewayKey) -> KeyUsage | None:
    """The key's tokens and spend as the log shows them, less than USAGE_TTL old (None: it has no such limit)."""
    if key.tpm is None and key.budget_usd is None:
        return None
    usage, due = key_usage_cached(key)
    if due:
        # One read per key at a time; meanwhile the others go on with the last value while it is
        # less than USAGE_TTL old, and wait for the read when it is older or there is none.
        if usage is None:
            usage = await refreshed(("usage", key.pk), _read, key_usage, key)
        else:
            refresh_start(("usage", key.pk), _read, key_usage, key)
    return usage


async def limits_recheck(key: GatewayKey, *, spend: Decimal, tokens: int) -> Verdict:
    """The key's budget and tokens per minute during a realtime session (proxy/key_policy.py SessionLimits),
    with `spend` and `tokens` added: what its sessions open in this process used that the log does not show
    yet (a session is logged when it ends). Takes no request: requests per minute count sessions, at the upgrade.

    Raises store.StoreUnavailable when the log's database cannot be read.
    """
    v = Verdict()
    plan = _plan(key)
    usage = await _usage(key)
    if key.budget_usd is not None:
        _budget(key, plan, usage.spend + spend, v)
    if key.tpm is not None:
        used = usage.tokens + tokens
        # Over: the session's tokens leave the window within a minute of its response, the log's as they do.
        _tokens(key, plan, used, TOKENS_WINDOW if used >= key.tpm and not v.refusal else None, v)
    return v


async def limits_apply(key: GatewayKey) -> Verdict:
    """Check the key's limits and, when it is admitted, take one request from its per-minute window.

    Raises store.StoreUnavailable when the window cannot be reached.
    """
    v = Verdict()
    plan = _plan(key)
    usage = await _usage(key)
    if key.budget_usd is not None:
        _budget(key, plan, usage.spend, v)
    if key.tpm is not None:
        used, free_in = usage.tokens, None
        if used >= key.tpm and not v.refusal:  # over, as last read: the window itself decides, and says when
            used, free_in = await in_thread(_read, tokens_free_in, key, key.tpm)
        _tokens(key, plan, used, free_in, v)
    if key.rpm is not None:
        v.policies.append(plan.requests_policy)
        if not v.refusal:  # refused already: this request takes no slot (and its state is not read)
            if store_blocks():
                take = await in_thread(window_take, plan.bucket, key.rpm, REQUESTS_WINDOW)
            else:
                take = window_take(plan.bucket, key.rpm, REQUESTS_WINDOW)
            _requests(key, take, v)
    return v
