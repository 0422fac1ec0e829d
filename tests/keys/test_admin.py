"""The keys admin: a secret shown once and stored as a hash, the list with this period's use, a key's page."""

import html
import io
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import call_command

from keys.models import GatewayKey
from keys.tokens import secret_hash
from logs.models import Request
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db
LIST = "/admin/keys/gatewaykey/"


def test_create_in_the_admin_shows_the_secret_once(admin_client):
    r = admin_client.post(f"{LIST}add/", {
        "name": "team-x", "active": "on", "allowed_providers": "openai", "allowed_models": "",
        "rpm": "60", "tpm": "", "budget_usd": "12.345678", "budget_period": "week",
        "new_provider_credential": "sk-" + "admin" + "0123456789abcdefghijk"})
    assert r.status_code == 200 and "no-store" in r["Cache-Control"]
    page = r.content.decode()
    secret = page.split('id="gateway-key-secret" type="text" readonly value="')[1].split('"')[0]
    assert secret.startswith("gk-") and len(secret) >= 3 + 22  # 128 bits in base64 at least
    key = GatewayKey.objects.get(name="team-x")
    assert key.secret_hash == secret_hash(secret) and key.allowed_providers == ["openai"]
    assert key.budget_usd == Decimal("12.345678") and key.budget_period == "week" and key.rpm == 60
    assert key.provider_credential and "sk-admin" not in key.provider_credential  # encrypted
    follow = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert secret not in follow and "sk-admin" not in follow and key.secret_hint in admin_client.get(LIST).content.decode()


def test_a_stored_credential_needs_its_one_provider(admin_client):
    # Sent to whichever provider a client pointed its SDK at, an OpenAI key went to Anthropic and Google.
    for providers in ("", "openai, anthropic"):
        r = admin_client.post(f"{LIST}add/", {"name": "cred", "active": "on", "allowed_providers": providers,
                                              "budget_period": "month", "new_provider_credential": "sk-x0123456789"})
        assert r.status_code == 200 and "must allow exactly one provider" in r.content.decode()
    assert not GatewayKey.objects.filter(name="cred").exists()


def test_bad_limits_are_refused_with_the_field_named(admin_client):
    r = admin_client.post(f"{LIST}add/", {"name": "bad", "active": "on", "allowed_providers": "openia",
                                          "budget_period": "month"})
    assert r.status_code == 200 and "unknown provider openia" in r.content.decode()
    assert not GatewayKey.objects.filter(name="bad").exists()


def test_a_model_with_a_comma_is_allowed_by_the_form_and_the_command_and_kept_when_saved_again(admin_client):
    """The form and the command split the models on commas, and the form showed the list bare: "org/model,v2" could
    not be allowed, and a key holding it, saved again unchanged, allowed "org/model" and "v2" instead."""
    r = admin_client.post(f"{LIST}add/", {"name": "commas", "active": "on", "budget_period": "month",
                                          "allowed_models": "org/model\\,v2, gpt-4o"})
    assert r.status_code == 200
    key = GatewayKey.objects.get(name="commas")
    assert key.allowed_models == ["org/model,v2", "gpt-4o"]
    page = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    shown = html.unescape(re.search(r'name="allowed_models" value="([^"]*)"', page).group(1))
    assert shown == "org/model\\,v2, gpt-4o"
    r = admin_client.post(f"{LIST}{key.pk}/change/", {"name": "commas", "active": "on", "budget_period": "month",
                                                       "allowed_models": shown})
    assert r.status_code == 302
    key.refresh_from_db()
    assert key.allowed_models == ["org/model,v2", "gpt-4o"]
    out = io.StringIO()
    call_command("gateway_key", "create", "cli-commas", "--models", "org/model\\,v2,o4-mini", stdout=out)
    assert GatewayKey.objects.get(name="cli-commas").allowed_models == ["org/model,v2", "o4-mini"]
    assert "models org/model\\,v2,o4-mini" in out.getvalue()


@pytest.mark.parametrize("fields, message", [
    ({"budget_usd": "-1"}, "budget must be more than 0 USD"),  # the command refused it; the admin took it
    ({"name": "tab\there"}, "may not hold control characters"),
    ({"allowed_models": "claude-*"}, "a key&#x27;s models are exact names"),
])
def test_the_admin_refuses_what_the_command_refuses(admin_client, fields, message):
    r = admin_client.post(f"{LIST}add/", {"name": "bad", "active": "on", "budget_period": "month", **fields})
    assert r.status_code == 200 and message in r.content.decode()
    assert not GatewayKey.objects.exists()


