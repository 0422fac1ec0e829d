"""Production settings pass `check --deploy`; admin cookies and CSRF are locked down."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.contrib.auth.models import User

ROOT = Path(__file__).resolve().parents[2]
# Exactly the production settings docs/security.md documents.
PRODUCTION = {
    "DEBUG": "false", "SECURE_COOKIES": "true", "ALLOWED_HOSTS": "gateway.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://gateway.example.com", "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "SECURE_HSTS_PRELOAD": "true", "SECURE_SSL_REDIRECT": "true",
    "TRUST_X_FORWARDED_PROTO": "true",
}


def _check_deploy(tmp_path, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "SECRET_KEY"}
    env.update({"DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "gateway_project.settings", **extra})
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_documented_production_settings_pass_check_deploy(tmp_path):
    done = _check_deploy(tmp_path, {**PRODUCTION, "SECRET_KEY": secrets.token_urlsafe(50)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_check_deploy_flags_development_defaults(tmp_path):
    done = _check_deploy(tmp_path, {})
    assert done.returncode != 0
    for check in ("security.W004", "security.W008", "security.W016"):
        assert check in done.stderr + done.stdout


@pytest.mark.django_db(transaction=True)
def test_admin_needs_staff_login_and_cookies_are_locked(gateway):
    anon = httpx.get(f"{gateway.url}/admin/")
    assert anon.status_code == 302 and "/admin/login/" in anon.headers["location"]
    page = httpx.get(f"{gateway.url}/admin/login/")
    csrf_cookie = page.headers["set-cookie"]
    assert "HttpOnly" in csrf_cookie and "SameSite=Lax" in csrf_cookie and "Secure" not in csrf_cookie
    # CSRF stays on: a login post without the token is refused.
    User.objects.create_user("ops", password="pw-for-tests-only", is_staff=True)
    no_token = httpx.post(f"{gateway.url}/admin/login/", data={"username": "ops", "password": "pw-for-tests-only"})
    assert no_token.status_code == 403
    with httpx.Client(base_url=gateway.url) as c:
        c.get("/admin/login/")
        token = c.cookies["csrftoken"]
        r = c.post("/admin/login/?next=/admin/", data={"username": "ops", "password": "pw-for-tests-only",
                                                       "csrfmiddlewaretoken": token, "next": "/admin/"})
        assert r.status_code == 302
        session_cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and "sessionid" in v)
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
        assert c.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_health_answers_plain_http_probes_when_the_admin_redirects_to_https(settings):
    from django.test import Client

    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["gateway.example.com"]
    probe = Client(HTTP_HOST="gateway.example.com")
    assert probe.get("/admin/login/").status_code == 301  # the admin goes to HTTPS...
    health = probe.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"  # ...a load balancer's probe does not


@pytest.mark.django_db
def test_a_host_outside_allowed_hosts_is_one_warning_line_not_a_traceback(settings, caplog):
    """Every scanner naming the server's address got a 400 and printed twenty lines of traceback."""
    from django.test import Client

    settings.ALLOWED_HOSTS = ["gateway.example.com"]
    with caplog.at_level("WARNING", logger="django.security"):
        assert Client(HTTP_HOST="203.0.113.7").get("/health").status_code == 400
    [record] = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert "Invalid HTTP_HOST header: '203.0.113.7'" in record.getMessage()
    assert record.levelname == "WARNING" and record.exc_info is None and not record.exc_text
