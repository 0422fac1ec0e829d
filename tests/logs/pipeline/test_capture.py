"""Body capture: text in memory, binary and oversized bodies to spool files, decoding, event offsets."""

import gzip
import hashlib
import time

from logs.ids import exchange_id_new
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
    cap.finish(record)
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