def test_list_and_page_show_this_period_use(admin_client, make_key):
    key, _ = make_key("spender", budget_usd=Decimal("1"), budget_period="total")
    for cost in ("0.25", "0.125"):
        exchange_make(gateway_key=key.label, tokens=(10, 5), cost_usd=Decimal(cost))
    exchange_make(gateway_key="someone else (fp 000000000000)", cost_usd=Decimal("5"))
    page = admin_client.get(LIST).content.decode()
    assert "$0.375000" in page and "$0.625000" in page  # spent, remaining
    assert f"?gateway_key={key.label.replace(' ', '+').replace('(', '%28').replace(')', '%29')}" in page
    detail = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert "2 requests" in detail and "Requests per day" in detail and "<svg" in detail
    assert Request.objects.filter(gateway_key=key.label).count() == 2


def test_a_small_spend_shows_every_place_it_is_kept_with(admin_client, make_key, capsys):
    # Costs and budgets keep 8 decimal places: a cheap key's spend is not shown as $0.000000.
    key, _ = make_key("cheap", budget_usd=Decimal("0.00001"), budget_period="total")
    exchange_make(gateway_key=key.label, tokens=(3, 1), cost_usd=Decimal("0.00000123"))
    page = admin_client.get(LIST).content.decode()
    assert "$0.00000123" in page and "$0.00000877" in page  # spent, remaining
    # The key's page rounded to 6 places: "$0.000001 spent, $0.000009 of the budget left".
    detail = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert "In total: 1 request,\n    $0.00000123 spent, $0.00000877 of the budget left." in detail
    assert "<td>$0.00000123</td>" in detail  # the day's row
    call_command("gateway_key", "list")
    assert "1 request, $0.00000123 in total" in capsys.readouterr().out


