"""What counts as a credential, and its masked form: headers, query parameters, fields; fingerprints.

A name says it holds a secret when it is on a built-in list, named by a provider module
(its credential headers and query parameters), configured (LOG_REDACT_HEADERS,
LOG_REDACT_QUERY_PARAMS), or made of words that say so (X-Custom-Api-Key, client_secret,
accessToken, session-token) — but not words that only look alike (x-ratelimit-remaining-tokens).
"""

import base64
import functools
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from providers import Registry, registry
from providers.base import SUBPROTOCOL_HEADER

SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie", "set-cookie",
    "x-gateway-key",
})
SECRET_QUERY_PARAMS = frozenset({
    "key", "api_key", "api-key", "apikey", "x-api-key", "x-goog-api-key", "access_token", "token",
    "auth", "secret", "client_secret", "password", "sig",
})
# Words that make a name a secret's name, once split at -, _, . and camelCase humps.
SECRET_WORDS = frozenset({
    "apikey", "key", "token", "secret", "password", "passwd", "pwd", "auth", "authorization", "credential",
    "credentials", "cookie", "signature", "sig", "session", "bearer", "privatekey",
})
# Names made of those words that hold no credential and are worth reading in the log.
NOT_SECRET = frozenset({"idempotency-key", "idempotency_key", "idempotencykey", "key-id", "keyid", "session-id",
                        "sessionid", "session_id", "x-gateway-session-id", "prompt_cache_key", "max_tokens",
                        "cache_key"})
# Auth schemes kept in clear; any other first word is treated as part of the secret.
AUTH_SCHEMES = frozenset({
    "basic", "bearer", "digest", "token", "bot", "key", "apikey", "hmac", "negotiate", "ntlm",
    "oauth", "sharedkey", "aws4-hmac-sha256", "gateway",
})
MASK = "…"
SCRUB_MIN_LEN = 8  # shorter values are too likely to match ordinary text
_PREFIX = re.compile(r"^[A-Za-z]{1,3}[-_]")  # sk-, gsk_, xai-: tells the key's kind, not the key
_WORD_SPLIT = re.compile(r"[-_.\s]+|(?<=[a-z0-9])(?=[A-Z])")
_SCHEME = re.compile(r"^\s*(\S+)\s+(\S.*?)\s*$", re.S)  # "Bearer<TAB>key", "Bearer  key"
# Keys known by their shape wherever they stand (a path, any query value): OpenAI's and Anthropic's sk-,
# the gateway's own gk-, Gemini's AIza, Replicate's r8_, Groq's gsk_, xAI's xai-, Hugging Face's hf_.
KEY_SHAPES = re.compile(r"(?<![\w-])((?:sk|gk)-[A-Za-z0-9_-]{12,}|AIza[0-9A-Za-z_-]{20,}|(?:r8|gsk|hf)_[A-Za-z0-9]{20,}"
                        r"|xai-[A-Za-z0-9]{20,})")
# What each of those keys holds as is: found with `in`, many times faster than the pattern's scan of a request's
# headers, which most often hold none (tests/logs/redaction/test_redact.py checks every shape has its mark).
SHAPE_MARKS = ("sk-", "gk-", "AIza", "r8_", "gsk_", "hf_", "xai-")
# A client may encode a query value twice (sk%252D...): still a key to whoever reads the log.
_DECODE_ROUNDS = 3


@functools.lru_cache(maxsize=4096)
def name_is_secret(name: str) -> bool:
    """Whether a header, parameter or field name says its value is a credential (by its words)."""
    if name.lower() in NOT_SECRET:
        return False
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    joined = "".join(words)
    return joined in SECRET_WORDS or any(w in SECRET_WORDS for w in words) or joined.endswith(("apikey", "secret"))


# Body fields (JSON, forms) holding a credential, by their name with case and separators removed.
SECRET_FIELDS = frozenset({
    "apikey", "xapikey", "apisecret", "accesskey", "secretkey", "secretaccesskey", "privatekey", "accesstoken",
    "refreshtoken", "idtoken", "authtoken", "sessiontoken", "bearertoken", "token", "secret", "clientsecret",
    "password", "passwd", "credential", "credentials", "auth", "authorization",
})
# ...Authorization: an MCP tool's `authorization` and its `headers.Authorization` (OpenAI's Responses API).
SECRET_FIELD_ENDINGS = ("apikey", "secret", "password", "token", "authorization")


