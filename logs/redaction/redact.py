"""Masks credentials in headers, query strings and free text before anything is written anywhere."""

import functools
import hashlib
import hmac
import json
import re
from typing import Any
from urllib.parse import unquote_plus

import orjson
from django.conf import settings

from providers import Registry, registry
from wire.jsonutil import json_line, json_parse

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
SECRET_QUERY_PARAMS = frozenset({
    "key", "api_key", "api-key", "apikey", "x-api-key", "x-goog-api-key", "access_token", "token",
    "auth", "secret", "client_secret", "password", "sig",
})
# Auth schemes kept in clear; any other first word is treated as part of the secret.
AUTH_SCHEMES = frozenset({
    "basic", "bearer", "digest", "token", "bot", "key", "apikey", "hmac", "negotiate", "ntlm",
    "oauth", "sharedkey", "aws4-hmac-sha256", "gateway",
})
MASK = "…"
SCRUB_MIN_LEN = 8  # shorter values are too likely to match ordinary text
_PREFIX = re.compile(r"^[A-Za-z]{1,3}[-_]")  # sk-, gsk_, xai-: tells the key's kind, not the key


@functools.lru_cache(maxsize=16)
def _names(base: frozenset[str], extra: tuple[str, ...], providers_: Registry, attr: str) -> frozenset[str]:
    """A built-in set of names, plus configured ones, plus every provider's credential names (cached)."""
    own = {n for p in providers_.providers for n in getattr(p, attr)}
    return base | {n.strip().lower() for n in extra if n.strip()} | {n.lower() for n in own}


def secret_headers() -> frozenset[str]:
    """Header names to mask: the built-in set, LOG_REDACT_HEADERS and each provider's credential headers."""
    return _names(SECRET_HEADERS, tuple(settings.LOG_REDACT_HEADERS), registry(settings.GATEWAY_PROVIDERS),
                  "credential_headers")


def secret_params() -> frozenset[str]:
    """Query parameters to mask: the built-in set, LOG_REDACT_QUERY_PARAMS and each provider's credential ones."""
    return _names(SECRET_QUERY_PARAMS, tuple(settings.LOG_REDACT_QUERY_PARAMS), registry(settings.GATEWAY_PROVIDERS),
                  "credential_query")


def token_mask(token: str) -> str:
    """Hide a secret: keep at most a kind prefix (sk-) and the last 4 characters of long ones."""
    n = len(token)
    tail = token[-4:] if n >= 12 else ""
    head = ""
    if n >= 20 and (m := _PREFIX.match(token)):  # at most 8 of 20+ characters shown
        head = m.group(0)
    return f"{head}{MASK}{tail}"


def value_mask(value: str) -> str:
    """Mask a credential header value, keeping a known auth scheme (`Bearer sk-…9f2c`)."""
    scheme, sep, token = value.strip().partition(" ")
    if sep and scheme.lower() in AUTH_SCHEMES:
        return f"{scheme} {token_mask(token.strip())}"
    return token_mask(value.strip())


def cookie_mask(value: str, *, set_cookie: bool = False) -> str:
    """Mask cookie values but keep their names (and Set-Cookie's attributes)."""
    pieces = value.split(";")
    count = 1 if set_cookie else len(pieces)
    out = []
    for i, piece in enumerate(pieces):
        if i >= count:
            out.append(piece)
            continue
        name, eq, val = piece.partition("=")
        out.append(f"{name}={token_mask(val.strip())}" if eq else token_mask(piece.strip()))
    return ";".join(out)


def header_value_mask(name: str, value: str) -> str:
    """The masked form of one credential header's value."""
    lname = name.lower()
    if lname == "cookie":
        return cookie_mask(value)
    if lname == "set-cookie":
        return cookie_mask(value, set_cookie=True)
    return value_mask(value)


def headers_mask(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mask the values of credential headers in a list of (name, value) pairs."""
    names = secret_headers()
    return [(k, header_value_mask(k, v) if k.lower() in names else v) for k, v in pairs]


def query_mask(query: str) -> str:
    """Mask credential parameters such as key= in a query string; everything else stays as sent."""
    if not query:
        return ""
    names = secret_params()
    out = []
    for piece in query.split("&"):
        name, eq, val = piece.partition("=")
        if eq and unquote_plus(name).lower() in names:
            piece = f"{name}={token_mask(unquote_plus(val))}"
        out.append(piece)
    return "&".join(out)


def headers_safe(pairs: Any) -> list[tuple[str, str]]:
    """Header pairs for display or export, masking any credential that is not masked yet."""
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    names = secret_headers()
    out = []
    for item in pairs or []:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            continue
        name, value = str(item[0]), str(item[1])
        if name.lower() in names and MASK not in value:
            value = value_mask(value)
        out.append((name, value))
    return out


def credentials_collect(pairs: list[tuple[str, str]], query: str = "") -> list[str]:
    """Every credential value a request carries (headers and query), to scrub them anywhere else."""
    names, found = secret_headers(), set()
    for k, v in pairs:
        lname = k.lower()
        if lname not in names:
            continue
        if lname in ("cookie", "set-cookie"):
            found.update(p.partition("=")[2].strip() for p in v.split(";"))
        else:
            found.add(v.strip())
            scheme, sep, token = v.strip().partition(" ")
            if sep:
                found.add(token.strip())
    params = secret_params()
    for piece in query.split("&") if query else []:
        name, eq, val = piece.partition("=")
        if eq and unquote_plus(name).lower() in params:
            found.update((val, unquote_plus(val)))
    # Longest first, so a full "Bearer x" is replaced before its token "x".
    return sorted((s for s in found if len(s) >= SCRUB_MIN_LEN), key=len, reverse=True)


def text_scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of the given secrets in a text by their masked form."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, value_mask(secret))
    return text


def record_scrub(obj: Any, secrets: list[str]) -> Any:
    """A copy of a log record (nested dicts/lists/strings) with the secrets masked everywhere."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return text_scrub(obj, secrets)
    if isinstance(obj, dict):
        return {k: record_scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [record_scrub(v, secrets) for v in obj]
    return obj


def text_forms(text: str) -> set[bytes]:
    """Every way a string can appear inside a JSON line: raw UTF-8, and JSON-escaped either way."""
    forms = {text.encode("utf-8", "surrogatepass"), json.dumps(text)[1:-1].encode()}
    try:
        forms.add(orjson.dumps(text)[1:-1])
    except orjson.JSONEncodeError:
        pass
    return forms


def secret_needles(secrets: list[str]) -> frozenset[bytes]:
    """Each secret as it could appear in a journal line."""
    return frozenset(form for secret in secrets for form in text_forms(secret))


def line_scrub(line: bytes, secrets: list[str], needles: frozenset[bytes]) -> bytes:
    """A journal line with the request's secrets masked wherever they echo (a body, an error).

    The line is searched first and rebuilt only when a secret shows up (rarely: a body echoing
    the key): walking every record to scrub it cost more than writing it.
    """
    if not any(needle in line for needle in needles):
        return line
    return json_line(record_scrub(json_parse(line), secrets))


def key_fingerprint(credential: str) -> str:
    """A keyed hash of a credential: groups requests by key without revealing it."""
    if not credential:
        return ""
    return _fingerprint(settings.SECRET_KEY, credential)


@functools.lru_cache(maxsize=256)
def _fingerprint(secret_key: str, credential: str) -> str:
    """The HMAC behind key_fingerprint (cached: the same few keys call all day)."""
    return hmac.new(secret_key.encode(), credential.encode(), hashlib.sha256).hexdigest()[:12]
