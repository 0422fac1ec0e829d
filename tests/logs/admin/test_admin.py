"""The log browser in the admin, driven with Django's test client."""

import csv
import io
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html import unescape
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from logs.models import BinaryFile, Request, Response
from logs.outcomes import Outcome
from tests.logs.factory import PNG, WAV, exchange_make, file_attach, stored, streamed_chat

pytestmark = pytest.mark.django_db
LIST = "/admin/logs/request/"


def _ids(response) -> list[str]:
    """Request ids linked from a changelist page, in page order."""
    found = re.findall(r'href="/admin/logs/request/([0-9a-f-]{32,36})/change/', response.content.decode())
    return [f.replace("-", "") for f in found]


def _detail(client, req: Request) -> str:
    """The exchange page's HTML."""
    r = client.get(f"{LIST}{req.pk.hex}/change/")
    assert r.status_code == 200
    return r.content.decode()


@pytest.fixture
def viewer(client):
    """A logged-in staff user who may view (not delete) the log."""
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_request"))
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(client):
    req = exchange_make()
    f = file_attach(req, PNG, "image/png", ".png")
    for url in (LIST, f"{LIST}{req.pk.hex}/change/", f"{LIST}file/{f.pk.hex}/", f"{LIST}dashboard/"):
        r = client.get(url)
        assert r.status_code == 302 and r["Location"].startswith("/admin/login/"), url


