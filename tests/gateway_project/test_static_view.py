"""The admin's static files: served by an async view, without Django's sync-iterator warning."""

import warnings
from pathlib import Path

import django
import pytest
from django.test import AsyncClient, Client

ADMIN_CSS = Path(django.__file__).parent / "contrib/admin/static/admin/css/base.css"


@pytest.mark.anyio
async def test_admin_css_served_under_asgi_without_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = await AsyncClient().get("/static/admin/css/base.css")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/css")
    assert r.content == ADMIN_CSS.read_bytes() and r["Last-Modified"]
    assert not [w for w in caught if "synchronous iterators" in str(w.message)]


@pytest.mark.anyio
async def test_app_static_and_js():
    r = await AsyncClient().get("/static/logs/exchange.js")
    assert r.status_code == 200 and "javascript" in r["Content-Type"] and len(r.content) > 0


def test_not_modified_when_the_browser_copy_is_current():
    first = Client().get("/static/logs/admin.css")
    again = Client().get("/static/logs/admin.css", HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    assert first.status_code == 200 and again.status_code == 304 and again.content == b""


@pytest.mark.parametrize("path", ["/static/no/such.css", "/static/", "/static/admin/", "/static/../manage.py",
                                  "/static/%2e%2e/gateway_project/settings.py", "/static/..%2fmanage.py",
                                  "/static//etc/passwd"])
def test_missing_or_escaping_paths_are_404(path):
    r = Client().get(path)
    assert r.status_code == 404 and b"SECRET_KEY" not in r.content and b"root:" not in r.content
