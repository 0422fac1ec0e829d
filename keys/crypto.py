"""Provider credentials stored in a gateway key: encrypted at rest with a key derived from SECRET_KEY.

Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) with its key derived by HKDF-SHA256 from
SECRET_KEY and a fixed context, so the database alone never reveals a provider key. Changing
SECRET_KEY makes stored credentials unreadable: the gateway then refuses those keys' requests
with a message saying so, and an administrator sets the credential again.
"""

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

_CONTEXT = b"gateway-keys/provider-credential/v1"


class CredentialUnreadable(Exception):
    """The stored credential cannot be decrypted (SECRET_KEY changed since it was stored)."""


@functools.lru_cache(maxsize=4)
def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def credential_encrypt(plain: str) -> str:
    """The stored form of a provider credential."""
    return _fernet(settings.SECRET_KEY).encrypt(plain.encode()).decode()


def credential_decrypt(token: str) -> str:
    """The provider credential back; CredentialUnreadable when SECRET_KEY no longer opens it."""
    try:
        return _fernet(settings.SECRET_KEY).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise CredentialUnreadable("the provider credential stored in this gateway key cannot be decrypted "
                                   "(SECRET_KEY changed?); set it again") from None
