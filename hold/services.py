"""Writes of the hold queue: the switch, a held request, a decision (by an operator or the timeout), its end."""

import json
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from hold.models import Decision, HeldRequest, HoldSwitch
from hold.selectors import held_waiting
from hold.types import Decided, SwitchState
from keys.models import GatewayKey
from keys.static import access_keys
from logs.models import Response
from providers import registry

REQUEST_ID = re.compile(r"[0-9a-f]{32}")
DECIDED_KEEP = timedelta(days=7)  # ended rows older than this go when a new request is held


class HoldError(ValueError):
    """A decision that cannot be taken (unknown or already decided request, invalid edited body)."""


def switch_set(*, on: bool, by: str, provider: str = "", model: str = "", gateway_key: str = "",
               path: str = "") -> SwitchState:
    """Turn holding on (with its filters) or off; off approves every request still waiting. HoldError for a
    filter that could never match."""
    if on:
        _filters_check(provider, model, gateway_key, path)
    with transaction.atomic():
        HoldSwitch.objects.update_or_create(pk=1, defaults={
            "on": on, "provider": provider if on else "", "model": model if on else "",
            "gateway_key": gateway_key if on else "", "path": path if on else "", "changed_at": timezone.now(),
            "changed_by": by[:150]})
        if not on:
            held_waiting().update(decision=Decision.APPROVE, decided_by=f"hold off ({by})"[:150],
                                  decided_at=timezone.now())
    return SwitchState(on, provider, model, gateway_key, path) if on else SwitchState()


def _filters_check(provider: str, model: str, gateway_key: str, path: str) -> None:
    for name, value in (("provider", provider), ("model", model), ("gateway_key", gateway_key), ("path", path)):
        longest = HoldSwitch._meta.get_field(name).max_length
        if len(value) > longest:  # PostgreSQL would refuse the row; no request's value is that long
            raise HoldError(f"the {name.replace('_', ' ')} filter is longer than {longest} characters")
        if "\x00" in value:  # likewise (a 500 from the admin's switch)
            raise HoldError(f"the {name.replace('_', ' ')} filter has a NUL character, which no request's has")
    known = [p.name for p in registry(settings.GATEWAY_PROVIDERS).providers]
    if provider and provider not in known:
        raise HoldError(f"unknown provider {provider!r} (known: {', '.join(known)})")
    # A key's name as the log shows it: a gateway key of the keys app, or a GATEWAY_API_KEYS entry's name.
    if gateway_key and not (GatewayKey.objects.filter(name=gateway_key).exists()
                            or any(k.name == gateway_key for k in access_keys())):
        raise HoldError(f"no gateway key is named {gateway_key!r} (python manage.py gateway_key list shows them)")
    for name, value in (("model", model), ("path", path)):
        if "*" in value:  # `--model 'gpt-4o*'` read as a glob held nothing, silently
            raise HoldError(f"the {name} filter is {'exact' if name == 'model' else 'a prefix'}, not a pattern: "
                            f"{value!r} has a '*' no {name} has")
    if path and not path.startswith("/"):
        raise HoldError(f"the path filter is a prefix of the gateway path and starts with '/', such as /v1/chat/, "
                        f"not {path!r}")


def held_create(*, request_id: str, provider: str, method: str, path: str, model: str, gateway_key: str,
                body: str | None, body_size: int, instance: str, timeout: float) -> datetime:
    """Record a request as held; its deadline."""
    now = timezone.now()
    deadline = now + timedelta(seconds=timeout)
    HeldRequest.objects.create(id=request_id, provider=provider, method=method, path=path[:1024],
                               model=(model or "")[:255], gateway_key=(gateway_key or "")[:160], body=body,
                               body_size=body_size, instance=instance[:64], held_at=now, deadline=deadline)
    try:  # pruning is housekeeping: a failure must not make the caller create the row again
        # Not only decided rows: one whose client left undecided, or whose worker died holding it, has no
        # decided_at, and kept its prompt in this table for good.
        cut = now - DECIDED_KEEP
        HeldRequest.objects.filter(Q(decided_at__lt=cut) | Q(released_at__lt=cut) | Q(deadline__lt=cut)).delete()
    except DatabaseError:
        pass
    return deadline


def _not_json(name: str) -> None:
    """NaN and Infinity: Python's json reads them, JSON (and the providers) do not."""
    raise ValueError(f"{name} is not a JSON value")


