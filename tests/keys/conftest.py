"""Fixtures for gateway keys: a clean slate of the per-process caches, and a key factory."""

import pytest

from keys.selectors import caches_clear
from keys.services import KeyLimits, key_create
from tests.sqlite_writes import locked_retry


@pytest.fixture(autouse=True)
def key_caches():
    """Each test starts with nothing cached (keys, usage, whether keys exist)."""
    caches_clear()
    yield
    caches_clear()


@pytest.fixture
def make_key(db):
    """make_key(name, **limits) -> (GatewayKey, secret)."""
    def make(name: str = "team-a", *, credential: str = "", **limits):
        # Retried on "table is locked": a test may make a key while its in-process gateway reads keys.
        key, secret = locked_retry(key_create, name=name, limits=KeyLimits(**limits), provider_credential=credential)
        caches_clear()  # the gateway sees the new key at once (in production: within a second)
        return key, secret
    return make
