"""The provider registry: one entry per provider, holding all the gateway knows about it."""

import json
from dataclasses import dataclass, field

from django.conf import settings


def openai_error(message: str, *, kind: str = "gateway_error", code: str | None = None) -> bytes:
    """An error body in OpenAI's shape."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


@dataclass(frozen=True)
class Provider:
    """How one provider is reached and how its traffic is read."""

    name: str
    prefixes: tuple[str, ...]
    upstream_setting: str
    upstream_prefix: str = ""
    credential_headers: tuple[str, ...] = ("authorization",)
    error_body: callable = field(default=openai_error)

    @property
    def upstream_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        return getattr(settings, self.upstream_setting).rstrip("/")


PROVIDERS: tuple[Provider, ...] = (
    # /openai/v1/x and /v1/x both go to {OPENAI_UPSTREAM_URL}/v1/x.
    Provider(name="openai", prefixes=("/openai/v1/", "/v1/"), upstream_setting="OPENAI_UPSTREAM_URL",
             upstream_prefix="/v1/"),
)


def provider_match(path: str) -> tuple[Provider, str] | None:
    """The provider claiming a (normalised) path, and the path to request upstream."""
    for provider in PROVIDERS:
        for prefix in provider.prefixes:
            if path.startswith(prefix):
                return provider, provider.upstream_prefix + path[len(prefix):]
    return None


def provider_prefixes() -> list[str]:
    """Every route prefix the gateway serves, for error messages."""
    return [p for provider in PROVIDERS for p in provider.prefixes]
