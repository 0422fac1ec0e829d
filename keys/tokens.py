"""Gateway key secrets: made once, shown once, kept only as a hash.

A secret is `gk-` and 32 bytes from the OS's CSPRNG (256 bits) in URL-safe base64. With that much
entropy a plain SHA-256 is the right hash: a slow password hash only helps low-entropy secrets,
and this one is computed on every request. It is not keyed with SECRET_KEY, so rotating
SECRET_KEY does not invalidate the keys handed out.
"""

import hashlib
import secrets

SECRET_PREFIX = "gk-"
SECRET_BYTES = 32
# What the admin and `gateway_key list` show to recognise a key: the prefix and 4 characters.
HINT_CHARS = len(SECRET_PREFIX) + 4


def secret_new() -> str:
    """A new gateway key secret."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def secret_hash(secret: str) -> str:
    """The stored form of a secret (hex SHA-256)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def secret_hint(secret: str) -> str:
    """The first characters of a secret, enough to tell keys apart, too few to guess it."""
    return secret[:HINT_CHARS] + "…"


def secret_like(value: str) -> bool:
    """Whether a presented credential has the shape of a gateway key secret."""
    return value.startswith(SECRET_PREFIX)
