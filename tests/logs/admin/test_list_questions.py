"""The exchange list answers questions in a few clicks: cells that filter, a time range, "any error"."""

import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html import unescape

import pytest

from logs.outcomes import Outcome
from tests.logs.admin.test_admin import LIST, _ids
from tests.logs.factory import exchange_make, streamed_chat

pytestmark = pytest.mark.django_db


def _row(html: str, req) -> dict[str, str]:
    """The cells of one exchange's row: {field name: inner HTML}."""
    row = html.split(f"/admin/logs/request/{req.pk}/change/")[1].split("</tr>")[0]
    return dict(re.findall(r'<td class="field-(\w+)[^"]*">(.*?)</td>', row, re.S))


def _href(cell: str, text: str) -> str:
    """The link in a cell around `text`."""
    return unescape(re.search(r'href="([^"]*)"[^>]*>(?:<[^>]+>)*' + re.escape(text), cell).group(1))


@pytest.fixture
def made():
    now = datetime.now(timezone.utc)
    return {
        "old_fail": exchange_make(when=now - timedelta(hours=3), model="gpt-4o", status=500),
        "fail": exchange_make(when=now - timedelta(minutes=20), model="gpt-4o", status=500,
                              end_user="alice", session_id="s-1"),
        "ok": exchange_make(when=now - timedelta(minutes=10), model="gpt-4o", end_user="alice", session_id="s-1"),
        "other": exchange_make(when=now - timedelta(minutes=5), model="o4-mini", status=429),
        "gone": exchange_make(when=now - timedelta(minutes=2), model="o4-mini", outcome=Outcome.CLIENT_ABORTED),
        "recent": exchange_make(when=now - timedelta(days=2), model="gpt-4o"),
    }


def _ids_of(made, *names) -> set[str]:
    return {made[n].pk.hex for n in names}


@pytest.mark.parametrize(("query", "expected"), [
    ("since=1h", {"fail", "ok", "other", "gone"}), ("since=15m", {"ok", "other", "gone"}),
    ("since=24h", {"old_fail", "fail", "ok", "other", "gone"}), ("since=7d", {"old_fail", "fail", "ok", "other", "gone", "recent"}),
    ("status=error", {"old_fail", "fail", "other", "gone"}), ("status=500", {"old_fail", "fail"}),
    # "Failed calls for model X in the last hour": three filters that combine.
    ("since=1h&status=error&model=gpt-4o", {"fail"}),
    ("since=24h&user=alice", {"fail", "ok"}),
])
def test_time_range_and_error_filters_combine(admin_client, made, query, expected):
    r = admin_client.get(f"{LIST}?{query}")
    assert r.status_code == 200
    assert set(_ids(r)) == _ids_of(made, *expected)


def test_a_user_whose_name_holds_a_comma_is_one_user(admin_client):
    """X-Gateway-User: Smith, John: its cell's link listed no exchange (the filter split it into two users)."""
    mine = exchange_make(end_user="Smith, John")
    exchange_make(end_user="Smith")
    assert set(_ids(admin_client.get(LIST, {"user": "Smith, John"}))) == {mine.pk.hex}
    page = admin_client.get(LIST, {"user": "Smith"}).content.decode()
    assert "user=Smith%2C+John" in page  # the other user's choice chooses it alone, not "Smith,Smith, John"
    live = admin_client.get(f"{LIST}live/feed/", {"user": "Smith, John"}).json()  # the Live switch's feed too
    assert [r["id"] for r in live["rows"]] == [mine.pk.hex]


def _hrefs(page) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="([^"]*)"', page.content.decode())]


def test_the_date_drill_down_and_a_time_range_replace_each_other(admin_client, made):
    """Clicking a month after "last 7 days" listed the month's last 7 days; a preset kept the drilled month."""
    drills = [h for h in _hrefs(admin_client.get(LIST, {"since": "7d"})) if "created_at__" in h]
    assert drills and not any("since=" in h for h in drills)
    now = datetime.now(timezone.utc)
    drilled = _hrefs(admin_client.get(LIST, {"created_at__year": now.year, "created_at__month": now.month}))
    presets = [h for h in drilled if "since=24h" in h]
    assert presets and not any("created_at__" in h for h in presets)


def _at(when: datetime) -> str:
    """A time as a date-time input sends it: no offset, to the second (UTC)."""
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def test_custom_time_range_combines_with_filters_and_search(admin_client, made):
    now = datetime.now(timezone.utc)
    window = {"created_at__gte": _at(now - timedelta(minutes=30)), "created_at__lt": _at(now - timedelta(minutes=3))}
    assert set(_ids(admin_client.get(LIST, window))) == _ids_of(made, "fail", "ok", "other")
    assert set(_ids(admin_client.get(LIST, {**window, "model": "gpt-4o"}))) == _ids_of(made, "fail", "ok")
    assert set(_ids(admin_client.get(LIST, {**window, "status": "error", "model": "gpt-4o"}))) == _ids_of(made, "fail")
    assert set(_ids(admin_client.get(LIST, {**window, "q": "o4-mini"}))) == _ids_of(made, "other")
    # One bound is enough; an offset is honoured.
    since = (now - timedelta(minutes=6)).isoformat()
    assert set(_ids(admin_client.get(LIST, {"created_at__gte": since}))) == _ids_of(made, "other", "gone")


