"""The gateway keys configured in GATEWAY_API_KEYS: keys without limits, each with the name the log shows."""

from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

from logs.redaction.redact import key_fingerprint

ACCESS_HEADER = "x-gateway-key"


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
