"""Reads of the hold queue: the switch, the waiting requests, the decisions the proxy waits for."""

from datetime import timedelta

from django.utils import timezone

from hold.models import HeldRequest, HoldSwitch
from hold.types import Decided, SwitchState

# A waiting row whose deadline passed this long ago has lost its worker (a crash): not listed.
ORPHAN_GRACE = timedelta(seconds=10)


def switch_read() -> SwitchState:
    """The switch as stored (off when it was never set)."""
    row = HoldSwitch.objects.filter(pk=1).first()
    if row is None:
        return SwitchState()
    return SwitchState(row.on, row.provider, row.model, row.gateway_key, row.path)


def held_waiting():
    """Requests waiting for a decision, oldest first (rows orphaned by a crashed worker left out)."""
    return HeldRequest.objects.filter(state=HeldRequest.State.WAITING, decision="",
                                      deadline__gt=timezone.now() - ORPHAN_GRACE).order_by("held_at")


def held_count() -> int:
    """How many requests wait for a decision."""
    return held_waiting().count()


def held_recent(limit: int = 20):
    """The latest decided requests, newest first."""
    return HeldRequest.objects.exclude(decision="").order_by("-decided_at")[:limit]


def held_decisions(ids: list[str]) -> dict[str, Decided]:
    """The decisions taken so far among these held requests."""
    rows = HeldRequest.objects.filter(pk__in=ids).exclude(decision="").values_list(
        "id", "decision", "decided_by", "decided_at", "edited_body")
    return {rid: Decided(decision, by, at, edited) for rid, decision, by, at, edited in rows}
