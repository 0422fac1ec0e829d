"""Everything the gateway knows about each AI provider: one module per provider, no Django here.

Each module defines a `Provider` (see providers/base.py): how requests reach it and how its
traffic reads. The proxy and the log ask the registry below and never name a provider. Adding
a provider is writing its module and listing an instance in BUILTIN (or, from outside, calling
`register`); its upstream URL setting is its `upstream_env`.
"""

from dataclasses import dataclass
from functools import lru_cache

from providers.anthropic import Anthropic
from providers.base import COUNT_FIELDS, USAGE_FIELDS, EmbeddedFile, Provider, RequestTags, StreamEvent, Turn, Usage
from providers.compatible import Compatible, compatible_parse
from providers.gemini import Gemini
from providers.openai import OpenAI
from providers.replicate import Replicate

__all__ = ["COUNT_FIELDS", "USAGE_FIELDS", "EmbeddedFile", "Provider", "Registry", "RequestTags", "StreamEvent", "Turn",
           "Usage", "builtin", "register", "registry", "unregister"]

_BUILTIN: list[Provider] = [OpenAI(), Anthropic(), Gemini(), Replicate()]
# Path prefixes of the gateway's own pages: no provider may be named after them.
RESERVED_NAMES = frozenset({"v1", "admin", "static", "health"})


def builtin() -> tuple[Provider, ...]:
    """The providers every gateway serves (before the OpenAI-compatible ones it is configured with)."""
    return tuple(_BUILTIN)


def register(provider: Provider) -> None:
    """Add a provider (a plugin, a test's toy provider); its prefixes must be new."""
    taken = {p for known in _BUILTIN for p in known.prefixes}
    if provider.name in RESERVED_NAMES | {p.name for p in _BUILTIN} or taken & set(provider.prefixes):
        raise ValueError(f"provider {provider.name!r} or one of its prefixes is taken")
    _BUILTIN.append(provider)
    registry.cache_clear()


def unregister(name: str) -> None:
    """Remove a registered provider by name."""
    _BUILTIN[:] = [p for p in _BUILTIN if p.name != name]
    registry.cache_clear()


@dataclass(frozen=True)
class Registry:
    """The providers a gateway serves: built-in ones first, then the configured compatible ones."""

    providers: tuple[Provider, ...]

    def match(self, path: str) -> tuple[Provider, str] | None:
        """The provider claiming a (normalised) gateway path, and the path to request upstream."""
        for provider in self.providers:
            upstream = provider.upstream_path(path)
            if upstream is not None:
                return provider, upstream
        return None

    def owner(self, path: str) -> Provider | None:
        """The provider whose prefix begins with the path's first segment (`/replicate/v2/x`: Replicate), for the
        error shape of a path under it that it does not serve; None when no prefix begins so."""
        head = path.lstrip("/").split("/", 1)[0]
        for provider in self.providers:
            if any(prefix.lstrip("/").split("/", 1)[0] == head for prefix in provider.prefixes):
                return provider
        return None

    def get(self, name: str) -> Provider:
        """A provider by name; one no longer configured reads as an OpenAI-compatible server."""
        for provider in self.providers:
            if provider.name == name:
                return provider
        return Compatible(name or "unknown", "")

    def prefixes(self) -> list[str]:
        """Every route prefix served, for error messages."""
        return [p for provider in self.providers for p in provider.prefixes]


@lru_cache(maxsize=8)
def _registry(compatible: tuple[str, ...]) -> Registry:
    taken = RESERVED_NAMES | {p.name for p in _BUILTIN}
    return Registry(tuple(_BUILTIN) + compatible_parse(compatible, taken))


def registry(compatible: "list[str] | tuple[str, ...]" = ()) -> Registry:
    """The registry for a GATEWAY_PROVIDERS value (cached per value); ValueError on a bad entry."""
    return _registry(tuple(e.strip() for e in compatible if e.strip()))


registry.cache_clear = _registry.cache_clear  # type: ignore[attr-defined]
