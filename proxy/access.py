"""Which gateway key a request presents: GATEWAY_API_KEYS (keys without limits) or a key of the keys app.

Identified before the request is logged, so the log shows the key's name and fingerprint
instead of its secret; its permissions and limits are applied by the first policy step
(proxy/key_policy.py).
"""

import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from django.conf import settings

from keys.models import GatewayKey
from keys.refresh import refresh_start, refreshed
from keys.selectors import key_cached, key_find, keys_exist, keys_exist_cached, keys_exist_seen, secret_digest
from keys.static import ACCESS_HEADER, AccessKey, access_keys
from keys.tokens import SECRET_PREFIX, secret_like
from providers import Provider
from providers.base import SUBPROTOCOL_HEADER


class AccessDenied(Exception):
    """The request presents no gateway key, or one that may not be used (grant: the key, when it is known)."""

    def __init__(self, message: str, grant: "KeyGrant | None" = None) -> None:
        super().__init__(message)
        self.grant = grant


def access_check(pairs: list[tuple[str, str]]) -> AccessKey | None:
    """The GATEWAY_API_KEYS key a request presents in X-Gateway-Key; None when that list is empty; AccessDenied if bad."""
    keys = access_keys()
    if not keys:
        return None
    presented = next((v.strip() for k, v in pairs if k.lower() == ACCESS_HEADER), None)
    if not presented:
        raise AccessDenied("This gateway requires an access key: send it in the X-Gateway-Key header.")
    match = _static_match(keys, presented)
    if match is None:
        raise AccessDenied("Invalid gateway key in X-Gateway-Key.")
    return match


def _static_match(keys: tuple[AccessKey, ...], presented: str) -> AccessKey | None:
    match = None
    for key in keys:  # compare against every key, in constant time each
        if hmac.compare_digest(presented.encode(), key.secret.encode()):
            match = key
    return match


