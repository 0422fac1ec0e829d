"""Splitting multipart bodies kept in files."""

import pytest

from wire.multipart import BoundaryInside, header_params, multipart_boundary, multipart_fields, multipart_split, part_read


def _body(boundary: str, parts: list[tuple[str, str | None, str, bytes]], close: bool = True) -> bytes:
    out = b""
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


def test_split_finds_fields_and_files_with_binary_content(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--notboundary"
    path = tmp_path / "body"
    path.write_bytes(_body("xyz", [("prompt", None, "text/plain", b"bluer"), ("image", "a b.png", "image/png", png)]))
    parts, complete = multipart_split(path, "xyz")
    assert complete
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("prompt", None, "text/plain"), ("image", "a b.png", "image/png")]
    assert part_read(path, parts[0]) == b"bluer" and part_read(path, parts[1]) == png


def test_truncated_body_is_reported_incomplete(tmp_path):
    path = tmp_path / "body"
    whole = _body("b1", [("file", "x.bin", "application/octet-stream", b"0123456789" * 10)])
    path.write_bytes(whole[: len(whole) // 2])
    parts, complete = multipart_split(path, "b1")
    assert not complete and parts == []


def test_boundary_and_params_parsing():
    assert multipart_boundary('multipart/form-data; boundary="a;b"') == "a;b"
    assert multipart_boundary("application/json") is None
    assert header_params('form-data; name="f"; filename="q\\"x.png"') == {"name": "f", "filename": 'q"x.png'}


def test_names_of_other_letters_read_as_sent(tmp_path):
    # httpx, curl and browsers send them as raw UTF-8 (RFC 7578); some clients use RFC 5987's filename*.
    path = tmp_path / "body"
    path.write_bytes(
        b"--B\r\nContent-Disposition: form-data; name=\"\xd0\xbf\xd0\xbe\xd0\xbb\xd0\xb5\"; "
        b"filename=\"\xd0\xbf\xd0\xb8\xd0\xba\xf0\x9f\x98\x80.png\"\r\n\r\nX\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"fallback.png\"; "
        b"filename*=UTF-8''%D0%BF%D0%B8%D0%BA.png\r\n\r\nY\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"old\"; filename=\"caf\xe9.txt\"\r\n\r\nZ\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"bad\"; filename*=UTF-8''%FF.bin\r\n\r\nW\r\n"
        b"--B\r\nContent-Disposition: form-data; name=\"empty\"; filename*=\r\n\r\nV\r\n--B--\r\n")
    parts, complete = multipart_split(path, "B")
    assert complete
    assert [(p.name, p.filename) for p in parts] == [
        ("поле", "пик😀.png"), ("f", "пик.png"), ("old", "café.txt"),  # not UTF-8: read as latin-1
        ("bad", "UTF-8''%FF.bin"), ("empty", "")]  # still files: named as sent


def test_a_field_a_server_may_give_another_name_is_read_under_none():
    # Werkzeug (Flask) and python-multipart (Starlette, FastAPI: vLLM) read name*=UTF-8''model as the name
    # "model", each taking the last of name and name*: the gateway read the part under its plain name, so a
    # form's second model field, which such a server took, went unjudged.
    body = (b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"pad\"; name*=UTF-8''model\r\n\r\ngpt-4o\r\n"
            b"--B\r\nContent-Disposition: form-data; name*=bogus''respon%73e_format\r\n\r\ntext\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"language\"\r\n\r\nen\r\n--B--\r\n")
    fields = multipart_fields(body, "B", 100)
    assert fields["model"] is None and fields["response_format"] is None and fields["pad"] is None
    # Two Content-Disposition headers, the second after a bare line break or not: Werkzeug takes the first,
    # python-multipart the last.
    for second in (b"\r\n", b"\n"):
        body = (b"--B\r\nContent-Disposition: form-data; name=\"model\"" + second +
                b"Content-Disposition: form-data; name=\"pad\"\r\n\r\ngpt-4o\r\n--B--\r\n")
        assert multipart_fields(body, "B", 100) == {"model": None, "pad": None}
    assert fields["language"] == "en"  # a field named once, plainly, is read as before


def test_a_form_whose_part_holds_its_boundary_is_not_read():
    # Werkzeug takes a bare \n before the boundary: there the pad field's value held a second model field, which
    # it read first; the gateway read one part, pad, and the model field after it.
    body = (b"--B\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\nx\n"
            b"--B\nContent-Disposition: form-data; name=\"model\"\n\ngpt-4o\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--B--\r\n")
    with pytest.raises(BoundaryInside):
        multipart_fields(body, "B", 100)
    plain = body.replace(b"x\n--B\nContent-Disposition: form-data; name=\"model\"\n\ngpt-4o", b"x")
    assert multipart_fields(plain, "B", 100) == {"pad": "x", "model": "whisper-1"}
