"""Body capture: text in memory, binary and oversized bodies to spool files, decoding, event offsets."""

import gzip
import hashlib
import time

import pytest

from logs.ids import exchange_id_new
from logs.redaction.scrub import Masked, Scrubber
from logs.pipeline.capture import BodyCapture, content_type_is_text
from logs.pipeline.payloads import spooled_store
from logs.pipeline.spool import spool_path
from logs.records import ResponseRecord
from logs.storage import extension_for
from tests.logs.factory import stored


def _capture(content_type: str, **kwargs) -> BodyCapture:
    return BodyCapture(spool_name=f"{exchange_id_new()}.response", content_type=content_type, **kwargs)


def _finish(cap: BodyCapture) -> ResponseRecord:
    """The response record the capture fills in."""
    record = ResponseRecord(id=exchange_id_new(), provider="openai")
    cap.finish(record, Scrubber([]))
    return record


def test_text_and_binary_detection():
    for ct in ("application/json", "text/event-stream", "text/plain; charset=utf-8", "application/problem+json", ""):
        assert content_type_is_text(ct), ct
    for ct in ("audio/mpeg", "image/png", "application/pdf", "application/octet-stream", "video/mp4"):
        assert not content_type_is_text(ct), ct
    assert extension_for("audio/mpeg") == ".mp3" and extension_for("image/png") == ".png"


def test_small_text_kept_inline():
    cap = _capture("application/json")
    cap.feed(b'{"a": ')
    cap.feed(b"1}")
    record = _finish(cap)
    assert (record.body_size, record.body, record.body_file, record.notes) == (8, '{"a": 1}', None, "")
    assert not spool_path(cap.spool_name).exists()


def test_binary_streams_to_a_file_with_hash():
    cap = _capture("audio/mpeg")
    chunks = [bytes([i]) * 1000 for i in range(5)]
    for c in chunks:
        cap.feed(c)
    record = _finish(cap)
    data = b"".join(chunks)
    ref = record.body_file
    assert record.body is None and record.body_size == len(data) and ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert (ref.spool, ref.content_type, ref.error) == (cap.spool_name, "audio/mpeg", "")
    assert spool_path(ref.spool).read_bytes() == data
    # The ingest stores it under {provider}/{day}/{file id}.mp3, moved out of the spool folder.
    name, missing = spooled_store(ref, provider="openai", owner=record.id, label="body", created=time.time(),
                                  content_type=ref.content_type)
    assert missing == "" and name.startswith("openai/") and name.endswith(".mp3")
    assert stored(name) == data and not spool_path(ref.spool).exists()


def test_oversized_text_spills_to_file_untruncated(settings):
    settings.LOG_BODY_INLINE_MAX_BYTES = 100
    cap = _capture("application/json")
    data = b'"' + b"x" * 500 + b'"'
    for i in range(0, len(data), 64):
        cap.feed(data[i:i + 64])
    record = _finish(cap)
    assert record.body is None and record.body_size == len(data)
    assert spool_path(record.body_file.spool).read_bytes() == data


def test_gzip_decoded_for_the_log_and_invalid_utf8_goes_to_a_file():
    cap = _capture("application/json", content_encoding="gzip")
    packed = gzip.compress(b'{"ok": true}')
    cap.feed(packed[:5])
    cap.feed(packed[5:])
    assert _finish(cap).body == '{"ok": true}'
    bad = _capture("text/plain")
    bad.feed(b"\xff\xfe bytes")
    record = _finish(bad)
    assert record.body is None and spool_path(record.body_file.spool).read_bytes() == b"\xff\xfe bytes"


def test_sse_event_offsets_recorded():
    started = time.monotonic() - 1.0  # the exchange began a second before the answer
    cap = _capture("text/event-stream", stream=True, started=started)
    cap.feed(b"data: 1\n\ndata: 2\n\n")
    cap.feed(b"data: 3\n\n")
    offsets = _finish(cap).event_offsets_ms
    assert len(offsets) == 3
    assert all(1000 <= ms <= (time.monotonic() - started) * 1000 for ms in offsets)  # ms since `started`


def _fed(cap: BodyCapture, data: bytes, size: int = 4096) -> BodyCapture:
    for i in range(0, len(data), size):
        cap.feed(data[i:i + size])
    return cap


def test_large_gzip_answer_is_decoded_into_a_file(settings):
    settings.LOG_BODY_INLINE_MAX_BYTES = 1000
    text = b'{"data": "' + b"z" * 50_000 + b'"}'
    cap = _fed(_capture("application/json", content_encoding="gzip"), gzip.compress(text))
    assert cap.blocking()  # a file and a decode: finished off the event loop
    record = _finish(cap)
    assert record.body is None and record.body_size == len(text) and not record.notes
    assert spool_path(record.body_file.spool).read_bytes() == text
    assert record.body_file.sha256 == hashlib.sha256(text).hexdigest()


