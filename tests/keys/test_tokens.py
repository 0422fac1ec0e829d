"""Secrets: gk- and 256 random bits, kept as a SHA-256 hash; provider credentials encrypted with SECRET_KEY."""

import base64

import pytest

from keys.crypto import CredentialUnreadable, credential_decrypt, credential_encrypt
from keys.tokens import secret_hash, secret_hint, secret_like, secret_new


def test_secrets_carry_at_least_128_random_bits():
    secrets = {secret_new() for _ in range(200)}
    assert len(secrets) == 200
    for secret in secrets:
        assert secret.startswith("gk-") and secret_like(secret)
        raw = base64.urlsafe_b64decode(secret[3:] + "=" * (-len(secret[3:]) % 4))
        assert len(raw) * 8 >= 128


def test_hash_and_hint_do_not_reveal_the_secret():
    secret = secret_new()
    assert secret_hash(secret) == secret_hash(secret) and len(secret_hash(secret)) == 64
    assert secret[8:] not in secret_hash(secret) and secret_hint(secret) == secret[:7] + "…"


def test_credentials_round_trip_and_need_the_same_secret_key(settings):
    token = credential_encrypt("sk-provider-123")
    assert "sk-provider" not in token and credential_decrypt(token) == "sk-provider-123"
    settings.SECRET_KEY = "another-secret-key"
    with pytest.raises(CredentialUnreadable, match="SECRET_KEY changed"):
        credential_decrypt(token)