def test_revoke_action(admin_client, make_key):
    key, _ = make_key("to-revoke")
    admin_client.post(LIST, {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert not key.active and key.revoked_at is not None


def test_exchange_list_filters_by_the_rate_limited_outcome(admin_client):
    exchange_make(status=429, outcome="rate_limited", gateway_key="k (fp 1)")
    exchange_make(status=429)
    page = admin_client.get("/admin/logs/request/?status=rate_limited").content.decode()
    assert page.count("rate_limited") >= 1 and "rate limited (gateway key)" in page
    page4 = admin_client.get("/admin/logs/request/?status=4xx")
    assert page4.status_code == 200


def test_an_impossible_date_in_the_keys_list_is_no_500(admin_client):
    assert admin_client.get(f"{LIST}?created_at__year=99999").status_code == 400
    assert admin_client.get(f"{LIST}?active__exact=1").status_code == 200  # the list's own filters work


def test_a_user_who_may_only_view_keys_cannot_revoke_them(client, admin_client):
    from django.contrib.auth.models import Permission, User

    from keys.models import GatewayKey

    admin_client.post(f"{LIST}add/", {"name": "team", "budget_period": "month", "active": "on"})
    key = GatewayKey.objects.get(name="team")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_gatewaykey"))
    client.force_login(viewer)
    assert "revoke" not in client.get(LIST).content.decode()  # the action is not offered
    client.post(LIST, {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.active  # nor carried out


def test_the_requests_of_this_period_link_to_this_periods_exchanges(admin_client, make_key):
    # The list counted this month's requests but linked to every exchange the key ever made.
    key, _ = make_key("monthly", budget_usd=Decimal("10"), budget_period="month")
    now = datetime.now(timezone.utc)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    before = exchange_make(gateway_key=key.label, when=month - timedelta(minutes=1), cost_usd=Decimal("1"))
    during = exchange_make(gateway_key=key.label, when=max(month, now - timedelta(minutes=1)), cost_usd=Decimal("2"))
    page = admin_client.get(LIST).content.decode()
    link = re.search(r'<td class="field-requests_this_period"><a href="([^"]+)">1</a>', page)
    assert link, "this month's one request, linked"
    listed = admin_client.get(html.unescape(link.group(1))).content.decode()
    assert str(during.pk) in listed and str(before.pk) not in listed


def test_a_keys_page_says_how_many_exchanges_its_spend_leaves_out(admin_client, make_key):
    # A key streaming without usage, or calling a model without a price, spent more than its page said, and nothing
    # there said so: those exchanges count nothing against a budget (docs/keys.md).
    key, _ = make_key("streamer", budget_usd=Decimal("1"), budget_period="total")
    exchange_make(gateway_key=key.label, tokens=(10, 5), cost_usd=Decimal("0.25"))
    lost = [exchange_make(gateway_key=key.label, stream=True), exchange_make(gateway_key=key.label, model="mine",
                                                                            tokens=(3, 3))]
    detail = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert "$0.250000 spent, $0.750000 of the budget left" in detail
    found = re.search(r'\(not counting <a href="([^"]+)">2 exchanges without a known cost</a>', detail)
    assert found
    listed = admin_client.get(html.unescape(found.group(1))).content.decode()
    assert all(str(x.pk) in listed for x in lost) and listed.count('name="_selected_action"') == 2


def test_a_day_without_a_priced_exchange_has_no_known_spend_on_the_keys_page(admin_client, make_key):
    # A day of an unpriced model's calls read "0.000000" in the key's table of days, as if they had been free.
    key, _ = make_key("private", budget_usd=Decimal("1"), budget_period="total")
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    exchange_make(gateway_key=key.label, when=yesterday, model="mine", tokens=(3, 3))
    exchange_make(gateway_key=key.label, tokens=(10, 5), cost_usd=Decimal("0.25"))
    detail = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert f"<tr><td>{yesterday:%Y-%m-%d}</td><td>1</td><td>6</td><td>–</td></tr>" in detail
    assert "<td>15</td><td>$0.250000</td></tr>" in detail


def test_the_keys_list_and_page_say_the_spend_of_exchanges_pruned_from_the_log(admin_client, make_key):
    """After prune_logs the budget still counts the deleted exchanges' spend: the list and the page showed
    "0 requests", "$3 spent" and "last used: never" side by side, with nothing saying why."""
    key, _ = make_key("pruned", budget_usd=Decimal("10"), budget_period="total")
    then = datetime.now(timezone.utc) - timedelta(days=3)
    for _ in range(2):
        exchange_make(gateway_key=key.label, when=then, cost_usd=Decimal("1.5"))
    call_command("prune_logs", "--older-than", "1d", stdout=__import__("io").StringIO())
    note = "$3.000000 of it by exchanges deleted from the log (prune_logs), not among the requests"
    page = admin_client.get(LIST).content.decode()
    assert f"$3.000000 ({note})" in page and f"{then:%Y-%m-%d} (its exchanges since deleted from the log)" in page
    detail = admin_client.get(f"{LIST}{key.pk}/change/").content.decode()
    assert f"In total: 0 requests,\n    $3.000000 spent ({note}), $7.000000 of the budget left" in detail
    assert f"Last used: {then:%Y-%m-%d} (its exchanges since deleted from the log)." in detail


def test_the_keys_list_reads_each_keys_use_in_queries_that_do_not_grow_with_the_keys(admin_client, make_key):
    """Each row read its key's use alone, five queries a key: a page of 50 keys ran 250. Each row's figures stay its
    own, whatever its budget period."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def page_queries() -> tuple[int, str]:
        with CaptureQueriesContext(connection) as ctx:
            page = admin_client.get(LIST).content.decode()
        return len(ctx), page

    periods = ["day", "week", "month", "total"]
    for i in range(4):
        key, _ = make_key(f"k{i}", budget_period=periods[i])
        exchange_make(gateway_key=key.label, cost_usd=Decimal("0.5") * (i + 1))
    few, _ = page_queries()
    for i in range(4, 24):
        key, _ = make_key(f"k{i}", budget_period=periods[i % 4])
        for _ in range(i % 3):
            exchange_make(gateway_key=key.label, cost_usd=Decimal("0.25"))
    many, page = page_queries()
    assert many == few
    rows = {m[0]: m[1] for m in re.findall(r'<th class="field-name"><a [^>]*>(k\d+)</a></th>(.*?)</tr>', page, re.S)}
    assert len(rows) == 24
    assert ">2</a>" in rows["k5"] and "$0.500000" in rows["k5"] and ">0</a>" in rows["k6"] and "never" in rows["k6"]
    assert ">1</a>" in rows["k3"] and "$2.000000" in rows["k3"]
