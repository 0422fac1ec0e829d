"""Captures an answer for the log while it streams past: small text in memory, the rest to a spool file."""

import time
import zlib

from django.conf import settings

from logs.pipeline.spool import SpoolWriter
from logs.records import ResponseRecord
from wire.sse import SSEFramer

TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml",
              "application/javascript", "application/problem+json", "application/x-www-form-urlencoded")


def content_type_is_text(content_type: str) -> bool:
    """True for content types whose bodies are logged as text."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return not ct or ct.startswith(TEXT_TYPES) or ct.endswith("+json")


def decoder_for(content_encoding: str):
    """An incremental decoder for a Content-Encoding, None for identity, False if unsupported."""
    enc = content_encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return zlib.decompressobj()
    return False


class BodyCapture:
    """Tee target for one answer body: decoded text in memory, spilled to a spool file past the inline limit.

    For event streams it also notes when each event arrived (ms since the exchange started), by
    the same framer every other reader of the stream uses.
    """

    def __init__(self, *, spool_name: str, content_type: str, content_encoding: str = "",
                 stream: bool = False, started: float | None = None) -> None:
        self.spool_name = spool_name
        self.content_type = content_type
        self.is_text = content_type_is_text(content_type)
        self.decoder = decoder_for(content_encoding)
        if self.decoder is False:  # unknown encoding: keep the bytes exactly as received
            self.decoder, self.is_text = None, False
        self.limit = settings.LOG_BODY_INLINE_MAX_BYTES
        self.parts: list[bytes] = []
        self.size = 0
        self.spool: SpoolWriter | None = None
        self.started = time.monotonic() if started is None else started
        self.framer = SSEFramer() if stream else None
        self.event_offsets: list[float] = []
        self.notes: list[str] = []
        self.discarded = False

    def feed(self, chunk: bytes) -> None:
        """Take one chunk as it passes; never raises into the relay."""
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except Exception as exc:  # corrupt compressed data: log what we have
                self.notes.append(f"decode failed: {exc}")
                self.decoder = None
        if self.framer is not None and chunk:
            ends = self.framer.ends(chunk)
            if ends:
                at = round((time.monotonic() - self.started) * 1000, 2)
                self.event_offsets.extend([at] * len(ends))
        self._keep(chunk)

    def _keep(self, data: bytes) -> None:
        """Hold or write decoded bytes."""
        if not data:
            return
        self.size += len(data)
        if self.discarded:
            return
        if self.spool is None and self.is_text and self.size <= self.limit:
            self.parts.append(data)
            return
        try:
            if self.spool is None:
                self.spool = SpoolWriter(self.spool_name, self.content_type)
                for part in self.parts:
                    self.spool.write(part)
                self.parts = []
            self.spool.write(data)
        except OSError as exc:  # disk full etc.: the client still gets its answer
            self.notes.append(f"response body file not saved: {exc}")
            if self.spool is not None:
                self.spool.discard()
            self.spool, self.parts, self.discarded = None, [], True

    def finish(self, record: ResponseRecord) -> None:
        """Close any file and put the captured body into the response record."""
        if self.decoder is not None:
            try:
                self._keep(self.decoder.flush())
            except Exception:
                pass
        record.body_size = self.size
        if self.framer is not None:
            record.event_offsets_ms = self.event_offsets
        if self.spool is None and not self.discarded:
            data = b"".join(self.parts)
            try:
                record.body = data.decode("utf-8")
            except UnicodeDecodeError:  # not text after all: raw bytes never go into a TEXT column
                self.is_text, self.limit, self.size, self.parts = False, -1, 0, []
                self._keep(data)
        if self.spool is not None:
            try:
                record.body_file = self.spool.close()
            except OSError as exc:
                self.notes.append(f"response body file not saved: {exc}")
                self.spool.discard()
        if self.notes:
            record.notes = "; ".join(filter(None, [record.notes, *self.notes]))
