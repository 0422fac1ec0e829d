"""The log browser in a real browser (Playwright + Debian's Chromium), as a user would use it.

One gateway process and one browser for the module; each test is one flow a user does, with a
screenshot in test-artifacts/: the three-click questions, the session page, live tail, replay with an
edited body, 390 px (no page overflows sideways) and 1440 px (the list's columns all visible).
Every test fails on a console error or an uncaught page error on any page it visited.

The gateway runs as a subprocess on its own SQLite file (Playwright's sync API keeps an event loop
running in this thread, where Django refuses database calls): old and priced exchanges are written by
tests/logs/factory.py in a `manage.py shell` before the browser starts; the rest goes through the
gateway with the official OpenAI SDK.
"""

import json
import re
import os
import uuid
from datetime import datetime, timedelta, timezone
import subprocess
import sys
import textwrap

import openai
import pytest

from tests.e2e.test_browser import ARGS, ARTIFACTS, CHROMIUM, offline, sync_playwright
from tests.hold.conftest import Background, until
from tests.procs import ROOT, GatewayProcess, db_rows, migrated_copy, proc_env, sqlite_only

pytestmark = [
    sqlite_only,
    pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

PASSWORD = "correct horse battery"
KEY = "sk-" + "browserLOGkey0123456789abcdef"  # fake; split so no key-like literal
SESSION = "run-42"

# Exchanges written straight into the log (times relative to now). The user "ursula", the models
# and the costs are chosen so each question has exactly one right answer.
SEED = textwrap.dedent("""
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal
    from django.contrib.auth.models import User
    from tests.logs.factory import exchange_make
    now = datetime.now(timezone.utc)
    ago = lambda **kw: now - timedelta(**kw)
    User.objects.create_superuser("admin", "admin@example.com", %(password)r)
    # failed calls for gpt-4o in the last hour: only the 500 of ten minutes ago
    oops = "The server had an error while processing your request."
    exchange_make(model="gpt-4o", status=500, when=ago(minutes=10), end_user="victor", error_message=oops,
                  resp_body={"error": {"message": oops}})
    exchange_make(model="gpt-4o", status=429, when=ago(hours=3), end_user="victor",
                  error_message="Rate limit reached", resp_body={"error": {"message": "Rate limit reached"}})
    exchange_make(model="gpt-4o", status=200, when=ago(minutes=5), tokens=(10, 5), end_user="victor")
    exchange_make(model="o4-mini", status=503, when=ago(minutes=20), end_user="victor",
                  error_message="overloaded", resp_body={"error": {"message": "overloaded"}})
    # the most expensive call of the last 24 hours costs $0.42; an older one cost more
    for minutes, cost in ((30, "0.0012"), (90, "0.42"), (300, "0.05")):
        exchange_make(model="gpt-4.1", when=ago(minutes=minutes), tokens=(900, 300), cost_usd=Decimal(cost),
                      key_fp="a1b2c3d4e5f6")
    exchange_make(model="gpt-4.1", when=ago(days=2), tokens=(9000, 3000), cost_usd=Decimal("3.5"))
    # everything ursula did this week: three exchanges; a fourth is older
    for days in (0.1, 2, 6):
        exchange_make(model="gpt-4o-mini", when=ago(days=days), tokens=(50, 20), end_user="ursula",
                      session_id=f"u-{days}", metadata={"team": "search"})
    exchange_make(model="gpt-4o-mini", when=ago(days=10), end_user="ursula")
    # a long unbroken string (pasted base64) must wrap, not widen the page
    exchange_make(model="gpt-4o-mini", when=ago(minutes=40), end_user="ursula",
                  body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Q" * 3000}]})
""") % {"password": PASSWORD}


@pytest.fixture(scope="module")
def server(tmp_path_factory, mock_upstream):
    """One gateway process with the seeded log; its SQLite file for the assertions."""
    data = tmp_path_factory.mktemp("logbrowser") / "data"
    db = migrated_copy(data, tmp_path_factory)
    subprocess.run([sys.executable, "manage.py", "shell", "-c", SEED], cwd=ROOT, check=True, timeout=120,
                   env=proc_env(data, mock_upstream.url), capture_output=True)
    gw = GatewayProcess(data, mock_upstream.url)
    # A session of three calls through the gateway, in order.
    sdk = _sdk(gw, {"X-Gateway-Session-Id": SESSION, "X-Gateway-User": "sam"})
    for n in (1, 2, 3):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": f"step {n}"}])
    _until_logged(db, "SELECT count(*) FROM requests WHERE session_id = ?", (SESSION,), 3)
    yield gw, db
    gw.stop()


def _sdk(gw, headers: dict | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{gw.url}/v1", max_retries=0, default_headers=headers or {})


def _until_logged(db, sql: str, params: tuple, n: int) -> None:
    until(lambda: db_rows(db, sql, params)[0][0] >= n, what=f"{n} rows for {sql}")


@pytest.fixture(scope="module")
def browser(server):
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def storage_state(server, browser, tmp_path_factory):
    """A logged-in admin session, reused by every test's fresh browser context."""
    gw, _ = server
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{gw.url}/admin/login/?next=/admin/logs/request/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/logs/request/")
    path = tmp_path_factory.mktemp("state") / "state.json"
    context.storage_state(path=str(path))
    context.close()
    return str(path)


class Visit:
    """A logged-in page that records every console error and uncaught error of every page it shows."""

    def __init__(self, browser, storage_state: str, base: str, width: int, height: int = 900) -> None:
        self.base = base
        self.errors: list[str] = []
        self.context = offline(browser.new_context(viewport={"width": width, "height": height},
                                                   storage_state=storage_state))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(f"console {m.type} on {self.page.url}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error on {self.page.url}: {e.stack or e}"))

    def go(self, path: str) -> None:
        response = self.page.goto(self.base + path)
        assert response.status == 200, f"{path}: {response.status}"

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"log-{name}.png"), full_page=True)

    def rows(self):
        return self.page.locator("#result_list tbody tr")

    def column(self, name: str) -> list[str]:
        return self.page.locator(f"#result_list tbody td.field-{name}").all_inner_texts()

    def filter_click(self, title: str, choice: str) -> None:
        """Click a choice in the filter sidebar (under the filter named `title`)."""
        block = self.page.locator("#changelist-filter details, #changelist-filter > ul").filter(
            has=self.page.locator(f"summary:text-is('By {title}'), h3:text-is('By {title}')"))
        with self.page.expect_navigation():
            block.get_by_role("link", name=choice, exact=True).click()


