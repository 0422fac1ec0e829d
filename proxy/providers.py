"""The provider registry: one entry per provider, holding all the gateway knows about it.

Adding a provider is adding an entry to BUILTIN_PROVIDERS. Its `wire` names the wire format
(see logs/usage.py WIRES): how the writer thread reads the model and usage from its requests,
JSON answers and streams. Everything else the proxy needs (route prefixes, upstream URL,
credential headers and query parameters, error shape) is in the entry itself.
"""

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from logs.usage import WIRES


def openai_error(message: str, *, kind: str = "gateway_error", code: str | None = None,
                 status: int = 500) -> bytes:
    """An error body in OpenAI's shape."""
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


def anthropic_error(message: str, *, kind: str = "gateway_error", code: str | None = None,
                    status: int = 500) -> bytes:
    """An error body in Anthropic's shape ({"type": "error", "error": {type, message}})."""
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
                 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(message: str, *, kind: str = "gateway_error", code: str | None = None,
                 status: int = 500) -> bytes:
    """An error body in Google's shape ({"error": {code, message, status}})."""
    return json.dumps({"error": {"code": status, "message": message,
                                 "status": GOOGLE_STATUS.get(status, "INTERNAL")}}).encode()


def replicate_error(message: str, *, kind: str = "gateway_error", code: str | None = None,
                    status: int = 500) -> bytes:
    """An error body in Replicate's problem+json shape ({"title", "detail", "status"})."""
    return json.dumps({"title": kind, "detail": message, "status": status}).encode()


@dataclass(frozen=True)
class Provider:
    """How one provider is reached and how its traffic is read."""

    name: str
    prefixes: tuple[str, ...]
    upstream_setting: str = ""
    upstream_prefix: str = ""
    credential_headers: tuple[str, ...] = ("authorization",)
    credential_query: tuple[str, ...] = ()
    wire: str = "openai"
    error_body: Callable[..., bytes] = field(default=openai_error)
    base_url: str = ""  # for providers declared in GATEWAY_PROVIDERS (no setting of their own)

    @property
    def upstream_url(self) -> str:
        """The configured base URL, without a trailing slash."""
        url = getattr(settings, self.upstream_setting) if self.upstream_setting else self.base_url
        return url.rstrip("/")


BUILTIN_PROVIDERS: tuple[Provider, ...] = (
    # /openai/v1/x and /v1/x both go to {OPENAI_UPSTREAM_URL}/v1/x.
    Provider(name="openai", prefixes=("/openai/v1/", "/v1/"), upstream_setting="OPENAI_UPSTREAM_URL",
             upstream_prefix="/v1/"),
    Provider(name="anthropic", prefixes=("/anthropic/v1/",), upstream_setting="ANTHROPIC_UPSTREAM_URL",
             upstream_prefix="/v1/", credential_headers=("x-api-key", "authorization"),
             wire="anthropic", error_body=anthropic_error),
    # The google-genai SDK adds the API version itself (/v1beta/models/...), so the prefix is bare.
    Provider(name="gemini", prefixes=("/gemini/",), upstream_setting="GEMINI_UPSTREAM_URL",
             upstream_prefix="/", credential_headers=("x-goog-api-key", "authorization"),
             credential_query=("key",), wire="gemini", error_body=gemini_error),
    Provider(name="replicate", prefixes=("/replicate/v1/",), upstream_setting="REPLICATE_UPSTREAM_URL",
             upstream_prefix="/v1/", wire="replicate", error_body=replicate_error),
)
RESERVED_NAMES = frozenset({"v1", "admin", "static", "health"} | {p.name for p in BUILTIN_PROVIDERS})
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def configured_providers_parse(entries: tuple[str, ...]) -> tuple[Provider, ...]:
    """OpenAI-compatible providers from GATEWAY_PROVIDERS entries ("name=https://host/base")."""
    out = []
    for entry in entries:
        name, sep, url = entry.strip().partition("=")
        name, url = name.strip().lower(), url.strip()
        if not sep or not NAME_RE.match(name) or not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f"GATEWAY_PROVIDERS entry {entry!r} must look like name=https://host/base "
                "(name: lowercase letters, digits, - or _)")
        if name in RESERVED_NAMES or any(p.name == name for p in out):
            raise ImproperlyConfigured(f"GATEWAY_PROVIDERS: the name {name!r} is already taken")
        out.append(Provider(name=name, prefixes=(f"/{name}/v1/",), upstream_prefix="/v1/", base_url=url))
    return tuple(out)


@lru_cache(maxsize=8)
def _providers_for(entries: tuple[str, ...]) -> tuple[Provider, ...]:
    """Built-in plus configured providers (cached per configuration value)."""
    return BUILTIN_PROVIDERS + configured_providers_parse(entries)


def providers_all() -> tuple[Provider, ...]:
    """Every provider the gateway serves right now."""
    return _providers_for(tuple(e for e in settings.GATEWAY_PROVIDERS if e.strip()))


def provider_match(path: str) -> tuple[Provider, str] | None:
    """The provider claiming a (normalised) path, and the path to request upstream."""
    for provider in providers_all():
        for prefix in provider.prefixes:
            if path.startswith(prefix):
                return provider, provider.upstream_prefix + path[len(prefix):]
    return None


def provider_prefixes() -> list[str]:
    """Every route prefix the gateway serves, for error messages."""
    return [p for provider in providers_all() for p in provider.prefixes]


for _p in BUILTIN_PROVIDERS:  # a typo in an entry should fail at import, not on the first request
    assert _p.wire in WIRES, f"provider {_p.name}: unknown wire format {_p.wire}"
