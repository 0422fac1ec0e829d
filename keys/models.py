"""Gateway keys and the shared sliding-window log behind their request limits."""

from django.db import models
from django.db.models import Value
from django.db.models.functions import Concat


class BudgetPeriod(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


class GatewayKey(models.Model):
    """One key handed to a client: what it may call, and its limits. The secret is kept as a hash only."""

    name = models.CharField(max_length=100, unique=True,
                            help_text="Shown in the log for every request made with the key; fixed once created.")
    secret_hash = models.CharField(max_length=64, unique=True, editable=False)
    secret_hint = models.CharField(max_length=16, editable=False, help_text="The secret's first characters.")
    # The key's fingerprint as the log shows it ("name (fp …)"), fixed at creation.
    fingerprint = models.CharField(max_length=32, editable=False)
    active = models.BooleanField(default=True, help_text="Untick to revoke: refused within a second.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on (UTC). Empty: never.")
    allowed_providers = models.JSONField(default=list, blank=True,
                                 help_text='Allowed providers, e.g. ["openai", "anthropic"]. Empty: all.')
    allowed_models = models.JSONField(default=list, blank=True,
                              help_text='Allowed models, e.g. ["gpt-4o-mini"]. Empty: all.')
    rpm = models.PositiveIntegerField("requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("tokens per minute", null=True, blank=True)
    budget_usd = models.DecimalField("budget (USD)", max_digits=18, decimal_places=8, null=True, blank=True)
    budget_period = models.CharField(max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH,
                                     help_text="Calendar periods in UTC; weeks start on Monday.")
    cache_ttl = models.PositiveIntegerField(
        "response cache TTL (seconds)", null=True, blank=True,
        help_text="For this key's requests without X-Gateway-Cache: serve and store answers this many seconds "
                  "(0: not cached). Empty: CACHE_DEFAULT_TTL.")
    # A Fernet token (keys/crypto.py); empty when the client brings its own provider key.
    provider_credential = models.TextField(blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        db_table = "gateway_keys"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def label(self) -> str:
        """What the log shows instead of the key (requests.gateway_key), as for GATEWAY_API_KEYS."""
        return f"{self.name} (fp {self.fingerprint})"

    @staticmethod
    def label_sql() -> Concat:
        """`label` as an SQL expression, for a query that matches each key to its log rows."""
        return Concat("name", Value(" (fp "), "fingerprint", Value(")"), output_field=models.CharField())

    @property
    def limited(self) -> bool:
        """Whether any limit applies (its answers then carry the RateLimit fields)."""
        return self.rpm is not None or self.tpm is not None or self.budget_usd is not None


class RateHit(models.Model):
    """Requests admitted in one second for one key: the sliding window's buckets (keys/store.py).

    Only used when the limit store is PostgreSQL (DATABASE_URL, no CACHE_URL); buckets older than
    the window are deleted as requests come.
    """

    id = models.BigAutoField(primary_key=True)
    bucket = models.CharField(max_length=64)
    second = models.BigIntegerField()  # epoch seconds
    count = models.IntegerField(default=0)

    class Meta:
        db_table = "gateway_key_hits"
        constraints = [models.UniqueConstraint(fields=["bucket", "second"], name="gateway_key_hits_bucket_second")]