def edited_body_size_check(size: int) -> None:
    """An edited body (size: its bytes, or a bound on them) may be as large as a client's request, no larger:
    HoldError naming the limit and its setting when it is. The one limit of the admin's editor and the CLI."""
    if size > settings.MAX_REQUEST_BODY_BYTES:
        raise HoldError(f"the edited body ({size} bytes) is larger than MAX_REQUEST_BODY_BYTES "
                        f"({settings.MAX_REQUEST_BODY_BYTES} bytes), which a client's request may not exceed either: "
                        "raise MAX_REQUEST_BODY_BYTES in the gateway's environment to send a larger one")


def edited_body_check(text: str) -> str:
    """An edited body must be JSON (an object or an array), no larger than a client may send; HoldError saying
    where it is not."""
    if len(text) > settings.MAX_REQUEST_BODY_BYTES:  # no copy encoded when the characters alone are too many
        edited_body_size_check(len(text))
    edited_body_size_check(len(text.encode("utf-8")))
    try:
        value = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise HoldError("the edited body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise HoldError(f"the edited body is not valid JSON: {exc}") from None
    if not isinstance(value, (dict, list)):
        raise HoldError("the edited body must be a JSON object or array")
    return text


def held_decide(request_id: str, decision: str, *, by: str, body: str | None = None) -> Decided:
    """Decide a waiting request (the worker holding it carries it out within a second). Its id as
    X-Gateway-Request-Id and `hold list` give it, or with dashes, as PostgreSQL's uuid column shows it."""
    request_id, given = request_id.strip().replace("-", "").lower(), request_id
    if not REQUEST_ID.fullmatch(request_id):  # PostgreSQL refused a NUL in it with a 500
        raise HoldError(f"{given!r} is not a request id: 32 hex digits, as X-Gateway-Request-Id and `hold list` give it")
    if decision not in Decision.values:
        raise HoldError(f"unknown decision {decision!r}: use one of {', '.join(Decision.values)}")
    if body is not None:
        if decision != Decision.APPROVE:
            raise HoldError("an edited body goes only with approve")
        body = edited_body_check(body)
        if HeldRequest.objects.filter(pk=request_id, method="GET").exists():  # it would be dropped unsaid
            raise HoldError("a GET (a WebSocket upgrade, a read) has no body to edit: approve it as it is")
    now = timezone.now()
    # Not a row whose worker died with it (past its deadline and the grace): no one would carry the decision out.
    done = held_waiting().filter(pk=request_id).update(decision=decision, decided_by=by[:150], decided_at=now,
                                                       edited_body=body)
    if not done:
        row = HeldRequest.objects.filter(pk=request_id).first()
        if row is None:
            raise HoldError(f"no held request {request_id}")
        if row.state == HeldRequest.State.WAITING and not row.decision:  # its worker is gone
            ended = Response.objects.filter(request_id=request_id).values_list("outcome", flat=True).first()
            if ended:
                raise HoldError(f"request {request_id} is no longer waiting: the gateway process holding it stopped "
                                f"(its exchange is logged {ended})")
            raise HoldError(f"request {request_id} is no longer waiting: its deadline passed with no worker holding it")
        raise HoldError(f"request {request_id} is no longer waiting: {row.decision or row.state}"
                        + (f" by {row.decided_by}" if row.decided_by else ""))
    return Decided(decision, by, now, body)


def held_release(request_ids: list[str]) -> int:
    """Approve these waiting requests: held by a worker whose switch was up to a second old when it was turned
    off (after the off's own approval of the waiting ones), they would have waited for the timeout."""
    return HeldRequest.objects.filter(pk__in=request_ids, state=HeldRequest.State.WAITING, decision="").update(
        decision=Decision.APPROVE, decided_by="hold off (the switch was off)", decided_at=timezone.now())


def held_timeout(request_id: str, action: str) -> Decided:
    """The timeout decides, unless an operator did in the meantime: the decision that stands."""
    now = timezone.now()
    HeldRequest.objects.filter(pk=request_id, decision="").update(decision=action, decided_by="timeout",
                                                                  decided_at=now)
    row = HeldRequest.objects.get(pk=request_id)
    return Decided(row.decision, row.decided_by, row.decided_at, row.edited_body)


def held_end(request_id: str, *, aborted: bool, held_ms: float) -> None:
    """The held request left the queue: released (its decision carried out) or aborted by its client."""
    HeldRequest.objects.filter(pk=request_id).update(
        state=HeldRequest.State.ABORTED if aborted else HeldRequest.State.RELEASED, released_at=timezone.now(),
        held_ms=held_ms)
