"""A limited key's verdict (keys/limits.py) when what a worker last read of its usage is out of date."""

import asyncio
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from keys import selectors
from keys.limits import limits_apply
from keys.selectors import KeyUsage
from tests.keys.test_selectors import _exchange

pytestmark = pytest.mark.django_db(transaction=True)  # the verdict reads the log in the keys' reader threads


def _read_a_moment_ago(key, tokens: int) -> None:
    """What a worker read of the key's tokens within the last second (it trusts that for USAGE_TTL)."""
    selectors._usage[key.pk] = (time.monotonic(), KeyUsage(tokens, Decimal(0)))


def test_a_tokens_refusal_says_when_the_window_really_frees(make_key):
    """The refusal's Retry-After came from the count read up to a second before, while answers logged since
    were in the window too: over by 1 as last read, the worker said "Retry in 31 s", and a client back then
    was refused again for half a minute. The count it names was the stale one as well."""
    key, _ = make_key("stale-low", tpm=100)
    now = datetime.now(timezone.utc)
    _exchange(key, started=now - timedelta(seconds=31), ended=now - timedelta(seconds=30), tokens=100)
    _read_a_moment_ago(key, 100)  # at the limit: refused
    _exchange(key, started=now - timedelta(seconds=2), ended=now - timedelta(seconds=1), tokens=150)  # logged since
    verdict = asyncio.run(limits_apply(key))
    assert verdict.refusal and "(250 in the last minute)" in verdict.refusal
    # Under 100 only once both answers have left: the newer one leaves 60-61 s after the second it ended in.
    assert 57 <= verdict.retry_after <= 61
    assert dict(verdict.headers())["RateLimit"] == f'"tokens";r=0;t={verdict.retry_after}'


def test_tokens_that_left_the_window_since_the_last_read_do_not_refuse(make_key):
    """Read a moment ago at the limit, the tokens have left the window since: the key was refused
    ("Retry in 60 s") with nothing in the window."""
    key, _ = make_key("stale-high", tpm=100)
    _read_a_moment_ago(key, 100)  # the log holds nothing for it now (those answers left the window)
    verdict = asyncio.run(limits_apply(key))
    assert not verdict.refusal and verdict.retry_after is None
    assert dict(verdict.headers())["RateLimit"] == '"tokens";r=100;t=0'
