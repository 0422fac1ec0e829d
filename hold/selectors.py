"""Reads of the hold queue: the switch, the waiting requests, the decisions the proxy waits for."""

from datetime import timedelta

from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, UUIDField
from django.db.models.functions import Cast, Length
from django.utils import timezone

from hold.models import HeldRequest, HoldSwitch
from hold.types import Decided, SwitchState
from logs.models import Response

# A waiting row whose deadline passed this long ago has lost its worker (a crash): not listed.
ORPHAN_GRACE = timedelta(seconds=10)


def switch_read() -> SwitchState:
    """The switch as stored (off when it was never set)."""
    row = HoldSwitch.objects.filter(pk=1).first()
    if row is None:
        return SwitchState()
    return SwitchState(row.on, row.provider, row.model, row.gateway_key, row.path)


def held_exchange_ended():
    """Whether the log already holds the answer of a held row's exchange. A row is waiting only while its
    exchange is open: a worker killed while holding never ends its row, but the replay of its journal (at
    the restart, or by another worker at once) logs the exchange `interrupted`; until then only the
    deadline tells (a host that never comes back)."""
    return Exists(Response.objects.filter(request_id=Cast(OuterRef("pk"), UUIDField())))


def held_waiting():
    """Requests waiting for a decision, oldest first (rows orphaned by a crashed worker left out)."""
    return HeldRequest.objects.filter(state=HeldRequest.State.WAITING, decision="",
                                      deadline__gt=timezone.now() - ORPHAN_GRACE).exclude(
        held_exchange_ended()).order_by("held_at")


def held_listed(limit: int = 200):
    """The waiting requests the page lists, their bodies left out (the page is polled every second: 200 bodies of up
    to 256 KiB went with each poll): body_chars, the length of each, says whether it can be edited there."""
    return held_waiting().defer("body").annotate(body_chars=Length("body"))[:limit]


def held_body(request_id: str) -> str | None:
    """A waiting request's body as the page shows it (credentials masked); None when it has none or waits no more."""
    return held_waiting().filter(pk=request_id).values_list("body", flat=True).first()


def held_count() -> int:
    """How many requests wait for a decision."""
    return held_waiting().count()


def held_recent(limit: int = 20):
    """The latest decided requests, newest first (their bodies left out)."""
    return HeldRequest.objects.exclude(decision="").defer("body", "edited_body").annotate(
        edited=ExpressionWrapper(Q(edited_body__isnull=False), output_field=BooleanField())).order_by(
        "-decided_at")[:limit]


def held_decisions(ids: list[str]) -> dict[str, Decided]:
    """The decisions taken so far among these held requests."""
    rows = HeldRequest.objects.filter(pk__in=ids).exclude(decision="").values_list(
        "id", "decision", "decided_by", "decided_at", "edited_body")
    return {rid: Decided(decision, by, at, edited) for rid, decision, by, at, edited in rows}
