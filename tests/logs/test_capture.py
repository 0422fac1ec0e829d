"""Body capture: text in memory, binary and oversized bodies to files, decoding."""

import gzip
import hashlib

from logs.capture import BodyCapture, content_type_is_text, extension_for


def test_text_and_binary_detection():
    for ct in ("application/json", "text/event-stream", "text/plain; charset=utf-8", "application/problem+json", ""):
        assert content_type_is_text(ct), ct
    for ct in ("audio/mpeg", "image/png", "application/pdf", "application/octet-stream", "video/mp4"):
        assert not content_type_is_text(ct), ct
    assert extension_for("audio/mpeg") == ".mp3" and extension_for("image/png") == ".png"


def test_small_text_kept_inline():
    cap = BodyCapture(provider="openai", content_type="application/json")
    cap.feed(b'{"a": ')
    cap.feed(b"1}")
    assert cap.finish() == {"body_size": 8, "body": '{"a": 1}'}


def test_binary_streams_to_a_file_with_hash(payload_dir):
    cap = BodyCapture(provider="openai", content_type="audio/mpeg")
    chunks = [bytes([i]) * 1000 for i in range(5)]
    for c in chunks:
        cap.feed(c)
    out = cap.finish()
    data = b"".join(chunks)
    assert "body" not in out and out["body_file"]["size"] == len(data)
    assert out["body_file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["body_file"]["name"].startswith("openai/") and out["body_file"]["name"].endswith(".mp3")
    assert (payload_dir / out["body_file"]["name"]).read_bytes() == data


def test_oversized_text_spills_to_file_untruncated(payload_dir, settings):
    settings.LOG_BODY_INLINE_MAX_BYTES = 100
    cap = BodyCapture(provider="openai", content_type="application/json")
    data = b'"' + b"x" * 500 + b'"'
    for i in range(0, len(data), 64):
        cap.feed(data[i:i + 64])
    out = cap.finish()
    assert (payload_dir / out["body_file"]["name"]).read_bytes() == data


def test_gzip_decoded_for_the_log_and_invalid_utf8_goes_to_a_file(payload_dir):
    cap = BodyCapture(provider="openai", content_type="application/json", content_encoding="gzip")
    packed = gzip.compress(b'{"ok": true}')
    cap.feed(packed[:5])
    cap.feed(packed[5:])
    assert cap.finish()["body"] == '{"ok": true}'
    bad = BodyCapture(provider="openai", content_type="text/plain")
    bad.feed(b"\xff\xfe bytes")
    out = bad.finish()
    assert "body" not in out and (payload_dir / out["body_file"]["name"]).read_bytes() == b"\xff\xfe bytes"


def test_sse_event_offsets_recorded():
    cap = BodyCapture(provider="openai", content_type="text/event-stream", stream=True)
    cap.feed(b"data: 1\n\ndata: 2\n\n")
    cap.feed(b"data: 3\n\n")
    assert len(cap.finish()["event_offsets_ms"]) == 3