@functools.lru_cache(maxsize=4096)
def field_is_secret(name: str, *, answer: bool = False) -> bool:
    """Whether a JSON or form field's value is a credential, by its name (apiKey, client_secret...).

    In answers a field named just "token" is content (OpenAI's logprobs), not a credential.
    """
    norm = re.sub(r"[-_.\s]", "", name).lower()
    if answer and norm == "token":
        return False
    return norm in SECRET_FIELDS or norm.endswith(SECRET_FIELD_ENDINGS)


@functools.lru_cache(maxsize=16)
def _names(base: frozenset[str], extra: tuple[str, ...], providers_: Registry, attr: str) -> frozenset[str]:
    """A built-in set of names, plus configured ones, plus every provider's credential names (cached)."""
    own = {n for p in providers_.providers for n in getattr(p, attr)}
    return base | {n.strip().lower() for n in extra if n.strip()} | {n.lower() for n in own}


# The answers below, kept until a setting they depend on changes (tests change them; a server
# reads them once): every header of every request and answer is asked about, several times, and
# reading the settings for each cost a measurable share of a request.
_memo: dict[Any, Any] = {}
_MEMO_SETTINGS = frozenset({"LOG_REDACT_HEADERS", "LOG_REDACT_QUERY_PARAMS", "GATEWAY_PROVIDERS"})
_MEMO_MAX = 4096


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    if setting in _MEMO_SETTINGS:
        _memo.clear()


def secret_headers() -> frozenset[str]:
    """Header names always masked: the built-in set, LOG_REDACT_HEADERS, each provider's credential headers."""
    found = _memo.get("headers")
    if found is None:
        found = _memo["headers"] = _names(SECRET_HEADERS, tuple(settings.LOG_REDACT_HEADERS),
                                          registry(settings.GATEWAY_PROVIDERS), "credential_headers")
    return found


def secret_subprotocols() -> tuple[str, ...]:
    """Prefixes of WebSocket subprotocols that carry a credential (each provider's own)."""
    found = _memo.get("subprotocols")
    if found is None:
        found = _memo["subprotocols"] = tuple(sorted(_names(frozenset(), (), registry(settings.GATEWAY_PROVIDERS),
                                                            "credential_subprotocols")))
    return found


def _subprotocol_entries(value: str) -> list[tuple[str, str, str]]:
    """(entry as sent, prefix, credential) of each comma-separated subprotocol ("" where none is carried)."""
    out = []
    for entry in value.split(","):
        stripped = entry.strip()
        prefix = next((p for p in secret_subprotocols() if stripped.lower().startswith(p) and len(stripped) > len(p)), "")
        out.append((entry, prefix, stripped[len(prefix):] if prefix else ""))
    return out


def subprotocols_mask(value: str) -> str:
    """Sec-WebSocket-Protocol with the credentials some subprotocols carry masked; the others as sent."""
    return ",".join(entry.replace(secret, token_mask(secret)) if secret and MASK not in secret else entry
                    for entry, _, secret in _subprotocol_entries(value))


def secret_params() -> frozenset[str]:
    """Query parameters always masked: the built-in set, LOG_REDACT_QUERY_PARAMS, each provider's own."""
    found = _memo.get("params")
    if found is None:
        found = _memo["params"] = _names(SECRET_QUERY_PARAMS, tuple(settings.LOG_REDACT_QUERY_PARAMS),
                                         registry(settings.GATEWAY_PROVIDERS), "credential_query")
    return found


def header_is_secret(name: str) -> bool:
    """Whether a header's value is masked."""
    found = _memo.get(("header", name))
    if found is None:
        if len(_memo) > _MEMO_MAX:  # header names are few; a client sending many odd ones must not grow this
            _memo.clear()
        lname = name.lower()
        found = _memo[("header", name)] = (lname in secret_headers() or name_is_secret(lname)
                                           or lname == SUBPROTOCOL_HEADER)  # its credential entries only
    return found


def param_is_secret(raw_name: str) -> bool:
    """Whether a query or form parameter's value is masked (its name percent-decoded first)."""
    name = unquote_plus(raw_name).strip()
    return name.lower() in secret_params() or name_is_secret(name)


def token_mask(token: str) -> str:
    """Hide a secret: keep at most a kind prefix (sk-) and the last 4 characters of long ones."""
    n = len(token)
    tail = token[-4:] if n >= 12 else ""
    head = ""
    if n >= 20 and (m := _PREFIX.match(token)):  # at most 8 of 20+ characters shown
        head = m.group(0)
    return f"{head}{MASK}{tail}"


