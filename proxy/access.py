"""Optional gateway access keys: when GATEWAY_API_KEYS is set, proxied calls must present one."""

import hmac
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from logs.redaction.redact import key_fingerprint

ACCESS_HEADER = "x-gateway-key"


class AccessDenied(Exception):
    """The request presents no gateway key, or an unknown one."""


@dataclass(frozen=True)
class AccessKey:
    """One configured gateway key and the name it is logged under."""

    name: str
    secret: str

    @property
    def label(self) -> str:
        """What the log shows instead of the key: its name and fingerprint."""
        return f"{self.name} (fp {key_fingerprint(self.secret)})"

    def headers_label(self, masked: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The logged headers with this key shown by name and fingerprint."""
        return [(k, self.label if k.lower() == ACCESS_HEADER else v) for k, v in masked]


@lru_cache(maxsize=8)
def _keys_parse(entries: tuple[str, ...], secret_key: str) -> tuple[AccessKey, ...]:
    """Parse `name:key` or bare `key` entries; a bare key is named by its fingerprint."""
    keys = []
    for entry in entries:
        entry = entry.strip()
        name, sep, secret = entry.partition(":")
        if not sep:
            name, secret = "", entry
        name, secret = name.strip(), secret.strip()
        if secret:
            keys.append(AccessKey(name or f"key-{key_fingerprint(secret)}", secret))
    return tuple(keys)


def access_keys() -> tuple[AccessKey, ...]:
    """The configured gateway keys (empty when access keys are off)."""
    return _keys_parse(tuple(settings.GATEWAY_API_KEYS), settings.SECRET_KEY)


def access_check(pairs: list[tuple[str, str]]) -> AccessKey | None:
    """The gateway key a request presents; None when access keys are off; AccessDenied if bad."""
    keys = access_keys()
    if not keys:
        return None
    presented = next((v.strip() for k, v in pairs if k.lower() == ACCESS_HEADER), None)
    if not presented:
        raise AccessDenied("This gateway requires an access key: send it in the X-Gateway-Key header.")
    match = None
    for key in keys:  # compare against every key, in constant time each
        if hmac.compare_digest(presented.encode(), key.secret.encode()):
            match = key
    if match is None:
        raise AccessDenied("Invalid gateway access key in X-Gateway-Key.")
    return match
