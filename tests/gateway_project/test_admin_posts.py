"""Posts to Django's pages through the real ASGI stack: one larger than any admin page sends is refused unread."""

import tempfile

import django.core.handlers.asgi
import httpx


def test_a_post_larger_than_any_admin_page_sends_is_refused_before_it_is_spooled(gateway, settings, monkeypatch):
    """Django's ASGI handler spools a whole body to a temporary file before any view or upload handler runs: a 2 MB
    post to the hold queue's decide/ with a 5,000-byte edit limit was written to disk whole, then refused."""
    settings.MAX_REQUEST_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5000, 1000
    spooled = []

    class Spool(tempfile.SpooledTemporaryFile):  # Django's body file, its writes counted
        def write(self, data):
            spooled.append(len(data))
            return super().write(data)

    monkeypatch.setattr(django.core.handlers.asgi.tempfile, "SpooledTemporaryFile", Spool)
    url = f"{gateway.url}/admin/hold/heldrequest/decide/"
    largest = 5000 + 1000 + 64 * 1024
    r = httpx.post(url, files={"body": ("body.json", b"x" * 2_000_000)}, data={"id": "a" * 32, "decision": "approve"})
    assert r.status_code == 413 and r.json()["error"].startswith(
        f"the post ({int(r.request.headers['content-length'])} bytes) is larger than any admin page sends "
        f"({largest} bytes: MAX_REQUEST_BODY_BYTES for a held request's edited body")
    assert sum(spooled) == 0
    r = httpx.post(url, files={"body": ("body.json", b"x" * 60_000)})  # within the bound: Django's to answer
    assert r.status_code in (302, 403) and sum(spooled) > 60_000  # the login page or CSRF: it reached Django
