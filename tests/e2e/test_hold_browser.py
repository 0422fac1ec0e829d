"""A real browser on a two-worker server: the hold switch on the exchange list, the badge, the Held requests
page updating itself, a click that approves, an edited body (checked as JSON), a content-policy click.

Screenshots go to test-artifacts/. Needs real seconds: two worker processes start, and the page polls
every second.
"""

import json
import os
import subprocess
import sys

import httpx
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
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
AUTH = {"Authorization": "Bearer sk-" + "browserHOLDkey0123456789abc"}


@pytest.fixture
def server(request, tmp_path, tmp_path_factory, mock_upstream):
    """A two-worker gateway with an admin user; parametrized indirectly, request.param is more environment."""
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    env = {**proc_env(data, mock_upstream.url), "DJANGO_SUPERUSER_PASSWORD": PASSWORD}
    subprocess.run([sys.executable, "manage.py", "createsuperuser", "--noinput", "--username", "admin",
                    "--email", "admin@example.com"], cwd=ROOT, env=env, check=True, timeout=60, capture_output=True)
    gw = GatewayProcess(data, mock_upstream.url, workers=2, **getattr(request, "param", {}))
    mock_upstream.mock.received.clear()
    yield gw, db
    gw.stop()


@pytest.fixture
def page():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield offline(browser.new_context(viewport={"width": 1400, "height": 900})).new_page()
        browser.close()


def _post(gw, body=CHAT) -> Background:
    return Background(lambda: httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30))


def _login(page, gw, path: str) -> None:
    """Sign in as the admin through the login form, landing on path."""
    page.goto(f"{gw.url}{path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")


def test_switch_badge_page_and_decisions_by_click(server, page, mock_upstream):
    gw, db = server
    ARTIFACTS.mkdir(exist_ok=True)
    _login(page, gw, "/admin/logs/request/")

    # The switch on the exchange list (it is on every admin page).
    page.wait_for_function("document.querySelector('#hold-switch .state').textContent === 'off'")
    page.click("#hold-switch")
    page.wait_for_function("document.querySelector('#hold-switch .state').textContent === 'on'")
    assert db_rows(db, "SELECT \"on\", changed_by FROM hold_switch") == [(1, "admin")]

    # A request arrives: the badge counts it (and pulses) within about a second, and beeps.
    first = _post(gw)
    page.wait_for_function("document.querySelector('#hold-badge .count').textContent === '1'", timeout=5000)
    assert "busy" in page.get_attribute("#hold-badge", "class")
    page.wait_for_function("document.body.dataset.holdBeeps === '1'")
    page.screenshot(path=str(ARTIFACTS / "hold-01-badge-on-exchange-list.png"))

    # The Held requests page lists it, with the time waited and the time left, and updates itself.
    page.click("#hold-badge")
    page.wait_for_selector("#held-list tbody tr")
    second = _post(gw, {**CHAT, "seed": 9007199254740993, "messages": [{"role": "user", "content": "edit me"}]})
    page.wait_for_function("document.querySelectorAll('#held-list tbody tr').length === 2", timeout=5000)
    row = page.locator("#held-list tbody tr").first
    waited, left = float(row.locator("td.waited").inner_text().split()[0]), float(
        row.locator("td.left").inner_text().split()[0])
    assert waited >= 0 and 0 < left <= 60
    page.wait_for_function(f"parseFloat(document.querySelector('#held-list tbody tr td.waited').textContent) > {waited}")
    page.screenshot(path=str(ARTIFACTS / "hold-02-held-requests-page.png"), full_page=True)

    # A click approves the first; its client gets the upstream's answer.
    page.locator("#held-list tbody tr").first.locator("button[data-decision=approve]").click()
    r = first.wait()
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    page.wait_for_function("document.querySelectorAll('#held-list tbody tr').length === 1", timeout=5000)

    # Edit: invalid JSON is refused in the page; a valid body is forwarded instead.
    page.locator("#held-list tbody tr").first.locator("button[data-decision=edit]").click()
    assert page.evaluate("document.activeElement === document.querySelector('#held-editor textarea')")
    page.keyboard.press("Escape")  # closes it; opened again below
    assert page.evaluate("document.querySelector('#held-editor').hidden")
    page.locator("#held-list tbody tr").first.locator("button[data-decision=edit]").click()
    # The body is read when the editor opens (the polled state leaves bodies out).
    page.wait_for_function("document.querySelector('#held-editor textarea').value !== ''", timeout=5000)
    # Opened as it came when indenting would change a value (a double cannot hold this seed: it became ...992).
    assert "9007199254740993" in page.input_value("#held-editor textarea")
    page.fill("#held-editor textarea", "{not json")
    page.click("#held-editor .send")
    assert "Not valid JSON" in page.inner_text("#held-editor .error")
    edited = {**CHAT, "messages": [{"role": "user", "content": "edited in the browser"}]}
    page.fill("#held-editor textarea", json.dumps(edited, indent=2))
    page.screenshot(path=str(ARTIFACTS / "hold-03-edit-body.png"), full_page=True)
    page.click("#held-editor .send")
    assert second.wait().status_code == 200
    assert json.loads(mock_upstream.mock.received[-1].body) == edited

    # The provider's content-policy answer, by click. The list must first drop the edited request: until the
    # page's next poll it may still show that row alone, and a click there would decide nothing.
    page.wait_for_function("document.querySelectorAll('#held-list tbody tr').length === 0", timeout=5000)
    third = _post(gw)
    page.wait_for_function("document.querySelectorAll('#held-list tbody tr').length === 1", timeout=5000)
    # A press held across the page's next poll still clicks: the poll updates the row in place.
    button = page.locator("#held-list tbody tr").first.locator("button[data-decision=content-policy]")
    box = button.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    waited = page.inner_text("#held-list tbody tr td.waited")
    page.wait_for_function(f"document.querySelector('#held-list tbody tr td.waited').textContent !== '{waited}'")
    page.mouse.up()
    r = third.wait()
    assert r.status_code == 400 and r.json()["error"]["code"] == "content_policy_violation"
    page.wait_for_function("document.querySelectorAll('#held-recent tbody tr').length === 3", timeout=5000)
    assert "admin" in page.inner_text("#held-recent")
    page.wait_for_function("document.querySelector('#hold-badge .count').textContent === '0'")

    # Decided elsewhere while being edited: the editor keeps the text and says why it cannot be sent.
    fourth = _post(gw)
    page.wait_for_function("document.querySelectorAll('#held-list tbody tr').length === 1", timeout=5000)
    edit = page.locator("#held-list tbody tr").first.locator("button[data-decision=edit]")
    rid = edit.get_attribute("data-id")
    edit.click()
    page.fill("#held-editor textarea", '{"kept": "my edit"}')
    subprocess.run([sys.executable, "manage.py", "hold", "decide", rid, "reject-400"], cwd=ROOT, check=True,
                   env=proc_env(gw.data_dir, mock_upstream.url), capture_output=True, timeout=60)
    page.wait_for_function("document.querySelector('#held-editor .error').textContent.includes('no longer waiting')",
                           timeout=5000)
    assert page.input_value("#held-editor textarea") == '{"kept": "my edit"}'
    assert page.evaluate("document.querySelector('#held-editor .send').disabled")
    assert fourth.wait().status_code == 400

    # Muting is remembered; turning hold off from the page.
    page.click("#hold-mute")
    assert page.evaluate("localStorage.getItem('holdMuted')") == "1"
    page.click("#held-switch .turn-off")
    page.wait_for_function("document.querySelector('#held-switch .state').textContent === 'off'")
    page.screenshot(path=str(ARTIFACTS / "hold-04-decided.png"), full_page=True)
    decided = db_rows(db, "SELECT decision, decided_by, edited_body IS NOT NULL FROM hold_requests ORDER BY held_at")
    assert decided[:3] == [("approve", "admin", 0), ("approve", "admin", 1), ("content-policy", "admin", 0)]
    assert decided[3][0] == "reject-400"
    until(lambda: len(db_rows(db, "SELECT id FROM responses")) == 4, what="four exchanges logged")


