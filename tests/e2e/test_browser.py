"""A real browser (Playwright + Debian's Chromium) logs in, filters the list and opens an exchange."""

import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

# Anything not on 127.0.0.1 is refused. A pattern, not a Python predicate: the browser matches it itself, so
# the page's own requests are never held for the sync API's callback (which runs only while the test is inside a
# Playwright call, not while it waits on a thread: a decision posted by a click then waited on, unsent).
OFFLINE = re.compile(r"^(?!https?://127\.0\.0\.1[:/])")


def offline(context):
    """The browser context, refusing every request that is not to 127.0.0.1."""
    context.route(OFFLINE, lambda route: route.abort())
    return context


try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the playwright Python package is not installed"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def browser_page():
    """A Chromium page that may only reach 127.0.0.1."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = offline(browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()
        yield page
        browser.close()


@pytest.fixture
def seeded(gateway):
    """A superuser and six exchanges, one of them with an image (made before the browser starts:
    Playwright's sync API runs an event loop in this thread, where Django refuses DB calls)."""
    from django.contrib.auth.models import User

    from tests.logs.factory import PNG, exchange_make, file_attach, streamed_chat

    User.objects.create_superuser("admin", "admin@example.com", "correct horse battery")
    for _ in range(3):
        exchange_make(tokens=(120, 80))
    streamed_chat()
    exchange_make(status=429, model="gpt-4o", tokens=(40, 0))
    image = exchange_make(endpoint="/v1/images/generations", model="gpt-image-1",
                          body={"model": "gpt-image-1", "prompt": "a red square", "response_format": "b64_json"},
                          resp_body={"created": 1, "data": [{"b64_json": {"$gateway_file": "see files"}}]})
    file_attach(image, PNG, "image/png", ".png")
    return gateway


def test_login_filter_open_exchange_with_image(seeded, browser_page):
    gateway = seeded
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser_page

    page.goto(f"{gateway.url}/admin/logs/request/")
    assert "/admin/login/" in page.url  # anonymous users are sent to the login page
    page.fill("#id_username", "admin")
    page.fill("#id_password", "correct horse battery")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/logs/request/")
    assert page.locator("#result_list tbody tr").count() == 6
    page.screenshot(path=str(ARTIFACTS / "01-exchange-list.png"), full_page=True)

    page.click("#changelist-filter a[href*='files=yes']")
    page.wait_for_url("**files=yes**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1 and "images/generations" in rows.first.inner_text()
    page.screenshot(path=str(ARTIFACTS / "02-filtered-has-files.png"), full_page=True)

    rows.first.locator("th a").click()
    page.wait_for_selector("#files img")
    # The <img> is in the DOM before its bytes arrive: wait for the load to finish (or fail).
    page.wait_for_function("() => document.querySelector('#files img').complete")
    width = page.eval_on_selector("#files img", "img => img.naturalWidth")
    assert width == 4  # the 4x4 PNG really came through the staff-only file view
    assert "a red square" in page.inner_text("#request")
    page.screenshot(path=str(ARTIFACTS / "03-exchange-with-image.png"), full_page=True)

    page.goto(f"{gateway.url}/admin/logs/request/dashboard/?window=24h")
    assert page.locator("figure.chart svg").count() == 6
    page.screenshot(path=str(ARTIFACTS / "04-dashboard.png"), full_page=True)


def test_the_browser_reaches_only_127_0_0_1(gateway, browser_page):
    """The refusal is the route's (ERR_FAILED), not a name that did not resolve; the gateway is reached."""
    failures = []
    browser_page.on("requestfailed", lambda r: failures.append((r.url, r.failure)))
    assert browser_page.goto(f"{gateway.url}/health").status == 200
    browser_page.evaluate("fetch('http://gateway-test.invalid/x').catch(() => null)")
    browser_page.wait_for_function("true")  # lets the failure event reach Python
    assert failures == [("http://gateway-test.invalid/x", "net::ERR_FAILED")]
