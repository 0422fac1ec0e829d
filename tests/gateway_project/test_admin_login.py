"""Admin login is throttled by username and by client address, through the real ASGI stack.

The live gateway runs under uvicorn, which trusts X-Forwarded-For from 127.0.0.1 by default
(--forwarded-allow-ips): these tests stand for a reverse proxy on the same host, and each
X-Forwarded-For is the client address that proxy saw.
"""

import os
import subprocess
import sys
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from tests.conftest import LiveGateway
from tests.procs import ROOT

PASSWORD = "pw-for-tests-only"
LOCKED = "Too many failed logins"


def _users(settings) -> None:
    """Two staff users (fast hashing: only the login flow is under test)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    for name in ("ops", "dev"):
        User.objects.create_user(name, password=PASSWORD, is_staff=True)


@pytest.fixture
def admins(gateway, settings):
    """The live gateway with two staff users."""
    _users(settings)
    return gateway


@pytest.fixture
def direct(upstream, transactional_db, log_flush, settings, monkeypatch):
    """A live gateway that trusts no proxy's X-Forwarded-For (its proxy is elsewhere), with two staff users."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "192.0.2.1")
    _users(settings)
    live = LiveGateway()
    yield live
    log_flush()
    live.stop()


def _login(gateway, username: str, password: str, forwarded_for: str | None = None) -> httpx.Response:
    """One login through the form, CSRF token and all, as a browser would post it."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(base_url=gateway.url, headers=headers) as c:
        c.get("/admin/login/")
        return c.post("/admin/login/?next=/admin/", data={
            "username": username, "password": password, "csrfmiddlewaretoken": c.cookies["csrftoken"],
            "next": "/admin/"})


def _logged_in(r: httpx.Response) -> bool:
    return r.status_code == 302 and r.headers["location"] == "/admin/"


def _refused_as_locked(r: httpx.Response) -> bool:
    return r.status_code == 429 and LOCKED in r.text and "15 minutes" in r.text


def _cool_off_passes(minutes: int = 15) -> None:
    """Time travel: every failure recorded so far happened a cool-off (and a second) ago."""
    from axes.models import AccessAttempt

    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= timedelta(minutes=minutes, seconds=1)
        attempt.save(update_fields=["attempt_time"])


def test_wrong_passwords_for_a_user_lock_that_user_from_any_address(admins):
    for i in range(5):  # each failure from another address: the username alone counts
        r = _login(admins, "ops", "wrong", forwarded_for=f"203.0.113.{i + 1}")
        assert r.status_code in (200, 429) and not _logged_in(r)
    assert _refused_as_locked(_login(admins, "ops", PASSWORD, forwarded_for="198.51.100.9"))  # right password
    assert _logged_in(_login(admins, "dev", PASSWORD, forwarded_for="198.51.100.9"))  # others are not locked
    _cool_off_passes()
    assert _logged_in(_login(admins, "ops", PASSWORD, forwarded_for="198.51.100.9"))


def test_wrong_passwords_from_an_address_lock_that_address_for_any_user(admins):
    for i in range(5):  # a different username each time: the address alone counts
        _login(admins, f"guess{i}", "wrong", forwarded_for="203.0.113.7")
    assert _refused_as_locked(_login(admins, "ops", PASSWORD, forwarded_for="203.0.113.7"))
    assert _logged_in(_login(admins, "ops", PASSWORD, forwarded_for="203.0.113.8"))
    _cool_off_passes()
    assert _logged_in(_login(admins, "dev", PASSWORD, forwarded_for="203.0.113.7"))


def test_an_administrator_unlocks_a_username(admins):
    from axes.models import AccessAttempt

    for _ in range(5):
        _login(admins, "ops", "Tr0ub4dor-typo", forwarded_for="203.0.113.40")
    post_data = "".join(AccessAttempt.objects.values_list("post_data", flat=True))
    assert "password=" in post_data and "Tr0ub4dor" not in post_data  # failures are kept, passwords are not
    assert _refused_as_locked(_login(admins, "ops", PASSWORD, forwarded_for="203.0.113.41"))
    call_command("axes_reset_username", "ops")
    assert _logged_in(_login(admins, "ops", PASSWORD, forwarded_for="203.0.113.41"))


def test_four_failures_do_not_lock(admins):
    for _ in range(4):
        assert _login(admins, "ops", "wrong").status_code == 200
    assert _logged_in(_login(admins, "ops", PASSWORD))


def test_many_wrong_passwords_then_the_right_one_is_refused(admins):
    for _ in range(40):  # issue 13: 40 wrong passwords in 25 s, then the right one logged in
        _login(admins, "ops", "wrong")
    assert _refused_as_locked(_login(admins, "ops", PASSWORD))


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(direct):
    for i in range(5):  # a client rotating a forged X-Forwarded-For is still one address
        _login(direct, f"guess{i}", "wrong", forwarded_for=f"203.0.113.{i + 1}")
    assert _refused_as_locked(_login(direct, "dev", PASSWORD, forwarded_for="198.51.100.1"))


def test_behind_a_proxy_the_address_it_saw_counts_not_what_the_client_forged(admins):
    for i in range(5):  # the proxy appends the address it saw; the client forged the entries before it
        _login(admins, f"guess{i}", "wrong", forwarded_for=f"10.9.9.{i}, 203.0.113.30")
    assert _refused_as_locked(_login(admins, "dev", PASSWORD, forwarded_for="10.1.1.1, 203.0.113.30"))


def test_limit_and_cool_off_are_read_from_the_environment(tmp_path):
    env = {"PATH": os.environ.get("PATH", ""), "DATA_DIR": str(tmp_path), "ADMIN_LOGIN_FAILURE_LIMIT": "3",
           "ADMIN_LOGIN_COOLOFF_MINUTES": "1"}
    code = ("import gateway_project.settings as s; "
            "print(s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME.total_seconds(), s.AXES_COOLOFF_MESSAGE)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.startswith("3 60.0 Too many failed logins") and "Try again in 1 minute " in done.stdout
