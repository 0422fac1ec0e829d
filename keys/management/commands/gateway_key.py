"""python manage.py gateway_key create|list|revoke: manage gateway keys from scripts.

The last line `create` prints is the secret alone, so `secret=$(manage.py gateway_key create x | tail -n1)`.
"""

import os
import sys
from datetime import datetime, time, timezone

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from keys.limits import usd_text
from keys.models import BudgetPeriod, GatewayKey
from keys.periods import period_words
from keys.present import last_used_text, pruned_note
from keys.selectors import keys_activity
from keys.services import KeyLimits, budget_parse, key_create, key_revoke
from wire.commalist import commalist_read, commalist_write


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in commalist_read(text or "") if n.strip()]  # a name's own comma as "\\,"


def _expiry(text: str | None) -> datetime | None:
    """A date (midnight UTC) or an ISO date-time (UTC when it names no zone)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"--expires must be a date such as 2027-01-01, not {text!r}") from None
    if len(text) == 10:
        value = datetime.combine(value.date(), time.min)
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if value <= datetime.now(timezone.utc):  # a key refused from its first use is a typo, not a wish
        raise CommandError(f"--expires is not in the future: {text}")
    return value


class Command(BaseCommand):
    help = "Create, list or revoke gateway keys."

    def add_arguments(self, parser: CommandParser) -> None:
        """Subcommands and their options."""
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key; its secret is printed once, on the last line")
        create.add_argument("name", help="the key's name, as the log and the admin show it (unique)")
        create.add_argument("--rpm", type=int, help="requests per minute")
        create.add_argument("--tpm", type=int, help="tokens per minute")
        create.add_argument("--budget-usd", help="spend limit in USD per budget period")
        create.add_argument("--budget-period", choices=BudgetPeriod.values,
                            help="the period --budget-usd is for (default: month)")
        create.add_argument("--providers", help="allowed providers, comma-separated (default: all)")
        create.add_argument("--models", help="allowed models, comma-separated, a name's own comma as \\, "
                                              "(default: all)")
        create.add_argument("--expires", help="refused from this date (UTC), e.g. 2027-01-01")
        create.add_argument("--provider-credential-stdin", action="store_true",
                            help="read a provider key from standard input and keep it in the key (encrypted); "
                                 "clients then send the gateway key where the provider key goes")
        sub.add_parser("list", help="every key, its limits and this period's use")
        revoke = sub.add_parser("revoke", help="revoke a key (refused within a second, history kept)")
        revoke.add_argument("name", help="the key's name, as `list` shows it")

    def handle(self, *args, action: str, **options) -> None:
        """Delegate to the action."""
        getattr(self, f"_{action}")(**options)

    def _create(self, *, name: str, rpm, tpm, budget_usd, budget_period, providers, models, expires,
                provider_credential_stdin: bool, **_) -> None:
        if sys.stdout is None or sys.stdout.closed:  # `create ... >&-`: the secret could go nowhere
            raise CommandError("standard output is closed: the secret could not be shown, so no key is created")
        if budget_period and not budget_usd:  # else a period that limits nothing, taken without a word
            raise CommandError("--budget-period goes with --budget-usd")
        for option, given in (("--providers", providers), ("--models", models)):
            if given is not None and not _names(given):  # `--models "$MODELS"`, MODELS unset: a key for every model
                raise CommandError(f"{option} names nothing (an unset variable?): leave it out to allow all")
        budget_period = budget_period or BudgetPeriod.MONTH
        credential = sys.stdin.readline().strip() if provider_credential_stdin else ""
        if provider_credential_stdin and not credential:
            raise CommandError("--provider-credential-stdin: nothing was read from standard input")
        try:
            limits = KeyLimits(rpm=rpm, tpm=tpm, budget_usd=budget_parse(budget_usd) if budget_usd else None,
                               budget_period=budget_period, providers=_names(providers), models=_names(models),
                               expires_at=_expiry(expires))
            # The key exists only if its secret could be written: an output already closed leaves no key.
            # (A reader that takes the first line and leaves, `create ... | head -1`, cannot be told from
            # one that read both: the secret went into the pipe. Read the last line: docs/keys.md.)
            with transaction.atomic():
                key, secret = key_create(name=name, limits=limits, provider_credential=credential)
                self.stdout.write(f"created gateway key '{key.name}' ({_limits_text(key)}). "
                                  "Its secret is on the next line; it is shown only now:")
                self.stdout.write(secret)
                self.stdout.flush()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        except BrokenPipeError:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
            raise CommandError("the output closed before the secret was written: no key was created") from None

    def _list(self, **_) -> None:
        keys = list(GatewayKey.objects.all())
        if not keys:
            self.stdout.write("no gateway keys")
            return
        uses = keys_activity(keys)
        for key in keys:
            use = uses[key.pk]
            state = _state(key)
            spent = usd_text(use.spend)
            pruned = f" ({note})" if (note := pruned_note(use)) else ""
            self.stdout.write(f"{key.name}\t{key.secret_hint}\t{state}\t{_limits_text(key)}\t"
                              f"{_count(use.requests, 'request')}, {spent} {_period_text(key)}{pruned}\t"
                              f"last used {last_used_text(use)}")

    def _revoke(self, *, name: str, **_) -> None:
        asked = datetime.now(timezone.utc)
        try:
            key = key_revoke(name=name)
        except GatewayKey.DoesNotExist:
            raise CommandError(f"no gateway key named {name!r}") from None
        if key.revoked_at < asked:  # said "revoked ... within a second" again, as if it had been in use until now
            self.stdout.write(f"gateway key '{key.name}' was already revoked, on {key.revoked_at:%Y-%m-%d %H:%M} UTC")
            return
        self.stdout.write(f"revoked gateway key '{key.name}': refused on every worker within a second")


def _state(key: GatewayKey) -> str:
    if not key.active:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= datetime.now(timezone.utc):
        return "expired"
    return f"active until {key.expires_at:%Y-%m-%d}" if key.expires_at else "active"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _period_text(key: GatewayKey) -> str:
    """When the listed requests and spend were counted: the budget period so far, or ever ("this total" read
    as nonsense)."""
    return "in total" if key.budget_period == BudgetPeriod.TOTAL else f"this {key.budget_period}"


def _limits_text(key: GatewayKey) -> str:
    parts = []
    if key.rpm is not None:
        parts.append(f"{_count(key.rpm, 'request')}/min")
    if key.tpm is not None:
        parts.append(f"{_count(key.tpm, 'token')}/min")
    if key.budget_usd is not None:
        parts.append(f"{usd_text(key.budget_usd)} {period_words(key.budget_period)}")
    if key.allowed_providers:
        parts.append("providers " + commalist_write(key.allowed_providers))
    if key.allowed_models:
        parts.append("models " + commalist_write(key.allowed_models))
    if key.provider_credential:
        parts.append("holds a provider credential")
    return "; ".join(parts) or "no limits"
