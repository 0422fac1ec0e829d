"""The admin's forms for gateway keys: limits validated like the command's, the provider credential write-only."""

from django import forms
from django.core.exceptions import ValidationError

from keys.models import GatewayKey
from keys.services import KeyLimits, credential_provider_check, limits_check, name_check
from wire.commalist import commalist_read, commalist_write


def _names(value) -> list[str]:
    """A list of names from the admin's text box: JSON list or comma-separated (a name's own comma as "\\,")."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in commalist_read(str(value or "")) if v.strip()]


class NamesField(forms.CharField):
    """Comma-separated names shown and entered as text, kept as a JSON list. Shown as they are read back: a model
    named "org/model,v2", shown bare, was saved again as two models."""

    def prepare_value(self, value):
        return commalist_write(value, ", ") if isinstance(value, list) else value

    def to_python(self, value):
        return _names(value)


class GatewayKeyForm(forms.ModelForm):
    allowed_providers = NamesField(required=False, help_text="Comma-separated, e.g. openai, anthropic. Empty: all.")
    allowed_models = NamesField(required=False, help_text="Comma-separated, e.g. gpt-4o-mini (a name's own comma as "
                                                          "\\,). Empty: all.")
    new_provider_credential = forms.CharField(
        required=False, strip=True, widget=forms.PasswordInput(render_value=False),
        label="Provider credential",
        help_text="Optional. A provider key kept in the gateway key, encrypted: clients then send the gateway key "
                  "where the provider key goes, and never see the provider key. Leave empty to keep what is stored.")
    remove_provider_credential = forms.BooleanField(required=False, label="Remove the stored provider credential")

    class Meta:
        model = GatewayKey
        fields = ["name", "active", "expires_at", "allowed_providers", "allowed_models", "rpm", "tpm",
                  "budget_usd", "budget_period", "cache_ttl"]

    def clean(self):
        data = super().clean()
        limits = KeyLimits(rpm=data.get("rpm"), tpm=data.get("tpm"), budget_usd=data.get("budget_usd"),
                           budget_period=data.get("budget_period") or "month",
                           providers=data.get("allowed_providers") or [], models=data.get("allowed_models") or [])
        holds = bool(data.get("new_provider_credential")) or (
            bool(self.instance.provider_credential) and not data.get("remove_provider_credential"))
        try:
            if data.get("name") is not None:
                data["name"] = name_check(data["name"])
            limits_check(limits)
            credential_provider_check(limits.providers, holds)
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
        return data