def scheme_split(value: str) -> tuple[str, str]:
    """(auth scheme, token) of a credential value, whatever whitespace separates them; ("", value) if none."""
    match = _SCHEME.match(value)
    if match and match.group(1).lower() in AUTH_SCHEMES:
        return match.group(1), match.group(2)
    return "", value.strip()


def value_mask(value: str) -> str:
    """Mask a credential value, keeping a known auth scheme (`Bearer sk-…9f2c`)."""
    scheme, token = scheme_split(value)
    return f"{scheme} {token_mask(token)}" if scheme else token_mask(token)


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
    if lname == SUBPROTOCOL_HEADER:
        return subprotocols_mask(value)
    return value_mask(value)


def headers_mask(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Mask the values of credential headers in a list of (name, value) pairs, and keys known by their shape in
    any other header's value (X-Gateway-Meta-Note: sk-ant-...), as in any query parameter's."""
    out, plain = [], []
    for k, v in pairs:
        if header_is_secret(k):
            out.append((k, header_value_mask(k, v)))
        else:
            out.append((k, v))
            plain.append(v)
    if _marked("\n".join(plain)):  # one look for them all: most requests hold no key outside credential headers
        return [(k, v if header_is_secret(k) else shapes_mask(v)) for k, v in out]
    return out


def _marked(text: str) -> bool:
    """Whether a text may hold a key known by its shape (it holds one of their marks)."""
    return any(mark in text for mark in SHAPE_MARKS)


def shapes_mask(text: str) -> str:
    """Mask every key known by its shape in a text; the rest stays as it is."""
    return KEY_SHAPES.sub(lambda m: token_mask(m.group(1)), text) if _marked(text) else text


def _decoded(raw: str, *, path: bool = False) -> str:
    """A query name or value (or a path: "+" is itself there) percent-decoded until it stops changing (at most
    _DECODE_ROUNDS times)."""
    for _ in range(_DECODE_ROUNDS):
        text = unquote(raw, errors="surrogateescape") if path else unquote_plus(raw)
        if text == raw:
            break
        raw = text
    return raw


def _shaped_mask(raw: str) -> str:
    """A raw (percent-encoded) query name or value with the keys it holds by their shape masked.

    Shapes are matched on the decoded text: gk%2D... or r8%5F... is a key once decoded. Only a part that
    holds one is rewritten (decoded, the key masked, the rest encoded again); any other stays as sent.
    """
    text = _decoded(raw)
    if not KEY_SHAPES.search(text):
        return raw
    parts = KEY_SHAPES.split(text)  # text, key, text, key, ..., text
    return "".join(token_mask(p) if i % 2 else quote_plus(p, errors="surrogatepass") for i, p in enumerate(parts))


def path_mask(path: str) -> str:
    """A raw (percent-encoded) URL path with the keys it holds by their shape masked: /v1/models/sk-... names a
    key that is not the request's credential, which the scrubber masks only when it is. A segment that holds none
    stays as sent; one that does is decoded, the key masked and the rest encoded again ("+" is itself in a path)."""
    if "%" not in path and not KEY_SHAPES.search(path):
        return path  # most paths: one search, no segment walk
    return "/".join(_segment_mask(seg) for seg in path.split("/"))


def _segment_mask(raw: str) -> str:
    text = _decoded(raw, path=True)
    if not KEY_SHAPES.search(text):
        return raw
    parts = KEY_SHAPES.split(text)  # text, key, text, key, ..., text
    return "".join(token_mask(p) if i % 2 else quote(p, safe=":@!$&'()*+,;=~", errors="surrogateescape")
                   for i, p in enumerate(parts))


def query_piece_mask(piece: str, *, logged: bool = False) -> str:
    """One raw piece (name=value, or a bare name) of a query, masked: a credential's name masks its whole
    value, a key's shape masks the key wherever it stands (any name or value); anything else stays as sent."""
    name, eq, value = piece.partition("=")
    if not eq:
        return _shaped_mask(piece)
    if param_is_secret(name):
        if logged and MASK in unquote_plus(value):
            return piece
        return f"{name}={token_mask(unquote_plus(value))}"
    return f"{_shaped_mask(name)}={_shaped_mask(value)}"


def query_mask(query: str, *, logged: bool = False) -> str:
    """Mask credentials in a query string (key=..., a key by its shape in any value); the rest stays as sent.

    The one place a query is masked: the log row, the forwarded note, the admin's pages, curl, exports and
    the console's lines all go through it (query_piece_mask).
    logged: the query as the log holds it, for display or export: a value masked already stays as it is,
    one a row kept in clear (logged before its name was listed, e.g. in LOG_REDACT_QUERY_PARAMS) is masked.
    """
    if not query:
        return ""
    return "&".join(query_piece_mask(piece, logged=logged) for piece in query.split("&"))


def headers_safe(pairs: Any, labels: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Header pairs for display or export, masking any credential that is not masked yet.

    `labels`: values known to be masked already though they hold no mask mark: the gateway key's
    label ("name (fp 0123456789ab)") the proxy logs in place of X-Gateway-Key's secret.
    """
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    out = []
    for item in pairs or []:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            continue
        name, value = str(item[0]), str(item[1])
        if name.lower() == SUBPROTOCOL_HEADER:
            value = subprotocols_mask(value)
        elif not header_is_secret(name):
            value = shapes_mask(value)  # a row logged before headers_mask masked keys by their shape
        elif MASK not in value and not (labels and value in labels):
            value = value_mask(value)
        out.append((name, value))
    return out


def credentials_collect(pairs: list[tuple[str, str]], query: str = "", path: str = "") -> list[str]:
    """Every credential value a request carries (headers, query, a key by its shape in the path), to scrub them
    anywhere else."""
    found, plain = set(), []
    for k, v in pairs:
        lname = k.lower()
        if not header_is_secret(lname):
            plain.append(v)
            continue
        if lname in ("cookie", "set-cookie"):
            found.update(p.partition("=")[2].strip() for p in v.split(";"))
        elif lname == SUBPROTOCOL_HEADER:
            found.update(secret for _, _, secret in _subprotocol_entries(v) if secret)
        else:
            found.add(v.strip())
            found.add(scheme_split(v)[1])
            found.update(v.split())  # every whitespace-separated piece of an unknown scheme
    # A key by its shape under a header name that says nothing: what the header's value becomes in the tags
    # (X-Gateway-Meta-*, X-Gateway-User) and an echo of it are masked too, as for a query parameter (one search).
    if _marked(plain_text := "\n".join(plain)):
        found.update(KEY_SHAPES.findall(plain_text))
    for piece in query.split("&") if query else []:
        name, eq, val = piece.partition("=")
        if eq and param_is_secret(name):
            found.update((val, unquote_plus(val)))
        found.update(KEY_SHAPES.findall(_decoded(piece)))  # echoed in an answer, it is masked there too
    if path:  # /v1/models/sk-...: an answer naming that id echoes it
        found.update(KEY_SHAPES.findall(_decoded(path, path=True)))
    # Longest first, so a full "Bearer x" is replaced before its token "x".
    return sorted((s for s in found if len(s) >= SCRUB_MIN_LEN), key=len, reverse=True)


def url_credentials(url: str) -> list[str]:
    """The credential an upstream base URL carries (`http://user:password@host`, a server behind basic auth), in
    every form an upstream may echo it: the password, user:password and the Basic header httpx sends from it.
    The gateway adds it to each request, so the client's headers never hold it: without this, a 401 quoting
    the Authorization it got ("Incorrect API key provided: Basic ...") kept it in the log in clear."""
    if "@" not in url:  # most URLs, on every request: no parse
        return []
    parts = urlsplit(url)
    if parts.username is None:
        return []
    pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    token = base64.b64encode(pair.encode()).decode("ascii")
    found = {pair, token, f"Basic {token}", unquote(parts.password or "") or unquote(parts.username)}
    return sorted((s for s in found if len(s) >= SCRUB_MIN_LEN), key=len, reverse=True)


def key_fingerprint(credential: str) -> str:
    """A keyed hash of a credential: groups requests by key without revealing it."""
    if not credential:
        return ""
    return _fingerprint(settings.SECRET_KEY, credential)


@functools.lru_cache(maxsize=256)
def _fingerprint(secret_key: str, credential: str) -> str:
    """The HMAC behind key_fingerprint (cached: the same few keys call all day)."""
    return hmac.new(secret_key.encode(), credential.encode(), hashlib.sha256).hexdigest()[:12]
