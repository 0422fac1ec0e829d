"""Masks credentials in headers and query strings before anything is written anywhere."""

import hashlib
import hmac
from urllib.parse import parse_qsl, urlencode

from django.conf import settings

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "cookie",
        "set-cookie",
        "x-gateway-key",
    }
)
SECRET_QUERY_PARAMS = frozenset({"key", "api_key", "api-key", "access_token", "token"})
MASK = "…"


def secret_headers() -> frozenset[str]:
    """Header names to mask: the built-in set plus LOG_REDACT_HEADERS."""
    extra = {h.strip().lower() for h in settings.LOG_REDACT_HEADERS if h.strip()}
    return SECRET_HEADERS | extra


def value_mask(value: str) -> str:
    """Keep an auth scheme and the last 4 characters of a secret, hide the rest."""
    scheme, sep, token = value.partition(" ")
    if not sep or len(scheme) > 16:
        scheme, token = "", value
    token = token.strip()
    tail = token[-4:] if len(token) >= 12 else ""
    head = token[:3] if len(token) >= 16 else ""
    masked = f"{head}{MASK}{tail}"
    return f"{scheme} {masked}" if scheme else masked


def headers_mask(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mask the values of credential headers in a list of (name, value) pairs."""
    names = secret_headers()
    return [(k, value_mask(v) if k.lower() in names else v) for k, v in pairs]


def query_mask(query: str) -> str:
    """Mask credential parameters such as key= in a query string."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_QUERY_PARAMS for k, _ in pairs):
        return query
    return urlencode([(k, value_mask(v) if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in pairs])


def key_fingerprint(credential: str) -> str:
    """A keyed hash of a credential: groups requests by key without revealing it."""
    if not credential:
        return ""
    digest = hmac.new(settings.SECRET_KEY.encode(), credential.encode(), hashlib.sha256)
    return digest.hexdigest()[:12]