@dataclass(frozen=True)
class KeyGrant:
    """A gateway key from the database (keys app) a request presented, and where it presented it."""

    key: GatewayKey
    carrier: str  # the header that carried the secret (lowercase): x-gateway-key or a provider credential header

    @property
    def name(self) -> str:
        """The key's name (as AccessKey.name): what the hold queue's --key and hooks' gateway_key match."""
        return self.key.name

    @property
    def label(self) -> str:
        return self.key.label

    @property
    def in_provider_header(self) -> bool:
        """The secret came where the provider key goes: the key's stored credential replaces it upstream."""
        return self.carrier != ACCESS_HEADER

    def headers_label(self, masked: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The logged headers with the header that carried the secret showing the key's name and fingerprint
        (in a WebSocket's subprotocols, the entry that carried it: the others stay as sent)."""
        def labelled(value: str) -> str:
            if self.carrier != SUBPROTOCOL_HEADER:
                return self.label
            return ", ".join(f"{e.strip().split('.', 1)[0]}.{self.label}" if SECRET_PREFIX in e else e.strip()
                             for e in value.split(","))
        return [(k, labelled(v) if k.lower() == self.carrier else v) for k, v in masked]


def keys_unreadable(exc: Exception) -> str:
    """What a client is told when the gateway keys cannot be read (the driver's words, which may name the
    database's host and port, go to the log only)."""
    return (f"The gateway cannot check gateway keys: its database failed ({type(exc).__name__}). "
            "Is it up, and migrated (python manage.py migrate)?")


async def key_current(digest: str) -> GatewayKey | None:
    """The key of the secret with this hash, from this process's cache or from the database in a thread (see
    _keys_exist for when): a request's key, and a realtime session's as it runs (revoked within a second)."""
    found, key, due = key_cached(digest)
    if found and not due:
        return key
    if found:  # re-read in the background; this request goes on with a read less than KEY_TTL old
        refresh_start(("key", digest), key_find, digest)
        return key
    return await refreshed(("key", digest), key_find, digest)


def key_refusal(key: GatewayKey | None) -> str:
    """Why a key that exists may not be used now (revoked, expired), or ""."""
    if key is None:
        return "Gateway key has been deleted."
    if not key.active:
        return f"Gateway key '{key.name}' has been revoked."
    if key.expires_at is not None and key.expires_at <= datetime.now(timezone.utc):
        return f"Gateway key '{key.name}' expired at {key.expires_at:%Y-%m-%d %H:%M:%S} UTC."
    return ""


async def _key_find(secret: str) -> GatewayKey | None:
    return await key_current(secret_digest(secret))


async def _keys_exist() -> bool:
    """Whether keys exist: re-read in the background once the last read is REFRESH_AHEAD old, so that under
    steady traffic no request waits for the database; waited for only when it is KEY_TTL old (after a pause)."""
    known, due = keys_exist_cached()
    if known is None:
        return await refreshed("keys_exist", keys_exist)
    if due:
        refresh_start("keys_exist", keys_exist)
    return known


def _presented(headers: list[tuple[str, str]], query: str, provider: Provider) -> tuple[str, str]:
    """(secret, header) of the gateway key a request presents: X-Gateway-Key, or a gk- secret where the provider
    key goes. A gk- secret never goes upstream: one in the query string, or one where the provider key goes
    beside a different one in X-Gateway-Key, is refused."""
    access = next((v.strip() for k, v in headers if k.lower() == ACCESS_HEADER and v.strip()), "")
    presented = ("", "")
    for k, v in headers:
        name = k.lower()
        token = None
        if name in provider.credential_headers:
            token = v.split(" ", 1)[-1].strip()
        elif name == SUBPROTOCOL_HEADER and provider.credential_subprotocols:
            token = provider.subprotocol_credential(v)  # a browser's WebSocket, which can set no header
        if token is not None:
            if secret_like(token) and not presented[0]:
                if access and access != token:
                    raise AccessDenied(f"Two different gateway keys: one in X-Gateway-Key, another in the {name} "
                                       "header. Send the provider key there, or the same gateway key.")
                presented = token, name  # a key that holds no provider credential is refused for it (_grant)
        elif SECRET_PREFIX in v and name != ACCESS_HEADER and _secret_in(v):
            # Any other header goes upstream as it is: a gateway secret there would too.
            raise AccessDenied(f"Send the gateway key in X-Gateway-Key or where the provider key goes, not in the "
                               f"{k} header.")
    if presented[0]:
        return presented
    if secret_in_query(query):
        raise AccessDenied("Send the gateway key in a header (X-Gateway-Key, or where the provider key goes), "
                           "not in the query string.")
    return (access, ACCESS_HEADER) if access else ("", "")


def secret_in_query(query: str) -> bool:
    """Whether a query string holds a gk- secret (always refused: it would go upstream)."""
    return SECRET_PREFIX in query and any(secret_like(v) for _, v in parse_qsl(query, keep_blank_values=True))


def secret_carried(headers: list[tuple[str, str]], query: str) -> bool:
    """Whether a request carries a gk- secret anywhere: a header or the query string."""
    return secret_in_query(query) or any(SECRET_PREFIX in v and _secret_in(v) for _, v in headers)


def _secret_in(value: str) -> bool:
    """Whether a header value holds a gk- secret among its words (a scheme, commas, cookies around it)."""
    return any(secret_like(word) for word in re.split(r"[\s,;=:\"']+", value))


def _grant(key: GatewayKey | None, carrier: str) -> KeyGrant:
    """The grant for a key found by its secret, or AccessDenied saying why it is refused."""
    if key is None:
        where = "X-Gateway-Key" if carrier == ACCESS_HEADER else f"the {carrier} header"
        raise AccessDenied(f"Invalid gateway key in {where}.")
    grant = KeyGrant(key, carrier)  # named on a refusal too: the log shows which key was refused
    if refusal := key_refusal(key):
        raise AccessDenied(refusal, grant)
    if carrier != ACCESS_HEADER and not key.provider_credential:
        raise AccessDenied(f"Gateway key '{key.name}' holds no provider credential: send it in X-Gateway-Key "
                           "and the provider key where the provider key goes.", grant)
    return grant


async def access_identify(headers: list[tuple[str, str]], query: str,
                          provider: Provider) -> AccessKey | KeyGrant | None:
    """The key a request presents (GATEWAY_API_KEYS or the database); None when none is needed; AccessDenied.

    Keys are required once GATEWAY_API_KEYS is set or any gateway key exists (revoked ones
    included: revoking the last key must not open the gateway), unless GATEWAY_ALLOW_UNKEYED.
    A key that is presented is always checked, even where unkeyed traffic is allowed.
    """
    static = access_keys()
    secret, carrier = _presented(headers, query, provider)
    # Asked on every request (cached for a second), GATEWAY_API_KEYS or not: KeyStep.enabled() reads it.
    exist = await _keys_exist()
    if not static and not exist:
        if not secret_like(secret):
            return None  # no keys at all: the gateway is open
        # A gk- secret is looked up even so: the read that said "no keys" may be up to a second old,
        # and a key created since must not pass unlimited through a worker that has not re-read yet.
        key = await _key_find(secret)
        if key is None:
            return None  # nobody's secret here: the gateway is open
        keys_exist_seen()  # this key proves keys exist (KeyStep.enabled() reads it)
        return _grant(key, carrier)
    if not secret:
        if settings.GATEWAY_ALLOW_UNKEYED:
            return None
        raise AccessDenied("This gateway requires an access key: send it in the X-Gateway-Key header.")
    if carrier == ACCESS_HEADER and static:
        match = _static_match(static, secret)
        if match is not None:
            return match
    if not secret_like(secret):
        raise AccessDenied("Invalid gateway key in X-Gateway-Key.")
    return _grant(await _key_find(secret), carrier)