@pytest.fixture
def visit(server, browser, storage_state):
    gw, _ = server
    v = Visit(browser, storage_state, gw.url, 1440)
    yield v
    v.context.close()
    assert not v.errors, "\n".join(v.errors)


def test_failed_calls_for_a_model_in_the_last_hour(visit):
    visit.go("/admin/logs/request/")
    with visit.page.expect_navigation():
        visit.page.locator("#result_list td.field-model_name a.cell-filter").filter(
            has_text=re.compile(r"^gpt-4o$")).first.click()
    assert set(visit.column("model_name")) == {"gpt-4o"} and len(visit.column("model_name")) == 3
    visit.filter_click("status", "any error")
    visit.filter_click("time range", "last hour")
    assert "model=gpt-4o" in visit.page.url and "status=error" in visit.page.url and "since=1h" in visit.page.url
    statuses = visit.column("status")
    assert len(statuses) == 1 and statuses[0].startswith("500") and "server had an error" in statuses[0]
    visit.shot("01-failed-gpt-4o-last-hour")


def test_most_expensive_calls_today(visit):
    visit.go("/admin/logs/request/")
    visit.filter_click("time range", "last 24 hours")
    with visit.page.expect_navigation():
        visit.page.locator("#result_list thead th.column-cost a").first.click()  # ascending
    with visit.page.expect_navigation():
        visit.page.locator("#result_list thead th.column-cost a", has_text="cost").first.click()  # descending
    costs = visit.column("cost")
    assert costs[:3] == ["$0.42", "$0.05", "$0.0012"], costs
    assert "$3.50" not in costs  # two days ago
    assert visit.page.locator("#result_list td.field-cost").first.is_visible()
    visit.shot("02-most-expensive-last-24h")