@pytest.mark.parametrize("server", [{"DATA_UPLOAD_MAX_MEMORY_SIZE": "1000", "MAX_REQUEST_BODY_BYTES": "5000"}],
                         indirect=True)
def test_an_edited_body_too_large_is_refused_on_the_page_and_one_past_the_form_cap_goes(server, page, mock_upstream):
    """Sent as a form field, an edited body over DATA_UPLOAD_MAX_MEMORY_SIZE got Django's bare HTML 400: the page
    said "HTTP 400". Now only MAX_REQUEST_BODY_BYTES bounds it, as it does the CLI's --body-file and a client."""
    gw, db = server
    _login(page, gw, "/admin/hold/heldrequest/")
    page.click("#held-switch .turn-on")
    page.wait_for_function("document.querySelector('#held-switch .state').textContent === 'on'")
    held = _post(gw)
    page.wait_for_selector("#held-list tbody tr button[data-decision=edit]", timeout=5000)
    page.click("#held-list tbody tr button[data-decision=edit]")
    alerts = []
    page.on("dialog", lambda d: (alerts.append(d.message), d.dismiss()))
    too_large = json.dumps({**CHAT, "pad": "x" * 6000})
    page.fill("#held-editor textarea", too_large)
    with page.expect_response("**/decide/") as answer:
        page.click("#held-editor .send")
    assert answer.value.status == 400 and answer.value.headers["content-type"] == "application/json"
    page.wait_for_function("document.querySelector('#held-editor .error').textContent !== ''", timeout=5000)
    assert not alerts and page.inner_text("#held-editor .error") == (
        f"the edited body ({len(too_large)} bytes) is larger than MAX_REQUEST_BODY_BYTES (5000 bytes), which a "
        "client's request may not exceed either: raise MAX_REQUEST_BODY_BYTES in the gateway's environment to send "
        "a larger one")
    assert not page.evaluate("document.querySelector('#held-editor').hidden")  # the text stays, to shorten
    assert db_rows(db, "SELECT decision FROM hold_requests") == [("",)] and not held.done
    edited = {**CHAT, "pad": "é" * 1500}  # 3,000 bytes: past the admin's form cap, within a client's limit
    page.fill("#held-editor textarea", json.dumps(edited, ensure_ascii=False))
    page.click("#held-editor .send")
    assert held.wait().status_code == 200
    assert json.loads(mock_upstream.mock.received[-1].body) == edited
    assert db_rows(db, "SELECT decision, edited_body IS NOT NULL FROM hold_requests") == [("approve", 1)]
