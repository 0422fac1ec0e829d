"""The hold queue's admin endpoints: who may see and decide, and what they answer."""

import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from hold.models import HeldRequest
from hold.services import switch_set

pytestmark = pytest.mark.django_db

STATE, SWITCH, DECIDE = "/admin/hold/heldrequest/state.json", "/admin/hold/heldrequest/switch/", \
    "/admin/hold/heldrequest/decide/"


def _held(rid="a" * 32, body='{"model": "m"}', **kw) -> HeldRequest:
    now = timezone.now()
    return HeldRequest.objects.create(id=rid, provider="openai", method="POST", path="/v1/chat/completions",
                                      model="m", body=body, body_size=len(body or ""), held_at=now - timedelta(seconds=3),
                                      deadline=now + timedelta(seconds=57), **kw)


def _staff(client, *perms: str):
    user = User.objects.create_user("op", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client.force_login(user)
    return client


def test_state_lists_waiting_requests_with_time_waited_and_left(admin_client):
    switch_set(on=True, by="t", model="m")
    _held()
    _held("b" * 32, decision="approve", decided_by="x", decided_at=timezone.now())
    state = admin_client.get(STATE).json()
    assert state["on"] and state["filters"] == {"model": "m"} and state["count"] == 1
    [w] = state["waiting"]
    assert w["id"] == "a" * 32 and 2.5 <= w["waited_s"] <= 10 and 50 <= w["left_s"] <= 57.5
    assert [d["id"] for d in state["recent"]] == ["b" * 32]
    newest = HeldRequest.objects.get(pk="a" * 32).held_at.isoformat()
    assert admin_client.get(STATE + "?brief=1").json() == {"on": True, "filters": {"model": "m"}, "count": 1,
                                                           "newest": newest}


def test_the_newest_arrival_moves_on_when_one_leaves_as_another_comes(admin_client):
    """The badge beeps on a new arrival: by the count alone, one request leaving as another came went unheard."""
    _held()
    first = admin_client.get(STATE + "?brief=1").json()
    HeldRequest.objects.filter(pk="a" * 32).update(decision="approve", decided_by="x", decided_at=timezone.now())
    came = _held("c" * 32)
    HeldRequest.objects.filter(pk=came.pk).update(held_at=timezone.now())
    second = admin_client.get(STATE + "?brief=1").json()
    assert first["count"] == second["count"] == 1 and second["newest"] > first["newest"]


def test_decide_validates_the_edited_body(admin_client):
    _held()
    r = admin_client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": "[1, 2"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    r = admin_client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": json.dumps({"model": "x"})})
    assert r.status_code == 200 and r.json() == {"decision": "approve", "by": "admin", "edited": True}
    assert admin_client.post(DECIDE, {"id": "a" * 32, "decision": "reject-400"}).status_code == 400