def test_list_newest_first_with_columns_and_no_count(admin_client):
    old = exchange_make(when=datetime.now(timezone.utc) - timedelta(hours=2), tokens=(1200, 9), cached_tokens=1024,
                        reasoning_tokens=7, cost_usd=Decimal("0.0012345"), model="gpt-4o",
                        key_fp="1a2b3c4d5e6f", gateway_key="team-a (fp 0123456789ab)")
    old.response.model = "gpt-4o-2024-08-06"
    old.response.save()
    new = exchange_make(endpoint="/v1/embeddings", model="text-embedding-3-small", tokens=(3, 0))
    with CaptureQueriesContext(connection) as queries:
        r = admin_client.get(LIST)
    assert r.status_code == 200
    assert _ids(r) == [new.pk.hex, old.pk.hex]
    html = r.content.decode()
    for header in ("time", "model", "status", "latency", "tokens", "cost", "key / user", "session"):
        assert f">{header}<" in html or f">{header[0].upper()}{header[1:]}<" in html, header
    row = html.split(f'/admin/logs/request/{old.pk}/change/')[1].split("</tr>")[0]
    cells = dict(re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', row, re.S))
    assert ">gpt-4o</a>" in cells["model_name"] and "answered by gpt-4o-2024-08-06" in cells["model_name"]
    assert "1,209" in cells["tokens"] and "1,200 → 9" in cells["tokens"]
    assert ">$0.001234<" in cells["cost"] or ">$0.001235<" in cells["cost"]  # readable; exact value on hover
    assert 'title="$0.0012345"' in cells["cost"]
    assert "121 ms" in cells["latency"] or "120 ms" in cells["latency"]
    assert "TTFB 40 ms" in cells["latency"]
    assert ">team-a</a>" in cells["who"]  # the gateway key's name, full label on hover
    row = html.split(f'/admin/logs/request/{new.pk}/change/')[1].split("</tr>")[0]
    cells = dict(re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', row, re.S))
    # Unknown shows the admin's empty mark, a known zero shows 0.
    assert "3 → 0" in cells["tokens"] and cells["cost"] == "-" and cells["session"] == "-"
    sql = " ".join(q["sql"] for q in queries.captured_queries)
    assert "__count" not in sql  # no queryset.count(): the page never counts the log
    page_sql = next(q["sql"] for q in queries.captured_queries if 'FROM "requests" LEFT OUTER JOIN' in q["sql"])
    assert '"requests"."body"' not in page_sql and '"responses"."body"' not in page_sql


def test_paging_without_count(admin_client, monkeypatch):
    from logs.admin import RequestAdmin

    monkeypatch.setattr(RequestAdmin, "list_per_page", 2)
    base = datetime.now(timezone.utc)
    made = [exchange_make(when=base - timedelta(minutes=i)) for i in range(5)]
    first = admin_client.get(LIST)
    assert _ids(first) == [m.pk.hex for m in made[:2]] and "older" in first.content.decode()
    third = admin_client.get(LIST + "?p=3")
    assert _ids(third) == [made[4].pk.hex]
    assert "newer" in third.content.decode() and "older &rsaquo;" not in third.content.decode()
    for page in ("999999999", "9" * 23):  # past the log; the second past the database's OFFSET (a 500 before)
        far = admin_client.get(LIST + f"?p={page}")
        assert far.status_code == 302 and far["Location"].endswith("?e=1")


@pytest.mark.parametrize("per_page", [100, 1])  # 1: the periods are probed in the database, not read from the page
@pytest.mark.parametrize("query", [{}, {"status": "200"}])  # a filter: a probe per period, not ordered seeks
def test_the_calendars_last_year_month_and_day_drill_down_like_any_other(admin_client, monkeypatch, per_page, query):
    """A row dated at the calendar's end (a clock or a journal gone wrong): a period's end is the next one's start,
    which past year 9999 overflowed, in the list's own drill-down (a 500) and in Django's (a bad lookup)."""
    monkeypatch.setattr("logs.admin.RequestAdmin.list_per_page", per_page)
    monkeypatch.setattr("logs.selectors.RARE_ANSWERS", 1)  # the status filter stays a filter, not an id set
    now = exchange_make()
    last = exchange_make(when=datetime(2025, 1, 1, tzinfo=timezone.utc))  # uuid7 holds no year 9999: moved there
    Request.objects.filter(pk=last.pk).update(created_at=datetime.max.replace(tzinfo=timezone.utc))
    dec = exchange_make(when=datetime(2025, 1, 2, tzinfo=timezone.utc))
    Request.objects.filter(pk=dec.pk).update(created_at=datetime(9999, 12, 1, tzinfo=timezone.utc))
    r = admin_client.get(LIST, query)
    assert r.status_code == 200 and "created_at__year=9999" in unescape(r.content.decode())
    drill = {"created_at__year": 9999}
    r = admin_client.get(LIST, {**query, **drill})
    assert _ids(r) == [last.pk.hex, dec.pk.hex][:per_page] and "created_at__month=12" in unescape(r.content.decode())
    drill["created_at__month"] = 12
    r = admin_client.get(LIST, {**query, **drill})
    assert _ids(r) == [last.pk.hex, dec.pk.hex][:per_page]
    assert {"created_at__day=1", "created_at__day=31"} <= set(re.findall(r"created_at__day=\d+", r.content.decode()))
    drill["created_at__day"] = 31
    r = admin_client.get(LIST, {**query, **drill})
    assert r.status_code == 200 and _ids(r) == [last.pk.hex] and now.pk.hex not in _ids(r)
    far = admin_client.get(LIST, {"created_at__year": 10000})  # past the calendar: a bad lookup, the list says so
    assert far.status_code == 302 and far["Location"].endswith("?e=1")


def test_an_action_on_a_selection_naming_no_exchange_is_refused_not_a_500(admin_client):
    exchange_make()
    r = admin_client.post(LIST, {"action": "export_jsonl", "index": "0", "_selected_action": ["not-a-uuid"]})
    assert r.status_code == 302
    page = admin_client.get(r["Location"]).content.decode()
    assert "The selection names no exchange: nothing was done." in page


def test_an_admin_page_that_fails_is_an_html_500_not_the_proxys_json(admin_user, monkeypatch):
    from django.test import Client

    from logs.admin import RequestAdmin

    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(RequestAdmin, "get_queryset", fail)  # looked up per request (the view is bound once)
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)
    r = client.get(LIST)
    assert r.status_code == 500 and r["Content-Type"].startswith("text/html") and b"boom" not in r.content
    from django.test import RequestFactory

    from proxy.views import server_error_json

    api = server_error_json(RequestFactory().post("/v1/chat/completions"))  # an SDK's 500 stays JSON
    assert api.status_code == 500 and json.loads(api.content)["error"]["message"] == "Internal gateway error"


@pytest.mark.parametrize("query", ["model=%00", "provider=x%00y", "key=%00", "client_addr=%00", "q=a%00b"])
def test_a_nul_in_a_filter_is_a_400_on_every_database(admin_client, query):
    # PostgreSQL cannot hold a NUL in a text value: such a filter was a 500 there (SQLite found nothing).
    exchange_make()
    for url in (LIST, "/admin/logs/request/live/feed/"):
        r = admin_client.get(f"{url}?{query}")
        assert r.status_code == 400 and b"NUL" in r.content


@pytest.mark.parametrize("query,expected", [
    ("status=2xx", {"ok", "gone", "claude", "stream"}), ("status=4xx", {"rate"}), ("status=5xx", {"boom"}),
    ("status=gateway_error", {"gw"}), ("status=aborted", {"gone"}),
    ("provider=anthropic", {"claude"}), ("model=gpt-4o", {"rate"}),
    ("streamed=yes", {"stream"}), ("streamed=no", {"ok", "rate", "boom", "gw", "gone", "claude"}),
    ("files=yes", {"ok"}), ("files=no", {"rate", "boom", "gw", "gone", "claude", "stream"}),
])
def test_each_list_filter(admin_client, query, expected):
    made = {
        "ok": exchange_make(),
        "rate": exchange_make(status=429, model="gpt-4o"),
        "boom": exchange_make(status=500),
        "gw": exchange_make(status=502, outcome=Outcome.UPSTREAM_ERROR),
        "gone": exchange_make(status=200, outcome=Outcome.CLIENT_ABORTED),
        "claude": exchange_make(provider="anthropic", model="claude-3-5-haiku", endpoint="/anthropic/v1/messages"),
        "stream": streamed_chat(),
    }
    file_attach(made["ok"], PNG, "image/png", ".png")
    r = admin_client.get(f"{LIST}?{query}")
    assert r.status_code == 200
    assert set(_ids(r)) == {made[k].pk.hex for k in expected}


def test_filter_choices_come_from_the_log(admin_client):
    exchange_make(provider="anthropic", model="claude-3-5-haiku")
    exchange_make(model="gpt-4.1")
    html = admin_client.get(LIST).content.decode()
    assert "?provider=anthropic" in html and "?provider=openai" in html
    assert "?model=claude-3-5-haiku" in html and "?model=gpt-4.1" in html


def test_long_values_in_the_sidebar_are_shortened_whole_on_hover_and_their_links_still_filter(admin_client):
    """Models, users, sessions and metadata may be 255 characters: the sidebar showed each whole, a 200-model
    sidebar a wall of eight-line choices."""
    model, user, session = "m-" + "é" * 253, "u" * 255, "s" * 255
    target = exchange_make(model=model, end_user=user, session_id=session, gateway_key="k" * 160)
    exchange_make(model="gpt-4o")
    meta = "n=" + "v" * 250
    sidebar = admin_client.get(LIST, {"meta": meta}).content.decode().split('id="changelist-filter"', 1)[1]
    sidebar += admin_client.get(LIST, {"user": user, "session": session}).content.decode().split(
        'id="changelist-filter"', 1)[1]
    for value in (model, user, session, meta, "k" * 160):
        assert f'<span title="{value}">{value[:47]}…</span>' in sidebar  # shortened, whole on hover
        assert f">{value}<" not in sidebar  # never shown whole
    link = re.findall(r'<a href="(\?[^"]*)"><span title="m-é', sidebar)[-1]  # from the page of user and session
    assert _ids(admin_client.get(LIST + unescape(link))) == [target.pk.hex]


def test_date_hierarchy(admin_client):
    jan = exchange_make(when=datetime(2025, 1, 15, 10, tzinfo=timezone.utc))
    mar = exchange_make(when=datetime(2025, 3, 2, 10, tzinfo=timezone.utc))
    html = admin_client.get(LIST).content.decode()
    assert "created_at__month=1" in html and "created_at__month=3" in html and "created_at__month=2" not in html
    r = admin_client.get(f"{LIST}?created_at__year=2025&created_at__month=3")
    assert _ids(r) == [mar.pk.hex] and "created_at__day=2" in r.content.decode()
    r = admin_client.get(f"{LIST}?created_at__year=2025&created_at__month=1&created_at__day=15")
    assert _ids(r) == [jan.pk.hex]


def test_date_hierarchy_takes_the_newest_from_a_newest_first_list(admin_client, monkeypatch):
    monkeypatch.setattr("logs.admin.RequestAdmin.list_per_page", 1)  # more matches than the page holds
    monkeypatch.setattr("logs.selectors.RARE_ANSWERS", 1)  # a common status: walked newest first, not an id set
    for when in (datetime(2025, 1, 15, 10, tzinfo=timezone.utc), datetime(2025, 3, 2, 10, tzinfo=timezone.utc)):
        exchange_make(when=when, status=None, outcome=Outcome.INTERRUPTED)
        exchange_make(when=when + timedelta(hours=1))
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(LIST, {"status": "interrupted"}).content.decode()
    assert "created_at__month=1" in html and "created_at__month=3" in html and "created_at__month=2" not in html
    # The upper bound is the page's first row: no seek newest first beside the list's own query.
    assert not [q for q in queries.captured_queries if q["sql"].endswith("DESC LIMIT 1")]
    with CaptureQueriesContext(connection) as queries:
        html = admin_client.get(LIST, {"status": "interrupted", "p": 2}).content.decode()  # not the newest row
    assert "created_at__month=1" in html and "created_at__month=3" in html and "created_at__month=2" not in html
    assert [q for q in queries.captured_queries if q["sql"].endswith("DESC LIMIT 1")]


def test_date_hierarchy_of_a_filter_whose_matches_lie_in_one_month_of_a_longer_log(admin_client, monkeypatch):
    monkeypatch.setattr("logs.admin.RequestAdmin.list_per_page", 1)
    monkeypatch.setattr("logs.selectors.RARE_ANSWERS", 1)
    exchange_make(when=datetime(2024, 6, 1, tzinfo=timezone.utc))  # the log starts a year earlier
    for day in (2, 9):
        exchange_make(when=datetime(2025, 3, day, 10, tzinfo=timezone.utc), status=None, outcome=Outcome.INTERRUPTED)
    html = admin_client.get(LIST, {"status": "interrupted"}).content.decode()
    # As when both bounds are known: straight to the month's days, back to its year.
    assert "created_at__day=2" in html and "created_at__day=9" in html and "created_at__day=3" not in html
    assert "created_at__year=2025" in html and "created_at__year=2024" not in html


@pytest.mark.parametrize("term_of", [
    lambda r: r.pk.hex, lambda r: str(r.pk), lambda r: "embeddings", lambda r: "text-embedding-3",
    lambda r: "zebra-crossing", lambda r: "answer-in-the-response",
])
def test_search(admin_client, term_of):
    target = exchange_make(endpoint="/v1/embeddings", model="text-embedding-3-small",
                           body={"input": "a zebra-crossing at night"},
                           resp_body={"note": "answer-in-the-response"})
    exchange_make()
    r = admin_client.get(LIST, {"q": term_of(target)})
    assert _ids(r) == [target.pk.hex]


def test_a_search_piece_without_letters_or_digits_separates_words(admin_client):
    # "😀" and "%" are no words (the index reads them as separators): they must not empty the search.
    target = exchange_make(body={"input": "invoice for 😀 paris"})
    exchange_make(model="mod%el_x")
    for term in ("😀 invoice", "invoice paris %", "invoice - paris &"):
        assert _ids(admin_client.get(LIST, {"q": term})) == [target.pk.hex], term
    assert len(_ids(admin_client.get(LIST, {"q": "%"}))) == 1  # alone, it still finds the model that holds it


def test_a_pasted_paragraph_is_refused_with_a_message_not_a_500(admin_client):
    # Each term is ANDed as its own lookup: a thousand made SQLite refuse the query ("Expression tree is too
    # large", a 500) and a few hundred kept PostgreSQL busy for minutes.
    words = [f"word{i}" for i in range(1000)]
    target = exchange_make(body={"input": " ".join(words[:32])})
    assert _ids(admin_client.get(LIST, {"q": " ".join(words[:32])})) == [target.pk.hex]  # the most it takes
    r = admin_client.get(LIST, {"q": " ".join(words)})
    assert r.status_code == 200 and _ids(r) == []
    assert r.content.decode().count("The search has 1000 terms; it takes at most 32") == 1


def test_a_filter_naming_a_thousand_values_applies_the_first_fifty_with_a_message_not_a_500(admin_client):
    # Each answering model or status is its own subquery, ORed: SQLite refused a thousand ("Expression tree
    # is too large", a 500).
    target = exchange_make(model="gpt-4o")
    exchange_make(model="other-model")
    models = ",".join(["gpt-4o", *(f"model-{i}" for i in range(999))])
    r = admin_client.get(LIST, {"answered_by": models})
    assert r.status_code == 200 and _ids(r) == [target.pk.hex]
    assert "The answering model filter takes at most 50 values: the first 50 of the 1000 given" in r.content.decode()
    r = admin_client.get(LIST, {"status": ",".join(["2xx", "4xx", "pending", "aborted"] * 500)})  # 4 values
    assert r.status_code == 200 and len(_ids(r)) == 2 and "takes at most" not in r.content.decode()


COMMA_MODEL = "org/model,v2"


def _links(html: str, param: str, *fragments: str) -> list[str]:
    """The page's links whose query gives `param` a value holding each fragment (by default, COMMA_MODEL's two
    parts, however it is written)."""
    hrefs = [unescape(h) for h in re.findall(r'href="([^"]*)"', html)]
    return [h for h in hrefs if any(k == param and all(f in v for f in fragments or ("org/model", "v2"))
                                    for k, v in parse_qsl(urlsplit(h).query))]


@pytest.fixture
def comma_models():
    """A model whose name holds a comma, and the two models a comma-split of it would name."""
    return {m: exchange_make(model=m, tokens=(1, 1)).pk.hex for m in (COMMA_MODEL, "org/model", "v2", "gpt-4o")}


def test_a_model_with_a_comma_is_chosen_by_its_links_and_by_a_written_url(admin_client, comma_models):
    """The list's filters read ?model=a,b as two models: "org/model,v2"'s own links listed "org/model" and "v2"."""
    html = admin_client.get(LIST).content.decode()
    links = _links(html, "model")
    assert len(links) == 2  # the list cell's and the filter's (a positive control for the loop below)
    for link in links:
        assert _ids(admin_client.get(LIST + link)) == [comma_models[COMMA_MODEL]], link
    # Added to a chosen model by the filter's link.
    html = admin_client.get(LIST, {"model": "gpt-4o"}).content.decode()
    [added] = _links(html, "model", "org/model", "v2", "gpt-4o")
    assert set(_ids(admin_client.get(LIST + added))) == {comma_models[COMMA_MODEL], comma_models["gpt-4o"]}
    assert "✓ org/model,v2" in admin_client.get(LIST + added).content.decode()  # ticked, to take out
    # By hand: a value's comma as \, (and its backslash as \\); a URL without either reads as it always did.
    assert _ids(admin_client.get(LIST, {"model": "org/model\\,v2"})) == [comma_models[COMMA_MODEL]]
    assert _ids(admin_client.get(LIST, {"answered_by": "org/model\\,v2,gpt-4o"})) == [
        comma_models["gpt-4o"], comma_models[COMMA_MODEL]]
    assert set(_ids(admin_client.get(LIST, {"model": "org/model,v2"}))) == {comma_models["org/model"],
                                                                           comma_models["v2"]}


def test_the_dashboard_spend_page_and_live_tail_name_a_model_with_a_comma_as_the_list_reads_it(admin_client,
                                                                                                 comma_models):
    cache.clear()
    html = admin_client.get(f"{LIST}dashboard/", {"window": "24h"}).content.decode()
    spend = admin_client.get(f"{LIST}spend/", {"range": "24h"}).content.decode()
    links = _links(html, "answered_by") + _links(spend, "model")
    assert len(links) == 2
    for link in links:
        assert _ids(admin_client.get(link)) == [comma_models[COMMA_MODEL]], link
    feed = admin_client.get(f"{LIST}live/feed/", {"model": "org/model\\,v2"}).json()
    assert [r["id"] for r in feed["rows"]] == [comma_models[COMMA_MODEL]]


def test_the_live_tail_takes_a_gateway_key_whole_as_the_list_does(admin_client):
    """The list's gateway key and key filters take one value, whole; the live tail split them on commas."""
    named = exchange_make(gateway_key="Smith, team (fp 0123456789ab)")
    exchange_make(gateway_key="Smith")
    assert _ids(admin_client.get(LIST, {"gateway_key": named.gateway_key})) == [named.pk.hex]
    feed = admin_client.get(f"{LIST}live/feed/", {"gateway_key": named.gateway_key}).json()
    assert [r["id"] for r in feed["rows"]] == [named.pk.hex]


def test_rows_are_read_only(viewer, admin_client):
    req = exchange_make()
    assert admin_client.get(f"{LIST}add/").status_code == 403
    html = _detail(admin_client, req)
    assert "<form" not in html.split('id="content-main"')[1].split("</section>")[0]  # no edit form
    # A viewer sees no delete link and cannot delete.
    assert "Delete exchange" not in _detail(viewer, req)
    assert viewer.post(f"{LIST}{req.pk.hex}/delete/", {"post": "yes"}).status_code == 403
    assert Request.objects.filter(pk=req.pk).exists()


def test_deleting_every_matching_exchange_goes_past_a_thousand(admin_client):
    """The confirmation page posts one field per exchange: past Django's 1,000 its "Yes" was a 400."""
    from logs.models import Request

    made = [exchange_make(end_user="burst") for _ in range(1_050)]
    confirm = {"action": "delete_selected", "select_across": "1", "index": "0", "_selected_action": [made[0].pk.hex]}
    page = admin_client.post(f"{LIST}?user=burst", confirm)
    assert page.status_code == 200 and "1050" in page.content.decode().replace(",", "")
    done = admin_client.post(f"{LIST}?user=burst", {**confirm, "post": "yes",
                                                     "_selected_action": [m.pk.hex for m in made]})
    assert done.status_code == 302 and not Request.objects.filter(end_user="burst").exists()


def test_superuser_delete_removes_files(admin_client, django_capture_on_commit_callbacks):
    req = exchange_make()
    f = file_attach(req, PNG, "image/png", ".png")
    assert stored(f.file.name) == PNG
    with django_capture_on_commit_callbacks(execute=True):  # files go once the delete commits
        r = admin_client.post(f"{LIST}{req.pk.hex}/delete/", {"post": "yes"})
    assert r.status_code == 302
    assert not Request.objects.filter(pk=req.pk).exists() and not BinaryFile.objects.exists()
    assert not Response.objects.exists() and stored(f.file.name) is None


def test_bulk_delete_action(admin_client, django_capture_on_commit_callbacks):
    keep = exchange_make()
    gone = [exchange_make() for _ in range(3)]
    names = [file_attach(g, PNG, "image/png", ".png").file.name for g in gone]
    assert all(stored(name) == PNG for name in names)
    confirm = admin_client.post(LIST, {"action": "delete_selected", "_selected_action": [g.pk for g in gone]})
    assert "3 exchange(s)" in confirm.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(LIST, {"action": "delete_selected", "post": "yes",
                                 "_selected_action": [g.pk for g in gone]})
    assert list(Request.objects.values_list("pk", flat=True)) == [keep.pk]
    assert all(stored(name) is None for name in names)


def test_detail_plain_chat(admin_client):
    req = exchange_make(resp_body={"object": "chat.completion", "model": "gpt-4o-mini", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi! How can I help?"}, "finish_reason": "stop"}]},
        tokens=(12, 9), headers=[["Authorization", "Bearer sk-proj-abcdefghijklmnop1234"],
                                 ["Content-Type", "application/json"]])
    html = _detail(admin_client, req)
    assert "sk-proj-abcdefghijklmnop1234" not in html  # an unmasked key in old rows is masked on display
    assert "Bearer sk-…1234" in html
    assert 'class="turn role-user"' in html and "hello there" in html
    assert 'class="turn role-assistant"' in html and "Hi! How can I help?" in html
    assert '<details class="j" open>' in html and "j-key" in html  # JSON tree, collapsible
    assert 'href="#response"' in html and 'href="#files"' in html


def test_detail_streamed_with_tool_call_and_events(admin_client):
    req = streamed_chat()
    html = _detail(admin_client, req)
    assert "Let me check the weather." in html  # reassembled reply
    assert "tool call <b>get_weather</b>" in html and "call_7" in html and "&quot;city&quot;: &quot;Paris&quot;" in html
    assert "Stream events (4)" in html
    for offset in ("41.0 ms", "55.5 ms", "80.25 ms", "90.0 ms"):
        assert offset in html
    assert "[DONE]" in html


def test_a_long_streams_page_lists_its_first_events_and_says_how_many_it_has(admin_client):
    """Every event was a table row: a 50,000-event answer made a 13 MB page that took seconds to build."""
    raw = "".join(f'data: {{"choices": [{{"delta": {{"content": "t{i}"}}}}]}}\n\n' for i in range(2500))
    req = exchange_make(stream=True, resp_body=raw, offsets=[float(i) for i in range(2500)],
                        stream_result={"events": 2500, "result": {"choices": [{"message": {"content": "t"}}]}})
    html = _detail(admin_client, req)
    assert "yes, 2500 events" in html
    assert "Stream events (2500, the first 2000 shown: the response body holds them all)" in html
    events = html.split('<table class="events">', 1)[1].split("</table>", 1)[0]
    assert events.count("<tr>") == 2001 and "t1999" in events and "t2000" not in events  # a header, 2000 events
    assert "1999.0 ms" in events


def test_detail_image_and_audio_files(admin_client):
    req = exchange_make(endpoint="/v1/images/generations", model="gpt-image-1")
    img = file_attach(req, PNG, "image/png", ".png")
    audio = file_attach(req, WAV, "audio/wav", ".wav")
    html = _detail(admin_client, req)
    img_url, audio_url = f"{LIST}file/{img.pk.hex}/", f"{LIST}file/{audio.pk.hex}/"
    assert f'<img src="{img_url}"' in html and f'<audio controls preload="none" src="{audio_url}"' in html
    assert f'href="{img_url}?download=1"' in html and "image/png" in html and f"({len(PNG)} bytes)" in html
    r = admin_client.get(img_url)
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert b"".join(r.streaming_content) == PNG
    r = admin_client.get(img_url + "?download=1")
    assert r["Content-Disposition"].startswith("attachment")


def test_file_of_unsafe_type_is_only_downloaded(admin_client):
    req = exchange_make()
    f = file_attach(req, b"<script>alert(1)</script>", "text/html", ".html")
    r = admin_client.get(f"{LIST}file/{f.pk.hex}/")
    assert r["Content-Type"] == "application/octet-stream" and r["Content-Disposition"].startswith("attachment")
    assert r["X-Content-Type-Options"] == "nosniff"


def test_file_view_needs_view_permission(client):
    req = exchange_make()
    f = file_attach(req, PNG, "image/png", ".png")
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    assert client.get(f"{LIST}file/{f.pk.hex}/").status_code == 403
    assert client.get(f"{LIST}file/not-a-uuid/").status_code in (403, 404)


def test_copy_as_curl_masks_secrets(admin_client):
    req = exchange_make(headers=[["Authorization", "Bearer sk-…9f2c"], ["Content-Type", "application/json"],
                                 ["Host", "localhost:8080"], ["x-api-key", "sk-live-secretsecret1234"]])
    html = _detail(admin_client, req)
    curl = re.search(r'<pre id="curl-text">(.*?)</pre>', html, re.S).group(1)
    assert "curl -X POST" in curl and "/v1/chat/completions" in curl
    assert "Authorization: Bearer $API_KEY" in curl and "x-api-key: $API_KEY" in curl
    assert "secretsecret" not in curl and "9f2c" not in curl and "Host:" not in curl
    assert "hello there" in curl


def test_a_query_parameter_listed_after_the_row_was_written_is_masked_on_the_page(admin_client, settings):
    # Logged before the operator listed "tenant_code": the row holds it in clear; the page and its curl must not.
    req = exchange_make(endpoint="/v1/models")
    Request.objects.filter(pk=req.pk).update(query_string="limit=5&tenant_code=s3cr3t-signature-7788")
    Response.objects.filter(request_id=req.pk).update(forwarded={  # as a policy step sent it upstream
        "method": "GET", "path": "/v1/models", "query": "limit=6&tenant_code=f0rw4rded-signature-5566", "headers": []})
    settings.LOG_REDACT_QUERY_PARAMS = ["tenant_code"]
    html = _detail(admin_client, req)
    assert "/v1/models?limit=5&amp;tenant_code=…7788" in html  # the URL line and the curl command
    assert "/v1/models?limit=6&amp;tenant_code=…5566" in html  # as forwarded
    assert "s3cr3t-signature" not in html and "f0rw4rded-signature" not in html


def test_export_action_jsonl_and_csv(admin_client):
    a = exchange_make(resp_body={"text": 'has "quotes", commas\nand newlines'})
    exchange_make()
    r = admin_client.post(LIST, {"action": "export_jsonl", "_selected_action": [a.pk]})
    assert r.status_code == 200 and "attachment" in r["Content-Disposition"]
    lines = b"".join(r.streaming_content).decode().splitlines()
    assert [json.loads(x)["request"]["id"] for x in lines] == [a.pk.hex]
    r = admin_client.post(LIST, {"action": "export_csv", "_selected_action": [a.pk]})
    rows = list(csv.DictReader(io.StringIO(b"".join(r.streaming_content).decode("utf-8-sig"))))
    assert len(rows) == 1 and json.loads(rows[0]["response_body"])["text"] == 'has "quotes", commas\nand newlines'


def test_dashboard_charts_and_pending_count(admin_client):
    cache.clear()
    now = datetime.now(timezone.utc)
    exchange_make(when=now - timedelta(minutes=5), tokens=(100, 50))
    exchange_make(when=now - timedelta(minutes=3), status=500, tokens=(10, 0), model="gpt-4o")
    for window in ("24h", "7d", "30d"):
        r = admin_client.get(f"{LIST}dashboard/", {"window": window})
        html = r.content.decode()
        assert r.status_code == 200 and html.count('<svg viewBox') == 6, window
        assert "2 exchanges started from" in html and "1 with an error" in html
        assert not re.search(r'(src|href)="https?://', html)  # nothing from outside hosts
        assert "log records waiting" in html or "log record waiting" in html
    assert "gpt-4o-mini" in html and "50.0%" in html  # tokens by model, error rate tooltip


def test_dashboard_says_the_windows_cost_what_it_leaves_out_and_its_percentiles(admin_client):
    # The dashboard drew a cost bar per bucket, unpriced exchanges silently 0, with no total, and percentiles
    # only per bucket: "what did we spend, how slow were we" had no answer on the page.
    now = datetime.now(timezone.utc)
    html = admin_client.get(f"{LIST}dashboard/", {"window": "24h"}).content.decode()
    assert "0 exchanges started" in html and "Cost $0." in html and "Latency p50" not in html
    unpriced = [exchange_make(when=now - timedelta(minutes=9), model="my-own-model", tokens=(10, 5), duration_ms=100.0),
                exchange_make(when=now - timedelta(minutes=8), status=429, outcome="rate_limited", duration_ms=1.0)]
    html = admin_client.get(f"{LIST}dashboard/", {"window": "24h"}).content.decode()
    assert "2 exchanges started" in html and "Cost unknown, leaving out" in html and "$0" not in html.split("Cost")[1][:20]
    for ms in (200.0, 300.0, 5000.0):
        exchange_make(when=now - timedelta(minutes=7), tokens=(10, 5), cost_usd=Decimal("0.0125"), duration_ms=ms)
    r = admin_client.get(f"{LIST}dashboard/", {"window": "24h"})
    html = r.content.decode()
    assert "5 exchanges started" in html and "Cost $0.0375, leaving out <a href=" in html
    link = unescape(html.split('">2 exchanges without a known cost</a>')[0].rsplit('href="', 1)[1])
    assert set(_ids(admin_client.get(link))) == {x.pk.hex for x in unpriced}
    dash = r.context["dash"]  # 1, 100, 200, 300, 5000 ms: the median is 200, the 95th percentile 5000 (within 5%)
    assert abs(dash.latency_window["p50"] - 200) <= 10 and abs(dash.latency_window["p95"] - 5000) <= 250
    assert f"Latency p50 {dash.latency_window['p50']:,.0f} ms, p95 {dash.latency_window['p95']:,.0f} ms" in html


def test_dashboard_percentiles():
    from logs.stats import _bin_offsets, percentile

    hist = {}
    for ms in (5, 50, 120, 130, 900, 2500):
        for low, width, first in reversed(_bin_offsets()):
            if ms >= low:
                idx = first + int((ms - low) // width)
                hist[idx] = hist.get(idx, 0) + 1
                break
    assert abs(percentile(hist, 0.5) - 125) <= 10
    assert abs(percentile(hist, 0.95) - 2500) <= 2500 * 0.05


def test_pending_count_on_list(admin_client, monkeypatch):
    monkeypatch.setattr("logs.admin.views.pending_log_records", lambda: 7)
    assert "7 log records waiting" in admin_client.get(LIST).content.decode()


def test_unknown_exchange_is_404(admin_client):
    assert admin_client.get(f"{LIST}{'0' * 32}/change/").status_code == 404
    assert isinstance(Path(__file__), Path)


def _all_columns(client) -> None:
    """Tick every column in the column chooser (kept in the session), in their order."""
    from logs.admin.columns import OPTIONAL_COLUMNS

    assert client.get(LIST, {"cols": list(OPTIONAL_COLUMNS)}).status_code == 302


def test_every_column_shortens_a_long_value_and_keeps_it_whole_on_hover(admin_client):
    """A gateway key's name (160 characters) and the answering model (255) were shown whole, widening their columns
    past the screen; the other cells were shortened already."""
    key, answered = "k" * 150 + " (fp 1234)", "a" * 255
    target = exchange_make(gateway_key=key, model="gpt-4o")
    Response.objects.filter(request=target).update(model=answered)
    _all_columns(admin_client)
    html = admin_client.get(LIST).content.decode()
    row = html.split(f"/admin/logs/request/{target.pk}/change/", 1)[1].split("</tr>", 1)[0]
    assert "k" * 150 + "<" not in row and "a" * 255 + "<" not in row  # never a cell's text whole
    assert f'title="{key}">{"k" * 27}…<' in row and f'title="{answered}">{"a" * 31}…<' in row
    assert ">" + "k" * 27 + "…</small>" in row  # the provider key column's name too


def _sort_param(column: str, descending: bool) -> str:
    """The changelist's o= value for sorting by a list_display column."""
    from logs.admin.columns import DEFAULT_COLUMNS, OPTIONAL_COLUMNS

    index = (*DEFAULT_COLUMNS, *OPTIONAL_COLUMNS).index(column) + 1  # 0 is the action checkbox
    return f"{'-' if descending else ''}{index}"


SORTS = {  # column -> (field set on the exchange, values for three exchanges, ascending)
    "input_tokens": ("input_tokens", [50, 7, 900]), "output_tokens": ("output_tokens", [3, 40, 1]),
    "cached_tokens": ("cached_tokens", [0, 64, 32]), "reasoning_tokens": ("reasoning_tokens", [128, 0, 9]),
    "total_tokens": ("total_tokens", [77, 5, 60]), "tokens": ("total_tokens", [8, 900, 70]),
    "cost": ("cost_usd", [Decimal("0.5"), Decimal("0.00001"), Decimal("2.25")]),
    "answer_model": ("model", ["o3-2025-04-16", "gpt-4o-2024-08-06", "claude-sonnet-4"]),
}


@pytest.mark.parametrize("column", [*SORTS, "model_name"])
@pytest.mark.parametrize("descending", [True, False])
def test_sort_by_usage_columns_lists_known_values(admin_client, column, descending):
    base = datetime.now(timezone.utc)
    if column == "model_name":
        values = ["gpt-4o", "claude-3-5-haiku", "o4-mini"]
        made = [exchange_make(model=v, when=base - timedelta(minutes=i)) for i, v in enumerate(values)]
        unknown = exchange_make(model=None, endpoint="/v1/models", body="")
    else:
        field, values = SORTS[column]
        made = [exchange_make(when=base - timedelta(minutes=i), **{field: v}) for i, v in enumerate(values)]
        unknown = exchange_make(**{field: None})
    pending = exchange_make(response=False, model=None, body="")
    _all_columns(admin_client)
    r = admin_client.get(LIST, {"o": _sort_param(column, descending)})
    order = sorted(range(3), key=lambda i: values[i], reverse=descending)
    assert _ids(r) == [made[i].pk.hex for i in order]  # unknown values (and open exchanges) left out
    assert unknown.pk.hex not in _ids(r) and pending.pk.hex not in _ids(r)
    assert "only exchanges where it is known are listed" in r.content.decode()


def test_sort_uses_the_index_not_a_full_sort(admin_client):
    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's query plan")
    exchange_make(cached_tokens=3, cost_usd=Decimal("0.1"))
    _all_columns(admin_client)
    for column in ("cached_tokens", "cost", "model_name"):
        with CaptureQueriesContext(connection) as queries:
            admin_client.get(LIST, {"o": _sort_param(column, False)})
        page_sql = next(q["sql"] for q in queries.captured_queries if "LIMIT 101" in q["sql"])
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + page_sql)
            plan = " | ".join(str(row[-1]) for row in cur.fetchall())
        assert "USING INDEX" in plan and "ORDER BY" not in plan, (column, plan)  # no sort step


def test_usage_and_key_filters(admin_client):
    gk = "team-a (fp 0123456789ab)"
    made = {
        "priced": exchange_make(cost_usd=Decimal("0.01"), key_fp="aaaaaaaaaaaa", gateway_key=gk),
        "dated": exchange_make(model="gpt-4o", key_fp="bbbbbbbbbbbb"),
        "unpriced": exchange_make(),
        "open": exchange_make(response=False),
    }
    made["dated"].response.model = "gpt-4o-2024-08-06"
    made["dated"].response.save()
    html = admin_client.get(LIST).content.decode()
    assert "?answered_by=gpt-4o-2024-08-06" in html and "?key=aaaaaaaaaaaa" in html
    assert "?gateway_key=team-a+%28fp+0123456789ab%29" in html
    for query, expected in [("answered_by=gpt-4o-2024-08-06", {"dated"}), ("cost=known", {"priced"}),
                            ("cost=unknown", {"dated", "unpriced", "open"}), ("key=bbbbbbbbbbbb", {"dated"}),
                            ("gateway_key=team-a+%28fp+0123456789ab%29", {"priced"})]:
        r = admin_client.get(f"{LIST}?{query}")
        assert set(_ids(r)) == {made[k].pk.hex for k in expected}, query


def test_gateway_key_filter_hidden_without_gateway_keys(admin_client):
    exchange_make(key_fp="aaaaaaaaaaaa")
    html = admin_client.get(LIST).content.decode()
    assert "By gateway key" not in html and "By API key (fingerprint)" in html


@pytest.mark.parametrize("term", ["1a2b3c4d5e6f", "key:1a2b3c4d5e6f", "KEY:1A2B3C4D5E6F"])
def test_search_by_key_fingerprint_is_exact(admin_client, term):
    mine = exchange_make(key_fp="1a2b3c4d5e6f")
    exchange_make(key_fp="1a2b3c4d5e60")
    exchange_make(body={"note": "1a2b3c4d5e6f appears in this body"})  # text, not the key: not a match
    assert _ids(admin_client.get(LIST, {"q": term})) == [mine.pk.hex]


def test_search_for_hex_that_is_no_fingerprint_searches_text(admin_client):
    exchange_make(key_fp="1a2b3c4d5e6f")
    body = exchange_make(body={"note": "abcdefabcdef in a body"})
    assert _ids(admin_client.get(LIST, {"q": "abcdefabcdef"})) == [body.pk.hex]


def test_detail_shows_key_fingerprint_and_gateway_key_with_links(admin_client):
    req = exchange_make(key_fp="1a2b3c4d5e6f", gateway_key="team-a (fp 0123456789ab)")
    html = _detail(admin_client, req)
    assert 'href="/admin/logs/request/?key=1a2b3c4d5e6f"' in html and "<code>1a2b3c4d5e6f</code>" in html
    assert 'href="/admin/logs/request/?gateway_key=team-a%20%28fp%200123456789ab%29"' in html
    assert "gateway key" in html and "team-a (fp 0123456789ab)" in html


def test_detail_shows_saved_replicate_output_file(admin_client):
    req = exchange_make(provider="replicate", endpoint="/replicate/v1/predictions/abc", model=None, method="GET",
                        body="", resp_body={"status": "succeeded", "output": ["https://replicate.delivery/x/out.png"]})
    out = file_attach(req, PNG, "image/png", ".png", filename="out.png", role=BinaryFile.Role.RESPONSE_OUTPUT)
    html = _detail(admin_client, req)
    url = f"{LIST}file/{out.pk.hex}/"
    assert f'<img src="{url}"' in html and f'href="{url}?download=1"' in html
    assert "Response Output" in html  # the role's label
    assert f'Output files saved by the gateway: <a href="#file-{out.pk.hex}">out.png</a>' in html
    assert b"".join(admin_client.get(url).streaming_content) == PNG


def test_date_hierarchy_of_a_search(admin_client, monkeypatch):
    jan = exchange_make(when=datetime(2025, 1, 15, 10, tzinfo=timezone.utc), body={"input": "a rare zebra"})
    exchange_make(when=datetime(2025, 2, 15, 10, tzinfo=timezone.utc))
    mar = exchange_make(when=datetime(2025, 3, 2, 10, tzinfo=timezone.utc), body={"input": "zebra again"})
    html = admin_client.get(LIST, {"q": "zebra"}).content.decode()  # both matches fit the page
    assert "created_at__month=1" in html and "created_at__month=3" in html and "created_at__month=2" not in html
    r = admin_client.get(LIST, {"q": "zebra", "created_at__year": 2025, "created_at__month": 3})
    assert _ids(r) == [mar.pk.hex] and "created_at__day=2" in r.content.decode()
    html = admin_client.get(LIST, {"q": "xylophonist"}).content.decode()  # no match: no drill-down at all
    assert "created_at__month=" not in html and "created_at__year=" not in html
    # A search whose matches span more than a page: the periods are probed in the database.
    monkeypatch.setattr("logs.admin.RequestAdmin.list_per_page", 1)
    r = admin_client.get(LIST, {"q": "zebra"})
    assert _ids(r) == [mar.pk.hex] and "created_at__month=1" in r.content.decode()
    assert "created_at__month=2" not in r.content.decode() and jan.pk.hex not in _ids(r)


def test_a_search_drilled_to_a_month_finds_its_days_in_one_query(admin_client, monkeypatch):
    """A day probe re-ran the word search: 31 of them took 3.7 s at 49,000 exchanges. One grouping query now."""
    monkeypatch.setattr("logs.admin.RequestAdmin.list_per_page", 1)  # more matches than the page: not from the rows
    days = [2, 9, 17, 28]
    for d in days:
        exchange_make(when=datetime(2025, 3, d, 10, tzinfo=timezone.utc), body={"input": "an okapi"})
    exchange_make(when=datetime(2025, 3, 5, 10, tzinfo=timezone.utc), body={"input": "a giraffe"})
    query = {"q": "okapi", "created_at__year": 2025, "created_at__month": 3}
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ran:
        html = admin_client.get(LIST, query).content.decode()
    assert [int(d) for d in re.findall(r"created_at__day=(\d+)", html)] == days
    searched = [q["sql"] for q in ran.captured_queries if "text_fts" in q["sql"] or "to_tsvector" in q["sql"]]
    assert len(searched) <= 3  # the page's rows (and the next page's probe), then the days at once: not 31 probes


def test_an_exchange_with_escaped_lone_surrogates_renders(admin_client):
    # "\ud800" is valid JSON that a client may send; read as it is, the page could not be written as UTF-8.
    body = '{"model": "m", "user": "u\\ud800", "metadata": {"k\\udfff": "v"}, "messages": [{"role": "user", ' \
           '"content": "lone \\ud800 surrogate"}]}'
    req = exchange_make(body=body, resp_body='{"choices": [{"message": {"content": "back \\udc00"}}]}')
    page = _detail(admin_client, req)
    assert "lone \ufffd surrogate" in page and "back \ufffd" in page


def test_tool_call_arguments_with_an_escaped_lone_surrogate_render(admin_client):
    # JSON inside JSON: the arguments string is parsed for the page on its own.
    body = {"model": "m", "messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": "\\ud800"}'}}]}]}
    req = exchange_make(body=json.dumps(body))
    assert "ud800" in _detail(admin_client, req)