def test_everything_a_user_did_this_week(visit):
    visit.go("/admin/logs/request/")
    with visit.page.expect_navigation():
        visit.page.locator("#result_list td.field-who a.cell-filter", has_text="ursula").first.click()
    assert len(visit.rows().all()) == 5
    visit.filter_click("time range", "last 7 days")
    assert "user=ursula" in visit.page.url and "since=7d" in visit.page.url
    who = visit.column("who")
    assert len(who) == 4 and all("ursula" in w for w in who)  # the one of ten days ago is out
    visit.shot("03-user-ursula-last-7-days")


def test_this_sessions_calls_in_order(visit):
    visit.go("/admin/logs/request/")
    with visit.page.expect_navigation():
        visit.page.locator("#result_list td.field-session a[title='this session in order']").first.click()
    assert "/session/?id=run-42" in visit.page.url
    steps = visit.page.locator("table.session-timeline tbody tr")
    assert steps.count() == 3
    assert "3" in visit.page.inner_text("table.session-totals")
    # In the order they were made: the first row's exchange asked "step 1".
    links = [steps.nth(i).locator("td a").first.get_attribute("href") for i in range(3)]
    visit.shot("04-session-in-order")
    for n, href in enumerate(links, 1):
        visit.go(href)
        assert f"step {n}" in visit.page.inner_text("#request")


def test_live_tail_shows_a_call_made_while_it_is_open(server, visit):
    gw, _ = server
    visit.go("/admin/logs/request/live/?user=lena")
    visit.page.wait_for_function("document.getElementById('live-state').textContent.startsWith('updated')")
    assert visit.page.locator("#live-rows tr").count() == 0
    visit.page.evaluate("window.sameDocument = true")  # gone if the page reloads
    sdk = _sdk(gw, {"X-Gateway-User": "lena", "X-Gateway-Session-Id": "tail-1"})
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "are you there?"}])
    row = visit.page.locator(f"#live-rows tr[data-id='{raw.headers['x-gateway-request-id']}']")
    row.wait_for(timeout=10000)  # no reload: the page polls its feed
    visit.page.wait_for_function(  # drawn as finished (it may first show as pending)
        "document.querySelector('#live-rows tr').children[2].textContent.startsWith('200')", timeout=10000)
    text = row.inner_text()
    assert visit.page.evaluate("window.sameDocument === true")
    assert "gpt-4o-mini" in text and "lena" in text and "tail-1" in text
    visit.shot("05-live-tail")


def test_live_rows_shorten_a_long_user_as_the_servers_cells_do(server, visit):
    """Drawn whole by the script, a 255-character user widened the column past the screen (the server's cells
    shorten it, whole on hover)."""
    gw, _ = server
    user = "lena-" + "x" * 250
    for path, rows, cell in (("/admin/logs/request/live/", "#live-rows tr", "td[data-label=user]"),
                             ("/admin/logs/request/", "#result_list tbody tr", "td.field-who")):
        visit.go(f"{path}?user={user}")
        if path == "/admin/logs/request/":
            visit.page.locator("#list-live").check()
        visit.page.wait_for_function("(document.getElementById('live-state') || document.getElementById("
                                     "'list-live-state')).textContent.startsWith('updated')")
        rid = _sdk(gw, {"X-Gateway-User": user}).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "long name"}]).headers["x-gateway-request-id"]
        row = visit.page.locator(f"{rows}[data-id='{rid}']")
        row.wait_for(timeout=10000)
        shown = row.locator(cell)
        assert shown.inner_text() == user[:27] + "…" and shown.get_attribute("title") == user, path