def test_a_bomb_past_the_decode_cap_is_kept_as_received(settings):
    settings.LOG_DECODE_MAX_BYTES = 100_000
    bomb = gzip.compress(b"\0" * 5_000_000)
    record = _finish(_fed(_capture("application/json", content_encoding="gzip"), bomb))
    assert record.body is None and "LOG_DECODE_MAX_BYTES" in record.notes and record.body_size == len(bomb)
    assert record.body_file.content_type == "application/gzip"
    assert spool_path(record.body_file.spool).read_bytes() == bomb  # exactly the bytes relayed
    assert not list(spool_path("x").parent.glob("*.decoded"))  # no partial decoded copy left


def test_a_compressed_stream_gets_its_event_times():
    events = b"".join(b'data: {"n": %d}\n\n' % i for i in range(5))
    encoded = gzip.compress(events)
    cap = _capture("text/event-stream", content_encoding="gzip", stream=True, started=time.monotonic())
    for i in range(0, len(encoded), 7):
        cap.feed(encoded[i:i + 7])
    record = _finish(cap)
    assert len(record.event_offsets_ms) == 5 and record.body == events.decode()


def test_a_spooled_answer_echoing_the_key_is_masked_in_the_stored_copy(settings):
    settings.LOG_BODY_INLINE_MAX_BYTES = 100
    key = "sk-" + "captureTEST0123456789abcdef"
    data = b"\x00\xff" * 200 + key.encode() + b"\x01" * 200
    cap = _fed(_capture("application/octet-stream"), data, size=37)
    record = ResponseRecord(id=exchange_id_new(), provider="openai")
    cap.finish(record, Scrubber([key]))
    stored_copy = spool_path(record.body_file.spool).read_bytes()
    assert key.encode() not in stored_copy and "credentials" in record.notes
    assert record.body_file.sha256 == hashlib.sha256(stored_copy).hexdigest() and record.body_size == len(data)


def test_spool_files_are_the_gateways_users_only(settings, tmp_path):
    # A request body waits there as sent (a multipart form's password field too) while it goes upstream.
    import os
    import stat

    from proxy.request_body import BodySpool

    from logs.pipeline.journal import Journal

    settings.SPOOL_DIR = tmp_path / "spool"
    settings.SPOOL_DIR.mkdir(mode=0o755)  # as an older version left it: narrowed too
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10
    journals = tmp_path / "journal"
    journals.mkdir(mode=0o755)
    Journal(journals, "test").close(remove=True)
    assert stat.S_IMODE(os.stat(journals).st_mode) == 0o700
    body = BodySpool(exchange_id_new() + ".request")
    body.write(b"password=hunter2hunter2&x=" + b"1" * 100)
    mode = stat.S_IMODE(os.stat(settings.SPOOL_DIR / body.name).st_mode)
    assert mode == 0o600 and stat.S_IMODE(os.stat(settings.SPOOL_DIR).st_mode) == 0o700
    body.close()


class _FullAfter:
    """A file that takes `room` more bytes, then fails as a full disk does (a short write, then ENOSPC)."""

    def __init__(self, real, room: int) -> None:
        self.real, self.room = real, room

    def write(self, data) -> int:
        import errno

        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real.write(bytes(data[:self.room]))
        self.room -= n
        return n

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_a_request_body_whose_disk_fills_up_is_forwarded_whole_from_memory(settings, tmp_path):
    # It was a bare 500 (the write past the rollover raised), and the exchange was never logged.
    from proxy.request_body import BodySpool

    settings.SPOOL_DIR = tmp_path / "spool"
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 100
    body = BodySpool(exchange_id_new() + ".request")
    pieces = [bytes([65 + i]) * 80 for i in range(6)]
    body.write(pieces[0])
    body.write(pieces[1])  # past 100 bytes: in a file now
    assert body.in_memory() is None
    body._file = _FullAfter(body._file, 50)  # room for 50 more bytes
    for piece in pieces[2:]:
        body.write(piece)
    assert body.in_memory() == b"".join(pieces) and body.spool_error.startswith("[Errno 28]")
    assert list((tmp_path / "spool").iterdir()) == []  # the partial file is gone
    with pytest.raises(OSError, match="No space left"):  # the log notes it: "request body file not saved"
        body.keep("application/octet-stream", Scrubber([]), Masked())
    body.close()


def test_a_response_body_that_cannot_be_finished_leaves_no_file(monkeypatch):
    cap = _capture("audio/mpeg")
    for i in range(5):
        cap.feed(bytes([i]) * 1000)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Scrubber, "file", full)  # masking it in place fails for want of space
    record = _finish(cap)
    assert record.body_file is None and "response body file not saved: [Errno 28]" in record.notes
    assert not spool_path(cap.spool_name).exists()


def test_a_masked_copy_that_fails_leaves_no_partial_copy(tmp_path, monkeypatch):
    src, dst = tmp_path / "body", tmp_path / "body.log"
    src.write_bytes(b"x" * 5000 + b"sk-" + b"k" * 40)

    def full(self, fin, fout, masked):
        fout.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Scrubber, "_echoes_copy", full)
    with pytest.raises(OSError):
        Scrubber(["sk-" + "k" * 40]).masked_copy(src, dst, "application/octet-stream", answer=False, masked=Masked())
    assert not dst.exists() and src.exists()
