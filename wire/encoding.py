"""Content-Encoding decoding with bounded work: a hostile upstream cannot make the log inflate a bomb.

Every decoder hands out its output in pieces of at most `piece` bytes, however small the input
was, and the callers stop at their cap. Supported: gzip (x-gzip), deflate (zlib-wrapped, or raw
as some servers send it), br (the brotli package), zstd (the zstandard package).
"""

import zlib
from collections.abc import Iterable, Iterator

import brotli
import zstandard

SUPPORTED = ("gzip", "x-gzip", "deflate", "br", "zstd")
PIECE = 1 << 20


class DecodeError(ValueError):
    """The encoded bytes are corrupt, cut short, or in an encoding the gateway does not decode."""


def encoding_name(content_encoding: str) -> str:
    """The one encoding a Content-Encoding value applies ("" for identity); DecodeError for a chain."""
    names = [n.strip().lower() for n in content_encoding.split(",") if n.strip()]
    names = [n for n in names if n != "identity"]
    if len(names) > 1:
        raise DecodeError(f"stacked content encodings ({content_encoding}) are not decoded")
    return names[0] if names else ""


class Decoder:
    """Incremental decoder: feed() the encoded bytes as they come, take bounded pieces of output."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = None  # zlib-wrapped or raw: decided by the first bytes
        elif encoding == "br":
            self._br = brotli.Decompressor()
        elif encoding == "zstd":
            self._zstd = zstandard.ZstdDecompressor().decompressobj()
        else:
            raise DecodeError(f"content encoding {encoding!r} is not decoded")
        self._pending = b""  # deflate: bytes held until the wrapping is known

    def _deflate_start(self, data: bytes) -> bytes:
        """Pick zlib-wrapped or raw deflate from the first two bytes (RFC 1950 header check)."""
        data = self._pending + data
        if len(data) < 2:
            self._pending = data
            return b""
        self._pending = b""
        wrapped = (data[0] & 0x0F) == 8 and ((data[0] << 8) | data[1]) % 31 == 0
        self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        return data

    def feed(self, data: bytes, piece: int = PIECE) -> Iterator[bytes]:
        """Decoded output of `data`, in pieces of at most `piece` bytes. DecodeError when corrupt."""
        try:
            if self.encoding == "br":
                yield from self._br_feed(data, piece)
            elif self.encoding == "zstd":
                yield from self._zstd_feed(data, piece)
            else:
                yield from self._zlib_feed(data, piece)
        except (zlib.error, brotli.error, zstandard.ZstdError) as exc:
            raise DecodeError(f"corrupt {self.encoding} data: {exc}") from None

    def _zlib_feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        if self._z is None:
            data = self._deflate_start(data)
            if self._z is None:
                return
        while data:
            if self._z.eof:  # a gzip body may hold several members (RFC 1952): the next one starts here
                if self.encoding == "deflate":
                    return  # bytes after the end are not the body's
                data, self._pending = self._pending + data, b""
                if len(data) < 2:  # a member's first byte: its second comes with the next feed
                    self._pending = data
                    return
                if not data.startswith(b"\x1f\x8b"):
                    return
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = self._z.decompress(data, piece)
            data = self._z.unconsumed_tail or (self._z.unused_data if self._z.eof else b"")
            if out:
                yield out

    def _zstd_feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        """zstandard's incremental object has no output bound per call: feed it slices, small
        (128 bytes can expand to a few MiB) and growing while the output stays small."""
        step, i = 128, 0
        while i < len(data):
            if self._zstd.eof:  # a zstd body may hold several frames: the next one starts here
                self._zstd = zstandard.ZstdDecompressor().decompressobj()
            out = self._zstd.decompress(data[i:i + step])
            i += step
            if self._zstd.eof and self._zstd.unused_data:  # what the ended frame did not take: fed again
                data, i = self._zstd.unused_data + data[i:], 0
            for j in range(0, len(out), piece):
                yield out[j:j + piece]
            step = min(step * 2, 65536) if len(out) < piece // 8 else 128

    def _br_feed(self, data: bytes, piece: int) -> Iterator[bytes]:
        out = self._br.process(data, output_buffer_limit=piece)
        while out:  # drain what the limit held back, a piece at a time
            yield out
            out = self._br.process(b"", output_buffer_limit=piece)

    def finish(self) -> None:
        """The input ended: DecodeError when the encoded data was cut short."""
        if self.encoding in ("gzip", "x-gzip", "deflate"):
            if self._pending or self._z is None or not self._z.eof:
                raise DecodeError(f"{self.encoding} data cut short")
        elif self.encoding == "br" and not self._br.is_finished():
            raise DecodeError("br data cut short")
        elif self.encoding == "zstd" and not self._zstd.eof:
            raise DecodeError("zstd data cut short")


def decode_pieces(encoding: str, chunks: Iterable[bytes], piece: int = PIECE) -> Iterator[bytes]:
    """A whole body's decoded bytes, piece by piece; DecodeError when corrupt or cut short."""
    decoder = Decoder(encoding)
    for chunk in chunks:
        yield from decoder.feed(chunk, piece)
    decoder.finish()
