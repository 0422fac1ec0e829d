"""End to end: replay a logged exchange from the admin, with an edited body, through a live gateway."""

import json
import re

import httpx
import openai
import pytest
from django.contrib.auth.models import User

from logs.models import Request

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "e2eTESTkey0123456789abcdREPLAY"  # fake; split so no key-like literal


def _csrf(page: httpx.Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


@pytest.fixture
def admin_http(gateway):
    """An HTTP client logged in to the live gateway's admin, as a browser would be."""
    User.objects.create_superuser("admin", "admin@example.com", "correct horse")
    client = httpx.Client(base_url=gateway.url, timeout=30)
    login = client.get("/admin/login/")
    r = client.post("/admin/login/", data={"username": "admin", "password": "correct horse",
                                           "csrfmiddlewaretoken": _csrf(login), "next": "/admin/"})
    assert r.status_code == 302
    yield client
    client.close()


def test_replay_with_edited_body_is_a_new_linked_exchange(gateway, upstream, log_flush, admin_http):
    sdk = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                        default_headers={"X-Gateway-User": "erin"})
    raw = sdk.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                        messages=[{"role": "user", "content": "first try"}])
    original = raw.headers["x-gateway-request-id"]
    log_flush()

    form = admin_http.get(f"/admin/logs/request/{original}/replay/")
    assert form.status_code == 200 and "first try" in form.text and KEY not in form.text
    edited = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "second try"}]})
    r = admin_http.post(f"/admin/logs/request/{original}/replay/",
                        data={"csrfmiddlewaretoken": _csrf(form), "body": edited, "provider_key": KEY})
    assert r.status_code == 200 and "The gateway answered 200" in r.text
    new_id = re.search(r"Logged as a new exchange: <a href=\"[^\"]+\"><code>([0-9a-f]{32})</code>", r.text).group(1)

    sent = upstream.received[-1]
    assert sent.header("authorization") == f"Bearer {KEY}" and json.loads(sent.body)["messages"][0]["content"] == "second try"
    assert sent.header("x-gateway-meta-replay-of") is None and sent.header("x-gateway-user") is None
    log_flush()
    replay = Request.objects.get(pk=new_id)
    assert replay.metadata == {"replay-of": original} and replay.end_user == "erin"
    assert json.loads(replay.body)["messages"][0]["content"] == "second try"
    assert KEY not in json.dumps(replay.headers)  # the supplied key is logged masked, like any other


def test_replay_needs_a_credential_and_a_superuser(gateway, log_flush, admin_http):
    sdk = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    original = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]).headers["x-gateway-request-id"]
    log_flush()
    form = admin_http.get(f"/admin/logs/request/{original}/replay/")
    r = admin_http.post(f"/admin/logs/request/{original}/replay/", data={"csrfmiddlewaretoken": _csrf(form), "body": "{}"})
    assert "The log keeps no credential" in r.text and Request.objects.count() == 1

    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    from django.contrib.auth.models import Permission
    viewer.user_permissions.add(Permission.objects.get(codename="view_request"))
    with httpx.Client(base_url=gateway.url) as client:
        login = client.get("/admin/login/")
        client.post("/admin/login/", data={"username": "viewer", "password": "pw",
                                           "csrfmiddlewaretoken": _csrf(login), "next": "/admin/"})
        assert client.get(f"/admin/logs/request/{original}/replay/").status_code == 403