def test_an_edited_body_past_the_admins_form_cap_goes_and_one_past_a_clients_limit_is_refused(admin_client, settings):
    """The page sends the edited body as a file, as the CLI reads one: MAX_REQUEST_BODY_BYTES alone bounds it. As a
    form field, a body over DATA_UPLOAD_MAX_MEMORY_SIZE got Django's bare HTML 400 and the page said "HTTP 400"."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE, settings.MAX_REQUEST_BODY_BYTES = 1000, 5000
    _held()
    big = json.dumps({"model": "m", "pad": "x" * 6000})
    r = admin_client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": SimpleUploadedFile("body.json",
                                                                                                      big.encode())})
    assert r.status_code == 400 and r.json()["error"] == (
        f"the edited body ({len(big)} bytes) is larger than MAX_REQUEST_BODY_BYTES (5000 bytes), which a client's "
        "request may not exceed either: raise MAX_REQUEST_BODY_BYTES in the gateway's environment to send a larger one")
    assert HeldRequest.objects.get(pk="a" * 32).decision == ""  # still waiting, to decide again
    edited = json.dumps({"model": "m", "pad": "é" * 1000}, ensure_ascii=False)  # past the form cap, within the limit
    r = admin_client.post(DECIDE, {"id": "a" * 32, "decision": "approve",
                                   "body": SimpleUploadedFile("body.json", edited.encode())})
    assert r.status_code == 200 and r.json()["edited"] is True
    assert HeldRequest.objects.get(pk="a" * 32).edited_body == edited


@pytest.mark.parametrize("rid", ["", "nothex", "a" * 31 + "\x00", "a" * 33])
def test_decide_says_what_a_request_id_is(admin_client, rid):
    """A NUL in the id was a 500 on PostgreSQL (its text refuses NUL); any other malformed one "no held request"."""
    r = admin_client.post(DECIDE, {"id": rid, "decision": "approve"})
    assert r.status_code == 400 and "is not a request id: 32 hex digits" in r.json()["error"]


def test_view_only_staff_may_look_but_not_decide_or_switch(client):
    _held()
    staff = _staff(client, "view_heldrequest")
    assert staff.get(STATE).status_code == 200
    assert staff.get("/admin/hold/heldrequest/").status_code == 200
    assert staff.post(DECIDE, {"id": "a" * 32, "decision": "approve"}).status_code == 403
    assert staff.post(SWITCH, {"on": "1"}).status_code == 403
    page = staff.get("/admin/").content.decode()  # the switch's state, shown as text: no button that does nothing
    assert '<span id="hold-switch" class="readonly"' in page and '<button type="button" id="hold-switch"' not in page
    assert HeldRequest.objects.get().decision == ""


def test_staff_without_the_permission_see_nothing(client):
    staff = _staff(client)
    assert staff.get(STATE).status_code == 403
    assert "hold-badge" not in staff.get("/admin/").content.decode()


def test_the_badge_and_switch_are_on_every_admin_page(admin_client):
    page = admin_client.get("/admin/logs/request/").content.decode()
    assert 'id="hold-badge"' in page and 'id="hold-switch"' in page


def test_the_switch_refuses_filters_that_could_never_match(admin_client):
    r = admin_client.post(SWITCH, {"on": "1", "provider": "opnai"})
    assert r.status_code == 400 and "unknown provider 'opnai'" in r.json()["error"]
    assert admin_client.get(STATE).json()["on"] is False
    # Longer than the switch's columns: PostgreSQL refused the row with a 500, SQLite kept it whole.
    for field, value in (("model", "m" * 256), ("path", "/" + "p" * 1024)):
        r = admin_client.post(SWITCH, {"on": "1", field: value})
        assert r.status_code == 400 and "longer than" in r.json()["error"], (field, r.content[:200])
    for field in ("provider", "model", "key", "path"):  # PostgreSQL's text refuses a NUL: a 500
        r = admin_client.post(SWITCH, {"on": "1", field: "/a\x00b"})
        assert r.status_code == 400 and "NUL character" in r.json()["error"], (field, r.content[:200])
    # Read as globs they held nothing, and said nothing.
    for field, value in (("model", "gpt-4o*"), ("path", "/v1/*/completions")):
        r = admin_client.post(SWITCH, {"on": "1", field: value})
        assert r.status_code == 400 and "not a pattern" in r.json()["error"], (field, r.content[:200])
    r = admin_client.post(SWITCH, {"on": "1", "provider": "anthropic", "path": "/v1/messages"})
    assert r.status_code == 200 and r.json()["filters"] == {"provider": "anthropic", "path": "/v1/messages"}


def _csrf_client(client):
    """A logged-in admin whose posts pass CSRF as the page's do (the test client skips the check by default, and
    with it the CSRF middleware's read of the post before the view)."""
    client.handler.enforce_csrf_checks = True
    client.force_login(User.objects.create_superuser("boss", password="pw"))
    page = client.get("/admin/hold/heldrequest/").content.decode()
    return page.split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]