def test_custom_time_range_shows_as_active_and_can_be_cleared(admin_client, made):
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(minutes=30), now - timedelta(minutes=3)
    html = admin_client.get(LIST, {"created_at__gte": _at(start), "created_at__lt": _at(end), "model": "gpt-4o"}
                            ).content.decode()
    assert f"from <strong>{start:%Y-%m-%d %H:%M:%S}</strong> to <strong>{end:%Y-%m-%d %H:%M:%S}</strong> UTC" in html
    assert 'class="time-custom selected"' in html and f'value="{_at(start)}"' in html
    clear = unescape(re.search(r'<a href="([^"]*)" class="time-range-clear">', html).group(1))
    assert clear == "?model=gpt-4o"
    # A preset replaces the custom range (one range at a time); the custom form keeps the other filters.
    preset = unescape(re.search(r'<a href="([^"]*)">last hour</a>', html).group(1))
    assert "since=1h" in preset and "created_at" not in preset and "model=gpt-4o" in preset
    form = html.split('class="time-range-form"')[1].split("</form>")[0]
    assert '<input type="hidden" name="model" value="gpt-4o">' in form and 'name="since"' not in form
    assert 'UTC' in form


@pytest.mark.parametrize(("query", "message"), [
    ({"created_at__gte": "2026-05-02T10:00", "created_at__lt": "2026-05-01T10:00"}, "is not after"),
    ({"created_at__gte": "yesterday"}, "“yesterday” is not a date and time for from"),
    ({"created_at__lt": "2026-13-01T00:00"}, "for to"),
    ({"created_at__gte": "0001-01-01T00:00+05:00"}, "for from"),
])
def test_bad_custom_range_says_why_and_is_not_applied(admin_client, made, query, message):
    r = admin_client.get(LIST, {**query, "model": "o4-mini"})
    assert r.status_code == 200
    html = r.content.decode()
    assert "Time range not applied" in html and message in unescape(html)
    assert set(_ids(r)) == _ids_of(made, "other", "gone")  # the other filter still applies


def test_list_live_switch_knows_which_filters_it_applies(admin_client, made):
    def config(**params) -> dict:
        html = admin_client.get(LIST, params).content.decode()
        return json.loads(re.search(r'id="list-live-config" type="application/json">(.*?)</script>', html).group(1))
    c = config(model="gpt-4o", since="1h", status="error")
    assert c["blocked"] == "" and c["params"] == {"model": "gpt-4o", "since": "1h", "status": "error"}
    assert c["feed"] == f"{LIST}live/feed/"
    assert "cannot apply search, streamed" in config(q="hello", streamed="yes")["blocked"]
    assert "cannot apply the date drill-down:" in config(created_at__year="2026", created_at__month="1")["blocked"]
    assert "newest-first" in config(o="6")["blocked"] and "newest-first" in config(o="1")["blocked"]
    assert config(o="-1")["blocked"] == config(o="")["blocked"] == ""
    assert "correct it" in config(created_at__gte="soon")["blocked"]
    # No row matches: the table is still drawn, for live rows to go in.
    assert 'id="result_list"' in admin_client.get(LIST, {"user": "nobody"}).content.decode()


def test_clicking_cells_narrows_the_list_keeping_other_filters(admin_client, made):
    html = admin_client.get(f"{LIST}?since=1h").content.decode()
    cells = _row(html, made["fail"])
    model_url = _href(cells["model_name"], "gpt-4o")
    assert "model=gpt-4o" in model_url and "since=1h" in model_url
    assert set(_ids(admin_client.get(LIST + model_url))) == _ids_of(made, "fail", "ok")

    status_url = _href(cells["status"], "500")
    assert set(_ids(admin_client.get(LIST + status_url))) == _ids_of(made, "fail")  # 500s in the last hour

    user_url = _href(cells["who"], "alice")
    assert set(_ids(admin_client.get(LIST + user_url))) == _ids_of(made, "fail", "ok")
    session_url = _href(cells["session"], "s-1")
    assert set(_ids(admin_client.get(LIST + session_url))) == _ids_of(made, "fail", "ok")
    assert 'href="session/?id=s-1"' in cells["session"]  # and the session's timeline


