"""Writes: create, revoke and change gateway keys. Every process sees a change within selectors.KEY_TTL."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from keys.crypto import credential_encrypt
from keys.models import BudgetPeriod, GatewayKey
from keys.tokens import secret_hash, secret_hint, secret_new
from logs.redaction.redact import key_fingerprint
from providers import registry


@dataclass
class KeyLimits:
    """What a key may do; None and empty lists mean no limit."""

    rpm: int | None = None
    tpm: int | None = None
    budget_usd: Decimal | None = None
    budget_period: str = BudgetPeriod.MONTH
    providers: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    expires_at: datetime | None = None


# Under $10 million: with 8 decimal places that is 15 significant digits, what SQLite (which keeps a
# decimal column as a double) gives back exactly; a budget of 9999999999.99999999 came back as 1e10 and
# failed every read of the key.
BUDGET_MAX = 10**7


def budget_parse(text: str) -> Decimal:
    """A budget in USD from text (limits_check judges its value)."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValidationError(f"budget must be a number of USD, not {text!r}") from None
    if not value.is_finite():
        raise ValidationError(f"budget must be a number of USD, not {text}")
    return value


def budget_check(value: Decimal) -> None:
    """A budget above 0, under BUDGET_MAX, with at most 8 decimal places (ValidationError otherwise)."""
    if value <= 0:  # 0 admits nothing: that is a revoked key, not a budget
        raise ValidationError(f"budget must be more than 0 USD, not {value}: to stop a key, revoke it")
    if value >= BUDGET_MAX:
        raise ValidationError(f"budget must be less than {BUDGET_MAX:,} USD, not {value}")
    if value != value.quantize(Decimal("0.00000001")):
        raise ValidationError(f"budget has more than 8 decimal places: {value}")


def name_check(name: str) -> str:
    """A key's name, stripped; ValidationError when empty or holding control characters."""
    name = name.strip()
    if not name:
        raise ValidationError("a key needs a name")
    if any(ch < " " or ch == "\x7f" for ch in name):  # a tab or newline breaks `gateway_key list` and the log's labels
        raise ValidationError(f"a key's name may not hold control characters: {name!r}")
    return name


def limits_check(limits: KeyLimits) -> None:
    """Refuse limits that cannot be right (ValidationError naming the field)."""
    for name in ("rpm", "tpm"):
        value = getattr(limits, name)
        if value is not None and value < 1:
            raise ValidationError(f"{name} must be at least 1, not {value}")
    if limits.budget_usd is not None:
        budget_check(limits.budget_usd)
    if limits.budget_period not in BudgetPeriod.values:
        raise ValidationError(f"budget period must be one of {', '.join(BudgetPeriod.values)}, "
                              f"not {limits.budget_period!r}")
    known = [p.name for p in registry(settings.GATEWAY_PROVIDERS).providers]
    unknown = [p for p in limits.providers if p not in known]
    if unknown:
        raise ValidationError(f"unknown provider {', '.join(unknown)} (known: {', '.join(known)})")
    # A request's model is compared with these names as they are: a '*' (MODEL_POLICY_ALLOW's wildcard) was
    # taken as a name no model has, and the key refused every request.
    if wild := next((m for m in limits.models if "*" in m), None):
        raise ValidationError(f"{wild!r} has a *: a key's models are exact names (gpt-4o-mini, gpt-4o-2024-08-06), "
                              "without wildcards")


def secret_assign(key: GatewayKey) -> str:
    """Give an unsaved key a new secret: its hash, hint and log fingerprint are kept, the secret returned once."""
    secret = secret_new()
    key.secret_hash, key.secret_hint, key.fingerprint = secret_hash(secret), secret_hint(secret), key_fingerprint(secret)
    return secret


def credential_provider_check(providers: list[str], holds_credential: bool) -> None:
    """A key that holds a provider credential names the one provider it is for: sent to any provider a
    client points its SDK at, an OpenAI key went to Anthropic and Google. ValidationError if it does not."""
    if holds_credential and len(providers) != 1:
        raise ValidationError("a key that holds a provider credential must allow exactly one provider, the one the "
                              "credential is for (--providers openai): it is sent nowhere else")


def key_create(*, name: str, limits: KeyLimits, provider_credential: str = "") -> tuple[GatewayKey, str]:
    """A new key and its secret (the only time the secret exists outside the client)."""
    name = name_check(name)
    limits_check(limits)
    credential_provider_check(limits.providers, bool(provider_credential))
    if (same := GatewayKey.objects.filter(name=name).first()) is not None:
        revoked = " (revoked: names stay with their history in the log)" if not same.active else ""
        raise ValidationError(f"a key named {name!r} already exists{revoked}")
    key = GatewayKey(name=name, rpm=limits.rpm, tpm=limits.tpm,
                     budget_usd=limits.budget_usd, budget_period=limits.budget_period,
                     allowed_providers=limits.providers, allowed_models=limits.models, expires_at=limits.expires_at,
                     provider_credential=credential_encrypt(provider_credential) if provider_credential else "")
    secret = secret_assign(key)
    key.full_clean(exclude=["provider_credential"])
    key.save()
    return key, secret


def key_revoke(*, name: str) -> GatewayKey:
    """Deactivate a key (kept, with its history); GatewayKey.DoesNotExist when there is none."""
    with transaction.atomic():
        key = GatewayKey.objects.select_for_update().get(name=name.strip())  # as key_create keeps it
        key.active = False
        key.revoked_at = key.revoked_at or timezone.now()
        key.save(update_fields=["active", "revoked_at", "updated_at"])
    return key


def key_credential_set(key: GatewayKey, plain: str) -> None:
    """Store (or, with "", remove) the provider credential a key carries, encrypted."""
    key.provider_credential = credential_encrypt(plain) if plain else ""
    key.save(update_fields=["provider_credential", "updated_at"])
