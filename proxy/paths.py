"""Where a request goes: its path checked (never outside its provider's prefix, whatever decodes it) and matched.

The path goes upstream as the client sent it, still percent-encoded: decoding it here would
change what the upstream reads (an id holding "%41" or an encoded slash names another
resource once decoded). Decoding is only used to decide: every layer of percent-decoding a
server might apply is checked, and a path that would climb out of its prefix at any of them is
refused.
"""

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from providers import Provider, registry

NO_PROVIDER = Provider()  # the error shape of paths no provider claims (the common OpenAI shape)


class PathRefused(ValueError):
    """The path tries to leave the provider prefix or hides its structure."""


MAX_DECODE_ROUNDS = 4  # %252e%252e is two layers; more than this is only ever an attack
MAX_PATH_CHARS = 8192
_IIS_UNICODE = re.compile(r"%u[0-9a-f]{4}", re.IGNORECASE)
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*")


def _segment_is_dots(segment: str) -> bool:
    """True for `.`, `..`, `..;x` and look-alikes (fullwidth dots) that servers may treat as dots."""
    core = unicodedata.normalize("NFKC", segment.split(";", 1)[0]).strip()
    return bool(core) and set(core) == {"."}


def _layer_check(layer: str) -> None:
    """Refuse one decoding of the path if, read by a server, it could leave its prefix or hide its structure."""
    if _IIS_UNICODE.search(layer):
        raise PathRefused("%u encodings are not allowed")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in layer) or "\ufffd" in layer:
        raise PathRefused("control characters and invalid UTF-8 are not allowed")
    if "?" in layer or "#" in layer:
        raise PathRefused("encoded '?' and '#' are not allowed")
    if "\\" in layer:  # some servers read it as a slash
        raise PathRefused("backslashes are not allowed")
    segments = layer.split("/")[1:]  # [0] is the empty text before the leading "/"
    if "" in segments[:-1]:  # a trailing slash is fine
        raise PathRefused("empty path segments are not allowed")
    if any(_segment_is_dots(s) for s in segments):
        raise PathRefused("dot segments are not allowed")


def path_check(raw_path: str) -> str:
    """The decoded path to route on; PathRefused if any layer of decoding could leave the prefix.

    Encoded slashes are allowed (model ids hold them: `meta-llama%2FLlama-3-8b`), as long as
    no decoding of the path has a dot or empty segment.
    """
    if len(raw_path) > MAX_PATH_CHARS:
        raise PathRefused(f"path longer than {MAX_PATH_CHARS} characters")
    if not raw_path.startswith("/") or raw_path.startswith("//"):
        raise PathRefused("path must be absolute and name no host")
    if not _VISIBLE_ASCII.fullmatch(raw_path):
        raise PathRefused("path must be visible ASCII, anything else percent-encoded")
    layer = raw_path
    for _ in range(MAX_DECODE_ROUNDS + 1):
        _layer_check(layer)
        decoded = unquote(layer)
        if decoded == layer:
            return layer
        layer = decoded
    raise PathRefused("too many layers of percent-encoding")


class NoRoute(LookupError):
    """No provider serves the path."""


@dataclass(frozen=True)
class Route:
    """A request's provider and where it goes upstream."""

    provider: Provider
    path: str  # the gateway path as the client sent it (still percent-encoded)
    upstream_path: str  # the same, under the provider's upstream prefix
    upstream_base: str  # the provider's upstream base URL, without a trailing slash


def gateway_link(route: Route, url: str, origin: str) -> str | None:
    """The gateway's URL (under `origin`, scheme://host) for a URL of the route's upstream, through the
    prefix the client used; None for a URL elsewhere."""
    head = route.upstream_base + route.provider.upstream_prefix
    prefix = route.provider.prefix_of(route.path)
    if prefix is None or not url.startswith(head):
        return None
    return origin + prefix + url[len(head):]


def upstream_base(provider: Provider) -> str:
    """A provider's upstream base URL: its setting (UPSTREAM_URLS, from its upstream_env), else its own."""
    return (settings.UPSTREAM_URLS.get(provider.name) or provider.upstream_default).rstrip("/")


# Routes found, by raw path, until a setting they depend on changes (tests change them): the
# same few paths come again and again, and checking every decoding layer showed in the profile.
_routes: dict[str, Route] = {}
_ROUTES_MAX = 1024


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in ("GATEWAY_PROVIDERS", "UPSTREAM_URLS"):
        _routes.clear()


def path_owner(raw_path: str) -> Provider:
    """Whose error shape answers a path that is refused or served by nobody: the provider its first segment
    names (`/replicate/v2/x` gets Replicate's problem+json, which its SDK reads), else the common shape."""
    return registry(settings.GATEWAY_PROVIDERS).owner(raw_path) or NO_PROVIDER


def route_find(raw_path: str) -> Route:
    """The route for a raw request path; PathRefused for an unsafe path, NoRoute when nobody serves it."""
    route = _routes.get(raw_path)
    if route is None:
        if len(_routes) >= _ROUTES_MAX:  # ids in paths (files, batches) make many: start over
            _routes.clear()
        route = _routes[raw_path] = _route_find(raw_path)
    return route


def _route_find(raw_path: str) -> Route:
    path = path_check(raw_path)
    providers = registry(settings.GATEWAY_PROVIDERS)
    found = providers.match(path)
    if found is None:
        raise NoRoute(f"No provider serves {path}. Known prefixes: {', '.join(providers.prefixes())}")
    provider = found[0]
    # The prefix is matched on the decoded path but replaced in the raw one: it must be there as is.
    if provider.prefix_of(raw_path) != provider.prefix_of(path):
        raise PathRefused(f"the prefix {provider.prefix_of(path)} must be sent as is, not percent-encoded")
    return Route(provider, raw_path, provider.upstream_path(raw_path), upstream_base(provider))