def test_status_cell_shows_outcome_and_error_text(admin_client):
    failed = exchange_make(status=500)
    failed.response.error_message = "The server had an error while processing your request."
    failed.response.save()
    aborted = exchange_make(outcome=Outcome.CLIENT_ABORTED)
    fine = exchange_make()
    html = admin_client.get(LIST).content.decode()
    assert "The server had an error while processing your request." in _row(html, failed)["status"]
    assert "client aborted" in _row(html, aborted)["status"]
    assert "completed" not in _row(html, fine)["status"]


def test_no_red_cross_for_not_streamed(admin_client):
    plain = exchange_make()
    streamed = streamed_chat()
    html = admin_client.get(LIST).content.decode()
    assert "icon-no" not in html and "icon-yes" not in html
    assert "stream" in _row(html, streamed)["latency"] and "stream" not in _row(html, plain)["latency"]


def test_column_chooser_adds_columns(admin_client):
    exchange_make(tokens=(1200, 9), cached_tokens=1024)
    html = admin_client.get(LIST).content.decode()
    assert 'name="cols" value="cached_tokens"' in html and "field-cached_tokens" not in html
    r = admin_client.get(LIST, {"cols": ["", "cached_tokens", "provider"], "since": "1h"})
    assert r.status_code == 302 and r["Location"] == f"{LIST}?since=1h"
    html = admin_client.get(LIST).content.decode()
    assert "field-cached_tokens" in html and "field-provider" in html and ">1,024<" in html
    admin_client.get(LIST, {"cols": [""]})  # nothing ticked: back to the default columns
    assert "field-cached_tokens" not in admin_client.get(LIST).content.decode()


def test_pages_name_the_gateway(admin_client):
    exchange_make()
    for url in ("/admin/", LIST, f"{LIST}dashboard/", f"{LIST}session/?id=x"):
        html = admin_client.get(url).content.decode()
        assert "Django administration" not in html and "Django site admin" not in html, url
        assert "AI Gateway" in html, url


def test_selection_counter_is_on_the_page(admin_client):
    """actions.js updateCounter reads span.action-counter on every load and click: it must exist."""
    exchange_make()
    html = admin_client.get(LIST).content.decode()
    assert re.search(r'<span class="action-counter" data-actions-icnt="1">0 of 1 selected</span>', html)


def test_select_all_exports_every_matching_exchange(admin_client, monkeypatch):
    from logs.admin import RequestAdmin

    monkeypatch.setattr(RequestAdmin, "list_per_page", 2)
    now = datetime.now(timezone.utc)
    made = [exchange_make(when=now - timedelta(minutes=i), status=500 if i % 2 else 200) for i in range(7)]
    html = admin_client.get(f"{LIST}?status=500").content.decode()
    assert "Select every exchange matching the filters" in html
    r = admin_client.post(f"{LIST}?status=500", {"action": "export_jsonl", "select_across": "1", "index": "0",
                                                 "_selected_action": [made[1].pk.hex]})
    lines = b"".join(r.streaming_content).decode().strip().splitlines()
    assert len(lines) == 3  # every 500 across the pages, not only the ticked row


def test_every_matching_exchange_of_a_sorted_list_is_exported_the_unpriced_too(admin_client):
    """Sorted by cost, the list shows the priced ones; "every exchange matching the filters" is all of them."""
    from tests.logs.admin.test_admin import _sort_param

    priced = [exchange_make(end_user="bob", cost_usd=Decimal(c)) for c in ("0.5", "0.25")]
    unpriced = exchange_make(end_user="bob", status=500)
    query = f"{LIST}?user=bob&o={_sort_param('cost', True)}"
    assert set(_ids(admin_client.get(query))) == {p.pk.hex for p in priced}  # the page: known costs only
    r = admin_client.post(query, {"action": "export_jsonl", "select_across": "1", "index": "0",
                                  "_selected_action": [priced[0].pk.hex]})
    ids = {json.loads(line)["request"]["id"] for line in b"".join(r.streaming_content).decode().splitlines()}
    assert ids == {p.pk.hex for p in [*priced, unpriced]}


def test_gateway_key_header_is_shown_once_masked_with_its_name(admin_client):
    from tests.logs.factory import AUTH

    label = "team-a (fp 0123456789ab)"
    req = exchange_make(gateway_key=label, headers=[*AUTH, ["x-gateway-key", label]])
    other = exchange_make(headers=[*AUTH, ["x-gateway-key", "gk-unmasked-value-from-an-old-row"]])
    html = admin_client.get(f"{LIST}{req.pk.hex}/change/").content.decode()
    assert f"<th>x-gateway-key</th><td>{label}</td>" in html
    html = admin_client.get(f"{LIST}{other.pk.hex}/change/").content.decode()
    assert "gk-unmasked-value-from-an-old-row" not in html  # anything else is still masked


