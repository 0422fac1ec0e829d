"""Where a request goes: its path normalised (never outside its provider's prefix) and matched to a provider."""

import posixpath
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings

from providers import Provider, registry


class PathRefused(ValueError):
    """The path tries to leave the provider prefix or hides its structure."""


MAX_DECODE_ROUNDS = 4  # %252e%252e is two layers; more than this is only ever an attack
MAX_PATH_CHARS = 8192
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_IIS_UNICODE = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)


def _layers_decode(raw_path: str) -> str:
    """Percent-decode until stable, refusing an encoded slash at any layer."""
    layer = raw_path
    for _ in range(MAX_DECODE_ROUNDS + 1):
        if _ENCODED_SEPARATOR.search(layer) or _IIS_UNICODE.search(layer):
            raise PathRefused("encoded slashes are not allowed")
        decoded = unquote(layer)
        if decoded == layer:
            return layer
        layer = decoded
    raise PathRefused("too many layers of percent-encoding")


def _segment_is_dots(segment: str) -> bool:
    """True for `.`, `..`, `..;x` and look-alikes (fullwidth dots) that servers may treat as dots."""
    core = unicodedata.normalize("NFKC", segment.split(";", 1)[0]).strip()
    return bool(core) and set(core) == {"."}


def path_normalise(raw_path: str) -> str:
    """Return the path to route on, refusing dot segments, empty segments and encoded slashes."""
    if len(raw_path) > MAX_PATH_CHARS:
        raise PathRefused(f"path longer than {MAX_PATH_CHARS} characters")
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        raise PathRefused("path must be absolute and name no host")
    decoded = _layers_decode(raw_path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded) or "\ufffd" in decoded:
        raise PathRefused("control characters and invalid UTF-8 are not allowed")
    if "\\" in decoded or "//" in decoded:
        raise PathRefused("empty path segments and backslashes are not allowed")
    if "?" in decoded or "#" in decoded:
        raise PathRefused("encoded '?' and '#' are not allowed")
    if any(_segment_is_dots(s) for s in decoded.split("/")):
        raise PathRefused("dot segments are not allowed")
    if posixpath.normpath(decoded) != decoded.rstrip("/") and decoded != "/":
        raise PathRefused("path is not in normal form")
    return decoded


class NoRoute(LookupError):
    """No provider serves the path."""


@dataclass(frozen=True)
class Route:
    """A request's provider and where it goes upstream."""

    provider: Provider
    path: str  # the gateway path, normalised
    upstream_path: str
    upstream_base: str  # the provider's upstream base URL, without a trailing slash


def upstream_base(provider: Provider) -> str:
    """A provider's upstream base URL: its setting (UPSTREAM_URLS, from its upstream_env), else its own."""
    return (settings.UPSTREAM_URLS.get(provider.name) or provider.upstream_default).rstrip("/")


def route_find(raw_path: str) -> Route:
    """The route for a raw request path; PathRefused for an unsafe path, NoRoute when nobody serves it."""
    path = path_normalise(raw_path)
    providers = registry(settings.GATEWAY_PROVIDERS)
    found = providers.match(path)
    if found is None:
        raise NoRoute(f"No provider serves {path}. Known prefixes: {', '.join(providers.prefixes())}")
    provider, upstream_path = found
    return Route(provider, path, upstream_path, upstream_base(provider))
