"""Masks credentials in headers, query strings and free text before anything is written anywhere."""

import functools
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import unquote_plus

from django.conf import settings

from logs.journal import record_line, text_forms

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


def secret_headers() -> frozenset[str]:
    """Header names to mask: the built-in set plus LOG_REDACT_HEADERS."""
    extra = {h.strip().lower() for h in settings.LOG_REDACT_HEADERS if h.strip()}
    return SECRET_HEADERS | extra


def secret_params() -> frozenset[str]:
    """Query parameter names to mask: the built-in set plus LOG_REDACT_QUERY_PARAMS."""
    extra = {p.strip().lower() for p in getattr(settings, "LOG_REDACT_QUERY_PARAMS", []) if p.strip()}
    return SECRET_QUERY_PARAMS | extra


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


class ScrubbingWriter:
    """Wraps the log writer for one exchange: its records lose the exchange's secrets first."""

    def __init__(self, writer: Any, secrets: list[str]) -> None:
        self.writer, self.secrets = writer, secrets
        self.instance = writer.instance
        # Each secret as it would appear in a journal line: raw, and JSON-escaped.
        self._needles = {form for secret in secrets for form in text_forms(secret)}

    def submit(self, record: dict[str, Any]) -> None:
        """Scrub, then journal and queue.

        The record is serialised first and walked only if a secret shows up in that line
        (rarely: a body echoing the key): copying every record to scrub it cost more than
        writing it.
        """
        try:
            line = record_line(record)
        except (TypeError, ValueError):
            line = None
        if line is None or any(needle in line for needle in self._needles):
            record = record_scrub(record, self.secrets)
            line = None
        self.writer.submit(record, line)


def key_fingerprint(credential: str) -> str:
    """A keyed hash of a credential: groups requests by key without revealing it."""
    if not credential:
        return ""
    return _fingerprint(settings.SECRET_KEY, credential)


@functools.lru_cache(maxsize=256)
def _fingerprint(secret_key: str, credential: str) -> str:
    """The HMAC behind key_fingerprint (cached: the same few keys call all day)."""
    return hmac.new(secret_key.encode(), credential.encode(), hashlib.sha256).hexdigest()[:12]
