"""Content-Encoding decoding: every supported encoding, corrupt and cut-short data, bounded pieces."""

import gzip
import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings as hsettings, strategies as st

from wire.encoding import DecodeError, Decoder, decode_pieces, encoding_name

DATA = bytes(range(256)) * 40 + b"hello world " * 500


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


ENCODED = {"gzip": gzip.compress(DATA), "deflate": zlib.compress(DATA), "br": brotli.compress(DATA),
           "zstd": zstandard.ZstdCompressor().compress(DATA)}


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_each_encoding_decodes_in_any_chunking(encoding):
    data = ENCODED[encoding]
    for size in (1, 7, 1000, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert b"".join(decode_pieces(encoding, chunks, piece=333)) == DATA


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress),
                                                ("zstd", zstandard.ZstdCompressor().compress)])
def test_a_body_of_several_members_or_frames_decodes_whole(encoding, compress):
    """RFC 1952 lets a gzip body hold several members, zstd several frames: the log kept only the first."""
    second = b"second part " * 300
    data = compress(DATA) + compress(second)
    for size in (1, 7, 1000, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert b"".join(decode_pieces(encoding, chunks, piece=333)) == DATA + second
    with pytest.raises(DecodeError, match="cut short"):  # the second one cut: cut short, as the first would be
        b"".join(decode_pieces(encoding, [data[:-10]]))


def test_raw_deflate_as_some_servers_send_it():
    assert b"".join(decode_pieces("deflate", [_raw_deflate(DATA)])) == DATA


@pytest.mark.parametrize("encoding", sorted(ENCODED))
def test_cut_short_and_corrupt_data_are_errors(encoding):
    data = ENCODED[encoding]
    with pytest.raises(DecodeError, match="cut short"):
        b"".join(decode_pieces(encoding, [data[: len(data) // 2]]))
    with pytest.raises(DecodeError):
        b"".join(decode_pieces(encoding, [data[:12] + b"\x00garbage" * 64 + data[12:]]))


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("br", brotli.compress),
                                                ("zstd", zstandard.ZstdCompressor().compress)])
def test_a_bomb_comes_out_in_bounded_pieces(encoding, compress):
    bomb = compress(b"\0" * (32 << 20))
    decoder, seen, biggest = Decoder(encoding), 0, 0
    for piece in decoder.feed(bomb, 1 << 20):
        seen, biggest = seen + len(piece), max(biggest, len(piece))
        if seen > (4 << 20):
            break  # a caller stops at its cap: nothing more is decoded
    assert seen > (4 << 20) and biggest <= (3 << 20)


def test_encoding_names():
    assert encoding_name("") == "" and encoding_name("identity") == "" and encoding_name(" GZIP ") == "gzip"
    with pytest.raises(DecodeError, match="stacked"):
        encoding_name("gzip, br")
    with pytest.raises(DecodeError, match="not decoded"):
        Decoder("compress")


@hsettings(deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(min_value=1, max_value=2999), max_size=8))
def test_property_gzip_decodes_the_same_whatever_the_chunks(data, cuts):
    encoded = gzip.compress(data)
    points = sorted({c % max(len(encoded), 1) for c in cuts} - {0})
    chunks = [encoded[i:j] for i, j in zip([0, *points], [*points, len(encoded)])]
    assert b"".join(decode_pieces("gzip", chunks, piece=97)) == data
