"""manage.py gateway_key create|list|revoke, as a script uses it."""

import io
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from keys.crypto import credential_decrypt
from keys.models import GatewayKey
from keys.tokens import secret_hash

pytestmark = pytest.mark.django_db


def _run(*args, stdin: str = "") -> str:
    out = io.StringIO()
    old = __import__("sys").stdin
    __import__("sys").stdin = io.StringIO(stdin)
    try:
        call_command("gateway_key", *args, stdout=out)
    finally:
        __import__("sys").stdin = old
    return out.getvalue()


def test_create_prints_the_secret_alone_on_the_last_line():
    out = _run("create", "ci-bot", "--rpm", "30", "--tpm", "10000", "--budget-usd", "25.123456",
               "--providers", "openai,anthropic", "--models", "gpt-4o-mini", "--expires", "2027-01-01")
    secret = out.rstrip("\n").splitlines()[-1]
    assert secret.startswith("gk-") and secret.strip() == secret and " " not in secret
    key = GatewayKey.objects.get(name="ci-bot")
    assert key.secret_hash == secret_hash(secret) and secret not in str(key.__dict__)
    assert (key.rpm, key.tpm, key.budget_usd, key.budget_period) == (30, 10000, Decimal("25.123456"), "month")
    assert key.allowed_providers == ["openai", "anthropic"] and key.allowed_models == ["gpt-4o-mini"]
    assert key.expires_at == datetime(2027, 1, 1, tzinfo=timezone.utc)


def test_create_can_hold_a_provider_credential_from_stdin():
    with pytest.raises(CommandError, match="must allow exactly one provider"):  # which one it is for
        _run("create", "wrapped", "--provider-credential-stdin", stdin="sk-from-stdin-0123456789\n")
    _run("create", "wrapped", "--providers", "openai", "--provider-credential-stdin",
         stdin="sk-from-stdin-0123456789\n")
    key = GatewayKey.objects.get(name="wrapped")
    assert "sk-from-stdin" not in key.provider_credential
    assert credential_decrypt(key.provider_credential) == "sk-from-stdin-0123456789"


@pytest.mark.parametrize("args, message", [
    (["--rpm", "0"], "rpm must be at least 1, not 0"),
    (["--budget-usd", "ten"], "budget must be a number of USD"),
    (["--budget-usd", "0.000000001"], "more than 8 decimal places"),
    (["--budget-usd", "1e30"], "budget must be less than 10,000,000 USD"),
    # SQLite keeps a decimal as a double: 9999999999.99999999 came back as 1e10 and every read of the key failed.
    (["--budget-usd", "9999999999.99999999"], "budget must be less than 10,000,000 USD"),
    (["--budget-usd", "0"], "budget must be more than 0 USD, not 0: to stop a key, revoke it"),
    (["--budget-usd", "-1"], "budget must be more than 0 USD"),
    (["--providers", "opnai"], "unknown provider opnai"),
    # `--models "$MODELS"` with MODELS unset made a key for every model, the opposite of what was meant.
    (["--models", ""], "--models names nothing"), (["--providers", " , "], "--providers names nothing"),
    (["--expires", "next year"], "--expires must be a date"),
    (["--expires", "2020-01-01"], "--expires is not in the future: 2020-01-01"),
    (["--budget-period", "day"], "--budget-period goes with --budget-usd"),  # was a period limiting nothing
    # Taken, as a name no model has: MODEL_POLICY_ALLOW's wildcard made a key that refused every request.
    (["--models", "gpt-4o-mini,gpt-4o*"], "'gpt-4o\\*' has a \\*: a key's models are exact names"),
])
def test_bad_values_are_named(args, message):
    with pytest.raises(CommandError, match=message):
        _run("create", "bad", *args)
    assert not GatewayKey.objects.exists()


def test_list_and_revoke():
    _run("create", "a", "--budget-usd", "5", "--budget-period", "day")
    _run("create", "b")
    listed = _run("list")
    assert "a\tgk-" in listed and "$5.000000 per day" in listed and "0 requests, $0.000000 this day" in listed
    _run("create", "c", "--budget-usd", "7", "--budget-period", "total")
    assert "$7.000000 in total\t0 requests, $0.000000 in total\t" in _run("list")  # it said "this total"
    assert "revoked gateway key 'b'" in _run("revoke", "  b ")  # trimmed, as create trims it
    assert "revoked" in _run("list").splitlines()[1]
    with pytest.raises(CommandError, match="no gateway key named 'zz'"):
        _run("revoke", "zz")
    with pytest.raises(CommandError, match="already exists"):
        _run("create", "a")


def test_list_after_prune_logs_says_the_spend_of_deleted_exchanges_and_when_they_were():
    """prune_logs keeps a key's spend for its budget but deletes its rows: the list read "0 requests, $3 in total,
    last used never", a key that had spent $3 without ever being used."""
    from datetime import timedelta

    from tests.logs.factory import exchange_make

    call_command("gateway_key", "create", "ci", "--budget-usd", "10", "--budget-period", "total", stdout=io.StringIO())
    key = GatewayKey.objects.get(name="ci")
    then = datetime.now(timezone.utc) - timedelta(days=3)
    for _ in range(2):
        exchange_make(when=then, gateway_key=key.label, cost_usd=Decimal("1.5"))
    assert "2 requests, $3.000000 in total\tlast used " + then.strftime("%Y-%m-%d %H:%M") in _run("list")
    call_command("prune_logs", "--older-than", "1d", stdout=io.StringIO())
    listed = _run("list")
    assert ("0 requests, $3.000000 in total ($3.000000 of it by exchanges deleted from the log (prune_logs), not "
            f"among the requests)\tlast used {then:%Y-%m-%d} (its exchanges since deleted from the log)") in listed


def test_revoking_a_revoked_key_says_when_it_was_revoked():
    """A second revoke (a script run twice) said "revoked ...: refused within a second" again; it still succeeds."""
    _run("create", "twice")
    assert "revoked gateway key 'twice'" in _run("revoke", "twice")
    revoked_at = GatewayKey.objects.get(name="twice").revoked_at
    assert _run("revoke", "twice") == f"gateway key 'twice' was already revoked, on {revoked_at:%Y-%m-%d %H:%M} UTC\n"
    assert GatewayKey.objects.get(name="twice").revoked_at == revoked_at


def test_a_name_with_control_characters_is_refused():
    with pytest.raises(CommandError, match="control characters"):  # a tab broke `list`'s columns
        _run("create", "team\tb")


def test_no_key_is_created_when_its_secret_cannot_be_written(tmp_path, tmp_path_factory):
    # `create ... | head -1` closed the output before the secret's line: the key existed, its secret nowhere.
    import os
    import subprocess
    import sys

    from tests.procs import ROOT, db_rows, migrated_copy, proc_env

    db = migrated_copy(tmp_path / "data", tmp_path_factory)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    done = subprocess.run([sys.executable, "manage.py", "gateway_key", "create", "lost"], cwd=ROOT,
                          env=proc_env(tmp_path / "data", "http://127.0.0.1:9"), stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert done.returncode != 0 and "no key was created" in done.stderr and "Traceback" not in done.stderr
    assert db_rows(db, "SELECT count(*) FROM gateway_keys") == [(0,)]


def test_the_largest_budget_with_its_8_decimals_comes_back_exactly():
    _run("create", "big", "--budget-usd", "9999999.99999999")
    assert GatewayKey.objects.get(name="big").budget_usd == Decimal("9999999.99999999")
    assert "$9999999.99999999 per month" in _run("list")