def test_dashboard_has_a_cost_chart_and_its_bars_link_to_the_list(admin_client):
    from decimal import Decimal

    from django.core.cache import cache

    cache.clear()
    now = datetime.now(timezone.utc)
    hour = (now - timedelta(minutes=1)).replace(minute=0, second=0, microsecond=0)  # a past hour's bucket
    paid = exchange_make(when=hour + timedelta(seconds=1), tokens=(58_000, 779), cost_usd=Decimal("0.75"),
                         model="a-model-with-a-very-long-name-that-used-to-be-clipped-2025-01-01")
    failed = exchange_make(when=hour + timedelta(seconds=2), status=500)
    exchange_make(when=now - timedelta(days=3))
    html = admin_client.get(f"{LIST}dashboard/", {"window": "24h"}).content.decode()
    assert "<figcaption>Cost (USD)</figcaption>" in html and "0.75" in html
    assert "58.8k" in html and "58.779k" not in html  # readable token totals
    assert "a-model-with-a-very-long-name-that-used-to-be-clipped-2025-01-01</title>" in html  # whole on hover
    links = {unescape(h) for h in re.findall(r'<a href="([^"]+)"><rect', html)}
    hits = [set(_ids(admin_client.get(h))) for h in links]
    assert {paid.pk.hex, failed.pk.hex} in hits  # the bar of the last hour lists its exchanges
    error_links = {unescape(h) for h in re.findall(r'<a href="([^"]*status=error[^"]*)"><circle', html)}
    assert any(set(_ids(admin_client.get(h))) == {failed.pk.hex} for h in error_links)
    model_link = unescape(re.search(r'<a href="([^"]*answered_by=a-model[^"]*)"><text', html).group(1))
    assert set(_ids(admin_client.get(model_link))) == {paid.pk.hex}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_vision_input_is_shown_as_an_image_not_base64_text(admin_client, provider):
    import base64

    from tests.logs.factory import PNG

    data = base64.b64encode(PNG).decode()
    if provider == "openai":
        block = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}
        req = exchange_make(body={"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"}, block]}]})
    else:
        block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
        req = exchange_make(provider="anthropic", endpoint="/anthropic/v1/messages", model="claude-sonnet-4",
                            body={"model": "claude-sonnet-4", "max_tokens": 10,
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                                                                            block]}]})
    html = admin_client.get(f"{LIST}{req.pk.hex}/change/").content.decode()
    assert f'<img class="inline-image" src="data:image/png;base64,{data}"' in html
    svg = exchange_make(body={"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="}}]}]})
    assert 'src="data:image/svg' not in admin_client.get(f"{LIST}{svg.pk.hex}/change/").content.decode()


def test_gemini_exchange_has_a_conversation_view(admin_client):
    import base64

    from tests.logs.factory import PNG

    data = base64.b64encode(PNG).decode()
    req = exchange_make(provider="gemini", endpoint="/gemini/v1beta/models/gemini-2.5-flash:generateContent",
                        model="gemini-2.5-flash", body={
                            "systemInstruction": {"parts": [{"text": "Answer briefly."}]},
                            "contents": [{"role": "user", "parts": [{"text": "What is in this picture?"},
                                                                    {"inlineData": {"mimeType": "image/png", "data": data}}]}]},
                        resp_body={"candidates": [{"content": {"role": "model", "parts": [
                            {"text": "thinking it over", "thought": True}, {"text": "A tiny square."},
                            {"functionCall": {"name": "lookup", "args": {"q": "square"}}}]}, "finishReason": "STOP"}]})
    html = admin_client.get(f"{LIST}{req.pk.hex}/change/").content.decode()
    assert "Answer briefly." in html and "What is in this picture?" in html and "A tiny square." in html
    assert f'src="data:image/png;base64,{data}"' in html
    assert "reasoning: thinking it over" in html and "lookup" in html and "STOP" in html


def test_multi_select_filters(admin_client, made):
    r = admin_client.get(f"{LIST}?model=gpt-4o,o4-mini&status=429,aborted")
    assert set(_ids(r)) == _ids_of(made, "other", "gone")
    html = r.content.decode()
    # Choices toggle their value in the selection: o4-mini ticked (a click takes it out), others add themselves.
    assert "✓ o4-mini" in html and "✓ gpt-4o" in html
    assert unescape('href="?model=gpt-4o&amp;status=429%2Caborted"') in unescape(html)
    assert "model=gpt-4o%2Co4-mini&amp;status=429%2Caborted%2C5xx" in html
    assert _feed_ids(admin_client, model="gpt-4o,o4-mini", status="429,aborted") == _ids_of(made, "other", "gone")


def _feed_ids(client, **params) -> set[str]:
    r = client.get(f"{LIST}live/feed/", {"cursor": (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat(),
                                         **params})
    assert r.status_code == 200, r.content
    return {row["id"] for row in r.json()["rows"]}