def _input_time(when) -> str:
    """A time as typed in a date-time input (UTC, to the second)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def test_custom_time_range_with_a_model_filter(visit):
    now = datetime.now(timezone.utc)
    visit.go("/admin/logs/request/")
    visit.filter_click("model", "gpt-4.1")
    assert sorted(visit.column("cost")) == ["$0.0012", "$0.05", "$0.42", "$3.50"]
    form = visit.page.locator("#changelist-filter form.time-range-form")
    assert "UTC" in form.inner_text()
    # From 100 minutes ago to a minute ago: the gpt-4.1 calls of 30 and 90 minutes ago, not 300 minutes or 2 days.
    form.locator("input[name=created_at__gte]").fill(_input_time(now - timedelta(minutes=100)))
    form.locator("input[name=created_at__lt]").fill(_input_time(now - timedelta(minutes=1)))
    with visit.page.expect_navigation():
        form.get_by_role("button", name="Apply").click()
    assert "model=gpt-4.1" in visit.page.url and "created_at__gte=" in visit.page.url
    assert sorted(visit.column("cost")) == ["$0.0012", "$0.42"]
    assert "Custom time range from" in visit.page.inner_text("p.time-range-note")
    assert "selected" in form.locator("xpath=..").get_attribute("class")
    visit.shot("12-custom-range-gpt-4.1")
    # "to" before "from": the page says so, the range is not applied, the model filter still is.
    form.locator("input[name=created_at__lt]").fill(_input_time(now - timedelta(hours=3)))
    with visit.page.expect_navigation():
        form.get_by_role("button", name="Apply").click()
    assert "is not after" in visit.page.inner_text("#changelist p.errornote")
    assert len(visit.column("cost")) == 4
    visit.shot("13-custom-range-refused")
    with visit.page.expect_navigation():
        visit.page.locator("#changelist-filter a.time-range-clear").click()
    assert "created_at" not in visit.page.url and "model=gpt-4.1" in visit.page.url
    assert visit.page.locator("p.time-range-note, p.errornote").count() == 0


def test_live_switch_on_the_list(server, visit):
    gw, db = server
    feed_calls = []
    visit.page.on("request", lambda r: feed_calls.append(r.url) if "/live/feed/" in r.url else None)
    visit.go("/admin/logs/request/?user=lisa")
    assert visit.rows().count() == 0
    live, state = visit.page.locator("#list-live"), visit.page.locator("#list-live-state")
    live.check()
    visit.page.wait_for_function("document.getElementById('list-live-state').textContent.startsWith('updated')")
    visit.page.evaluate("window.sameDocument = true")  # gone if the page reloads
    other = _sdk(gw, {"X-Gateway-User": "not-lisa"}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "someone else"}]).headers["x-gateway-request-id"]
    mine = _sdk(gw, {"X-Gateway-User": "lisa", "X-Gateway-Session-Id": "list-tail"}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "are you there?"}]).headers["x-gateway-request-id"]
    row = visit.page.locator(f"#result_list tbody tr[data-id='{mine}']")
    row.wait_for(timeout=10000)  # no reload: the switch polls the live tail's feed
    visit.page.wait_for_function(  # drawn as finished (it may first show as pending)
        f"document.querySelector(\"#result_list tr[data-id='{mine}'] td.field-status\").textContent.startsWith('200')",
        timeout=10000)
    assert visit.page.evaluate("window.sameDocument === true")
    assert "gpt-4o-mini" in row.inner_text() and "lisa" in row.inner_text() and "list-tail" in row.inner_text()
    _until_logged(db, "SELECT count(*) FROM requests WHERE id = ?", (other,), 1)
    assert visit.page.locator(f"#result_list tr[data-id='{other}']").count() == 0  # the list's user filter applies
    visit.shot("14-list-live-on")
    # The switch stays on across the list's own navigation.
    visit.filter_click("time range", "last hour")
    assert live.is_checked()
    visit.page.wait_for_function("document.getElementById('list-live-state').textContent.startsWith('updated')")
    assert row.count() == 1  # now drawn by the server
    # Off: no more polling, and a new call does not appear until the page is loaded again.
    live.uncheck()
    polls = len(feed_calls)
    later = _sdk(gw, {"X-Gateway-User": "lisa"}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still there?"}]).headers["x-gateway-request-id"]
    _until_logged(db, "SELECT count(*) FROM requests WHERE id = ?", (later,), 1)
    visit.page.wait_for_timeout(2500)  # two poll periods: absence has no event to wait on
    assert visit.page.locator(f"#result_list tr[data-id='{later}']").count() == 0 and len(feed_calls) <= polls + 1
    assert state.inner_text() == ""
    visit.page.reload()
    assert not live.is_checked()
    assert visit.page.locator(f"#result_list a[href*='{later}']").count() + visit.page.locator(
        f"#result_list a[href*='{str(uuid.UUID(later))}']").count() == 1


def test_replay_with_an_edited_body(server, visit):
    gw, db = server
    original = _sdk(gw, {"X-Gateway-User": "rita"}).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "first try"}]).headers["x-gateway-request-id"]
    _until_logged(db, "SELECT count(*) FROM requests WHERE id = ?", (original,), 1)
    visit.go(f"/admin/logs/request/{original}/change/")
    with visit.page.expect_navigation():
        visit.page.get_by_role("link", name="Replay…").click()
    body = json.loads(visit.page.input_value("#replay-body"))
    body["messages"][0]["content"] = "second try"
    visit.page.fill("#replay-body", json.dumps(body, indent=2))
    visit.page.fill("input[name=provider_key]", KEY)
    with visit.page.expect_navigation():
        visit.page.click("#content-main button[type=submit]")
    assert "The gateway answered 200" in visit.page.inner_text("#replay-result")
    visit.shot("06-replay-answered")
    new_id = visit.page.inner_text("#replay-result a code")
    _until_logged(db, "SELECT count(*) FROM requests WHERE id = ?", (new_id,), 1)
    with visit.page.expect_navigation():
        visit.page.click("#replay-result a")
    assert "second try" in visit.page.inner_text("#request")
    assert original in visit.page.inner_text("#content-main")  # the replay-of metadata names the original
    visit.shot("07-replay-logged-as-new-exchange")
    (meta,) = db_rows(db, "SELECT metadata FROM requests WHERE id = ?", (new_id,))[0]
    assert json.loads(meta) == {"replay-of": original}


def test_spend_per_key_and_the_dashboard_cost_chart_lead_to_the_list(visit):
    visit.go("/admin/logs/request/spend/?range=7d")
    keys = visit.page.locator("section.spend-key tbody tr")
    row = keys.filter(has_text="a1b2c3d4e5f6")
    assert "$0.4712" in row.inner_text()  # the three priced calls of the last 24 hours
    visit.shot("10-spend-last-7-days")
    with visit.page.expect_navigation():
        row.locator("a").click()
    assert sorted(visit.column("cost")) == ["$0.0012", "$0.05", "$0.42"]
    visit.go("/admin/logs/request/dashboard/?window=24h")
    cost = visit.page.locator("figure.chart").filter(has=visit.page.locator("figcaption", has_text="ost"))
    assert cost.count() >= 1
    visit.shot("11-dashboard-24h")
    link = cost.first.locator("a >> visible=true").last  # the newest hour with a cost (empty hours have no bar)
    with visit.page.expect_navigation():
        link.click()
    assert "/admin/logs/request/?" in visit.page.url and visit.rows().count() >= 1


def _first_exchange(db) -> str:
    return db_rows(db, "SELECT id FROM requests WHERE session_id = ? ORDER BY created_at", (SESSION,))[0][0]


MOBILE_PAGES = [
    ("list", "/admin/logs/request/"),
    ("list-filtered", "/admin/logs/request/?since=7d&status=error"),
    ("exchange", None),
    ("exchange-long-body", "long"),
    ("dashboard", "/admin/logs/request/dashboard/"),
    ("spend", "/admin/logs/request/spend/"),
    ("session", f"/admin/logs/request/session/?id={SESSION}"),
    ("live", "/admin/logs/request/live/"),
    ("replay", "replay"),
    ("held-requests", "/admin/hold/heldrequest/"),
]


def _held_call(v: Visit, gw) -> Background:
    """An SDK call that waits on the held requests page. The proxy reads the switch at most a second
    late, so a call made just after turning hold on may pass: then make another."""
    approve = v.page.locator("#held-list tbody tr button[data-decision=approve]")
    for _ in range(20):
        call = Background(lambda: _sdk(gw).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "held on a phone"}]))
        until(lambda: call.done or approve.count(), timeout=15, what="the call held or answered")
        if not call.done:
            approve.wait_for(timeout=10000)
            return call
    raise AssertionError("no call was held")


WIDE_ELEMENTS = """[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth)
    .slice(-3).map(e => `${e.tagName.toLowerCase()}.${e.className}: ${Math.round(e.getBoundingClientRect().right)}`)"""


def test_no_page_overflows_sideways_at_390px(server, browser, storage_state):
    gw, db = server
    first = _first_exchange(db)
    (long_id,) = db_rows(db, "SELECT id FROM requests WHERE length(body) > 3000")[0]
    # A fresh call with long names, so the live tail has a row to fit too.
    _sdk(gw, {"X-Gateway-User": "someone.with.a.rather.long.address@example.com",
              "X-Gateway-Session-Id": "checkout-agent-run-" + "7" * 48}).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    v = Visit(browser, storage_state, gw.url, 390, 844)
    try:
        overflowing = {}
        for name, path in MOBILE_PAGES:
            path = {None: f"/admin/logs/request/{first}/change/", "long": f"/admin/logs/request/{long_id}/change/",
                    "replay": f"/admin/logs/request/{first}/replay/"}.get(path, path)
            v.go(path)
            if name == "live":  # its rows are drawn by script: measure after the first poll
                v.page.locator("#live-rows tr").first.wait_for()
            held = None
            if name == "held-requests":  # with a request waiting, its decision buttons and all
                v.page.click("#hold-switch")
                v.page.wait_for_function("document.querySelector('#hold-switch .state').textContent === 'on'")
                held = _held_call(v, gw)
            widths = v.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if widths[0] > widths[1]:  # name the widest culprits, for whoever fixes it
                overflowing[name] = widths + v.page.evaluate(WIDE_ELEMENTS)
            v.shot(f"08-mobile-{name}")
            if held is not None:
                v.page.locator("#held-list tbody tr button[data-decision=approve]").click()
                held_answer = held.wait()
                assert held_answer.choices[0].message.content
                v.page.click("#held-switch .turn-off")
                v.page.wait_for_function("document.querySelector('#held-switch .state').textContent === 'off'")
        assert not overflowing, f"pages wider than the 390 px screen (scrollWidth, innerWidth): {overflowing}"
    finally:
        v.context.close()
    assert not v.errors, "\n".join(v.errors)


def test_default_columns_fit_1440px(visit):
    visit.go("/admin/logs/request/")
    table = visit.page.locator("#result_list")
    headers = table.locator("thead th").all_inner_texts()
    for name in ("time", "model", "status", "latency", "tokens", "cost", "key / user", "session"):
        assert any(h.strip().lower() == name for h in headers), (name, headers)
    right = visit.page.evaluate("Math.max(...[...document.querySelectorAll('#result_list thead th')]"
                                ".map(th => th.getBoundingClientRect().right))")
    assert right <= 1440, f"the last column ends at {right} px"
    assert visit.page.evaluate("document.documentElement.scrollWidth") <= 1440
    wrapper = visit.page.evaluate("(() => { const w = document.querySelector('#result_list').parentElement;"
                                  " return [w.scrollWidth, w.clientWidth]; })()")
    assert wrapper[0] <= wrapper[1], f"the list scrolls sideways inside its box: {wrapper}"
    visit.shot("09-list-1440px")