def test_an_edited_body_posted_as_a_field_past_the_form_cap_is_refused_with_a_reason_and_the_request_waits(
        client, settings):
    """A script's edited body as a plain form field over DATA_UPLOAD_MAX_MEMORY_SIZE got Django's HTML "Bad
    Request" page (RequestDataTooBig, raised in the CSRF middleware before the view ran)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    token = _csrf_client(client)
    _held()
    big = json.dumps({"model": "m", "pad": "x" * 2000})
    r = client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": big}, headers={"X-CSRFToken": token})
    assert r.status_code == 413 and r.json()["error"].startswith(
        "the post is larger than DATA_UPLOAD_MAX_MEMORY_SIZE (1000 bytes), the limit of a form field: send the "
        "edited body as a file")
    assert HeldRequest.objects.get(pk="a" * 32).decision == ""  # still waiting
    small = json.dumps({"model": "x"})
    assert client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": small}).status_code == 403  # CSRF
    r = client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": small}, headers={"X-CSRFToken": token})
    assert r.status_code == 200 and HeldRequest.objects.get(pk="a" * 32).edited_body == small


def test_an_uploaded_edit_past_the_limit_is_refused_before_more_than_the_limit_is_spooled(
        client, settings, monkeypatch):
    """The whole upload went to a temporary file (past FILE_UPLOAD_MAX_MEMORY_SIZE) before its size was checked."""
    from django.core.files.uploadhandler import TemporaryFileUploadHandler
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE, settings.MAX_REQUEST_BODY_BYTES = 1000, 300_000
    spooled = []
    real = TemporaryFileUploadHandler.receive_data_chunk
    monkeypatch.setattr(TemporaryFileUploadHandler, "receive_data_chunk",
                        lambda self, data, start: spooled.append(len(data)) or real(self, data, start))
    token = _csrf_client(client)
    _held()
    big = json.dumps({"model": "m", "pad": "x" * 2_000_000}).encode()
    r = client.post(DECIDE, {"id": "a" * 32, "decision": "approve", "body": SimpleUploadedFile("body.json", big)},
                    headers={"X-CSRFToken": token})
    assert 0 < sum(spooled) <= 300_000  # what reached the disk spool: no more than the limit
    assert r.status_code == 400 and r.json()["error"] == (
        f"the edited body ({len(big)} bytes) is larger than MAX_REQUEST_BODY_BYTES (300000 bytes), which a client's request may not "
        "exceed either: raise MAX_REQUEST_BODY_BYTES in the gateway's environment to send a larger one")
    assert HeldRequest.objects.get(pk="a" * 32).decision == ""
    within = json.dumps({"model": "m", "pad": "y" * 200_000})  # spooled to disk too, and taken whole
    r = client.post(DECIDE, {"id": "a" * 32, "decision": "approve",
                             "body": SimpleUploadedFile("body.json", within.encode())}, headers={"X-CSRFToken": token})
    assert r.status_code == 200 and HeldRequest.objects.get(pk="a" * 32).edited_body == within


def test_the_polled_state_leaves_the_bodies_out_and_the_editor_reads_one_when_it_opens(client):
    """state.json, polled every second by the page, carried every waiting body (up to 200 of up to 256 KiB): 51 MB
    a second for a full queue."""
    _staff(client, "view_heldrequest")
    for i in range(5):
        _held(f"{i:032x}", body=json.dumps({"model": "m", "pad": "x" * 200_000}))
    _held("f" * 32, body="x" * (300 * 1024))  # past what the page edits
    state = client.get(STATE)
    assert len(state.content) < 5000 and len(state.json()["waiting"]) == 6
    assert [w["editable"] for w in state.json()["waiting"]] == [True] * 5 + [False]
    r = client.get("/admin/hold/heldrequest/body.json", {"id": f"{3:032x}"})
    assert r.status_code == 200 and r.json() == {"body": json.dumps({"model": "m", "pad": "x" * 200_000})}
    for rid in ("f" * 32, "e" * 32, "zz"):  # too large to edit here, none such, not an id
        r = client.get("/admin/hold/heldrequest/body.json", {"id": rid})
        assert r.status_code == 404 and "no longer waiting, or has no body to edit here" in r.json()["error"]
    HeldRequest.objects.filter(pk=f"{3:032x}").update(decision="approve", decided_by="x", decided_at=timezone.now())
    assert client.get("/admin/hold/heldrequest/body.json", {"id": f"{3:032x}"}).status_code == 404
    assert len(client.get(STATE).content) < 5000  # a decided one's body is not sent either
