"""Property tests: the multipart splitter takes any bytes and never points outside the file."""

from hypothesis import given, settings as hsettings, strategies as st

from wire.multipart import header_params, multipart_boundary, multipart_split, part_read

BOUNDARY = "XyZ"


def _well_formed(parts: list[tuple[str, bytes]]) -> bytes:
    body = b""
    for name, data in parts:
        body += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"f.bin\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


pieces = st.sampled_from([b"--XyZ", b"--XyZ--", b"\r\n", b"\r\n\r\n", b"Content-Disposition: form-data; name=\"a\"",
                          b"Content-Type: x", b"\x00\xff", b"data", b";filename=\"", b"--"])


@hsettings(deadline=None)
@given(body=st.one_of(st.binary(max_size=300), st.lists(pieces, max_size=20).map(b"".join)))
def test_property_split_takes_any_bytes(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("mp") / "body"
    path.write_bytes(body)
    parts, complete = multipart_split(path, BOUNDARY)
    assert isinstance(complete, bool)
    for part in parts:
        assert 0 <= part.start <= part.end <= len(body)
        assert part_read(path, part) == body[part.start:part.end]


@hsettings(deadline=None)
@given(parts=st.lists(st.tuples(st.text(alphabet="abcdef_", min_size=1, max_size=8),
                                st.binary(max_size=200).filter(lambda b: b"--XyZ" not in b)), max_size=4),
       cut=st.integers(min_value=0, max_value=2000))
def test_property_well_formed_bodies_round_trip_and_truncation_is_detected(tmp_path_factory, parts, cut):
    body = _well_formed(parts)
    path = tmp_path_factory.mktemp("mp") / "body"
    path.write_bytes(body)
    found, complete = multipart_split(path, BOUNDARY)
    assert complete and [(p.name, part_read(path, p)) for p in found] == parts
    if cut < len(body) - len(f"--{BOUNDARY}--"):  # any truncation before the closing boundary
        path.write_bytes(body[:cut])
        _, complete = multipart_split(path, BOUNDARY)
        assert not complete


@hsettings(deadline=None)
@given(value=st.text(max_size=120))
def test_property_header_params_take_any_text(value):
    assert isinstance(header_params(value), dict)
    multipart_boundary("multipart/form-data" + value)
