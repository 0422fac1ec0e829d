"""The admin's file view answers Range requests from the folder store and from an S3 bucket, reading
only the asked-for bytes, so audio and video can be scrubbed in the browser; HEAD reads none."""

import hashlib

import pytest
from django.test import RequestFactory
from django.urls import resolve

from logs.storage import payload_storage
from tests.logs.factory import exchange_make, file_attach

pytestmark = pytest.mark.django_db
LIST = "/admin/logs/request/"
# 300 KB that never repeat within a read chunk: a wrong offset cannot return the right bytes.
AUDIO = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(300_000 // 32))
SIZE = len(AUDIO)


@pytest.fixture(params=["folder", "s3"])
def store_reads(request) -> list[int] | None:
    """The payload store under test; for the bucket, the bytes each GET of an object carried."""
    if request.param == "folder":
        return None
    store = request.getfixturevalue("s3_store")
    carried: list[int] = []
    store.bucket.meta.client.meta.events.register(
        "after-call.s3.GetObject", lambda parsed, **_: carried.append(parsed["ContentLength"]))
    return carried


@pytest.fixture
def store_calls(request, store_reads, monkeypatch) -> list[str]:
    """What the view asks of the store: S3 operations by name, or "open" of a folder store's file."""
    calls: list[str] = []
    store = payload_storage()
    if store_reads is None:
        opened = store.open
        monkeypatch.setattr(store, "open", lambda name, mode="rb": calls.append("open") or opened(name, mode))
    else:
        store.bucket.meta.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    return calls


@pytest.fixture
def audio_url(store_reads) -> str:
    req = exchange_make(endpoint="/v1/audio/speech", model="tts-1")
    row = file_attach(req, AUDIO, "audio/mpeg", ".mp3")
    row.sha256 = hashlib.sha256(AUDIO).hexdigest()
    row.save(update_fields=["sha256"])
    return f"{LIST}file/{row.pk.hex}/"


def _get(client, url: str, **headers):
    r = client.get(url, headers=headers)
    body = b"".join(r.streaming_content) if r.streaming else r.content
    return r, body


def _served(user, method: str, url: str, **headers):
    """The view's answer and its body read as a server reads it. Not through the test client: it drops
    a HEAD's streamed body unread, where Django's ASGI and WSGI handlers iterate it (reading the file)."""
    request = getattr(RequestFactory(), method.lower())(url, headers=headers)
    request.user = user
    match = resolve(url)
    r = match.func(request, *match.args, **match.kwargs)
    return r, b"".join(r.streaming_content) if r.streaming else r.content


def test_whole_file_says_ranges_are_accepted(admin_client, audio_url, store_reads):
    r, body = _get(admin_client, audio_url)
    assert r.status_code == 200 and body == AUDIO
    assert r["Accept-Ranges"] == "bytes" and r["Content-Length"] == str(SIZE) and r["Content-Type"] == "audio/mpeg"
    assert r["ETag"] == f'"{hashlib.sha256(AUDIO).hexdigest()}"'
    if store_reads is not None:
        assert store_reads == [SIZE]


@pytest.mark.parametrize(("spec", "start", "end"), [
    ("bytes=100000-100999", 100_000, 101_000),
    ("bytes=299000-", 299_000, SIZE),
    ("bytes=-500", SIZE - 500, SIZE),
    ("bytes=250000-999999", 250_000, SIZE),  # the end cut to the file's
    ("bytes=0-0", 0, 1),
])
def test_range_is_answered_with_206_and_only_its_bytes(admin_client, audio_url, store_reads, spec, start, end):
    r, body = _get(admin_client, audio_url, Range=spec)
    assert r.status_code == 206 and body == AUDIO[start:end]
    assert r["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}" and r["Content-Length"] == str(end - start)
    assert r["Accept-Ranges"] == "bytes" and r["Content-Type"] == "audio/mpeg"
    if store_reads is not None:  # one ranged GET carrying the range, not the object
        assert store_reads == [end - start]


def test_range_past_the_end_is_416(admin_client, audio_url, store_reads):
    r, _ = _get(admin_client, audio_url, Range=f"bytes={SIZE}-")
    assert r.status_code == 416 and r["Content-Range"] == f"bytes */{SIZE}"
    if store_reads is not None:
        assert store_reads == []


def test_range_not_understood_gets_the_whole_file(admin_client, audio_url):
    r, body = _get(admin_client, audio_url, Range="bytes=0-9,20-29")
    assert r.status_code == 200 and body == AUDIO


def test_if_range_gives_the_range_only_for_this_version(admin_client, audio_url):
    etag = _get(admin_client, audio_url)[0]["ETag"]
    r, body = _get(admin_client, audio_url, Range="bytes=10-19", **{"If-Range": etag})
    assert r.status_code == 206 and body == AUDIO[10:20]
    r, body = _get(admin_client, audio_url, Range="bytes=10-19", **{"If-Range": '"another-version"'})
    assert r.status_code == 200 and body == AUDIO


def test_download_of_a_range_stays_a_download(admin_client, audio_url):
    r, body = _get(admin_client, audio_url + "?download=1", Range="bytes=5-9")
    assert r.status_code == 206 and body == AUDIO[5:10]
    assert r["Content-Type"] == "application/octet-stream" and r["Content-Disposition"].startswith("attachment")


def _headers(response):
    """The response's headers but Expires, which is the clock's second and so differs between two calls."""
    return {k: v for k, v in response.items() if k != "Expires"}


def test_head_reads_nothing_but_the_size(admin_user, audio_url, store_reads, store_calls):
    head, body = _served(admin_user, "HEAD", audio_url)
    assert head.status_code == 200 and body == b""
    assert head["Content-Length"] == str(SIZE) and head["Accept-Ranges"] == "bytes"
    assert head["Content-Type"] == "audio/mpeg" and head["ETag"] == f'"{hashlib.sha256(AUDIO).hexdigest()}"'
    assert store_calls == ([] if store_reads is None else ["HeadObject"])
    # The positive control: a GET served the same way is seen reading the file.
    get, body = _served(admin_user, "GET", audio_url)
    assert body == AUDIO and store_calls == (["open"] if store_reads is None else ["HeadObject", "HeadObject", "GetObject"])
    assert _headers(head) == _headers(get)


@pytest.mark.parametrize(("spec", "status", "length", "content_range"), [
    ("bytes=100000-100999", 206, 1000, f"bytes 100000-100999/{SIZE}"),
    ("bytes=-500", 206, 500, f"bytes {SIZE - 500}-{SIZE - 1}/{SIZE}"),
    (f"bytes={SIZE}-", 416, None, f"bytes */{SIZE}"),
    ("bytes=0-9,20-29", 200, SIZE, None),  # not understood: the whole file
])
def test_head_of_a_range_answers_as_a_get_would(admin_user, audio_url, store_reads, store_calls, spec, status,
                                                 length, content_range):
    head, body = _served(admin_user, "HEAD", audio_url, Range=spec)
    assert head.status_code == status and body == b"" and head.get("Content-Range") == content_range
    assert length is None or head["Content-Length"] == str(length)
    assert store_calls == ([] if store_reads is None else ["HeadObject"])
    get, _ = _served(admin_user, "GET", audio_url, Range=spec)
    assert _headers(head) == _headers(get)


def test_a_file_missing_from_the_store_says_so(admin_client, store_reads):
    """Raised as Http404, the answer was the gateway's JSON "Not found: /admin/logs/request/file/…/"."""
    row = file_attach(exchange_make(), b"\x89PNG gone", "image/png", ".png")
    payload_storage().delete(row.file.name)
    r, body = _get(admin_client, f"{LIST}file/{row.pk.hex}/")
    assert r.status_code == 404 and r["Content-Type"] == "text/plain"
    assert body.decode() == (f"The file {row.file.name} is missing from the file store (deleted outside the gateway, "
                             "or the store moved): its exchange is logged without it.")


def test_the_exchange_page_says_a_previewed_file_is_missing_instead_of_a_broken_image(admin_client, store_reads):
    """The page showed an <img> of the gone file (a broken image) with no word; the download link said why."""
    from tests.logs.factory import PNG, WAV
    req = exchange_make()
    gone = file_attach(req, PNG, "image/png", ".png")
    kept = file_attach(req, WAV, "audio/wav", ".wav")
    payload_storage().delete(gone.file.name)
    html = admin_client.get(f"{LIST}{req.pk.hex}/change/").content.decode()
    row = html.split(f'id="file-{gone.pk.hex}"', 1)[1].split("</tr>", 1)[0]
    assert "<img" not in row and "The stored file is missing from the file store" in row
    assert f'href="{LIST}file/{gone.pk.hex}/?download=1"' in row  # the link that answers why, in full
    row = html.split(f'id="file-{kept.pk.hex}"', 1)[1].split("</tr>", 1)[0]
    assert f'<audio controls preload="none" src="{LIST}file/{kept.pk.hex}/">' in row and "missing" not in row

