"""The hold queue's tables: the switch (one row) and the held requests with their decisions."""

from django.db import models


class Decision(models.TextChoices):
    """What an operator (or the timeout) decides for a held request."""

    APPROVE = "approve"  # forwarded; with edited_body set, that body goes upstream instead
    REJECT_400 = "reject-400"
    REJECT_500 = "reject-500"
    CONTENT_POLICY = "content-policy"  # the provider's own content-policy answer (providers/<name>.py)


class HoldSwitch(models.Model):
    """Whether requests are held, and which ones (empty filters match everything). One row, id 1."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    on = models.BooleanField(default=False)
    provider = models.CharField(max_length=64, blank=True, default="")
    model = models.CharField(max_length=255, blank=True, default="")
    gateway_key = models.CharField(max_length=160, blank=True, default="")  # the gateway key's name
    path = models.CharField(max_length=1024, blank=True, default="")  # a gateway path prefix
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        db_table = "hold_switch"

    def __str__(self) -> str:
        return "on" if self.on else "off"


class HeldRequest(models.Model):
    """One request held by a worker until it is decided; kept afterwards as a record of the decision."""

    class State(models.TextChoices):
        WAITING = "waiting"
        RELEASED = "released"  # decided and carried out
        ABORTED = "aborted"  # the client went away while held: never forwarded

    id = models.CharField(primary_key=True, max_length=32)  # the exchange's request id (X-Gateway-Request-Id)
    provider = models.CharField(max_length=64)
    method = models.CharField(max_length=16)
    path = models.CharField(max_length=1024)  # the gateway path as sent
    model = models.CharField(max_length=255, blank=True, default="")
    gateway_key = models.CharField(max_length=160, blank=True, default="")
    # The body that would go upstream (credentials masked), for the operator to read and edit;
    # NULL when it is too large or not text.
    body = models.TextField(null=True, blank=True)
    body_size = models.BigIntegerField(default=0)
    instance = models.CharField(max_length=64, blank=True, default="")  # the worker holding it
    held_at = models.DateTimeField(db_index=True)
    deadline = models.DateTimeField()  # when HOLD_TIMEOUT_ACTION applies
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING, db_index=True)
    decision = models.CharField(max_length=32, choices=Decision.choices, blank=True, default="")
    edited_body = models.TextField(null=True, blank=True)  # approve with this body instead
    decided_by = models.CharField(max_length=150, blank=True, default="")  # a username, "command", "timeout"
    decided_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    held_ms = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "hold_requests"
        ordering = ["held_at"]
        verbose_name = "held request"

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.id})"
