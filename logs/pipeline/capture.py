"""Captures an answer for the log while it streams past, then makes it what the log keeps.

While relaying (on the event loop, cheap): the bytes exactly as received are kept, small text in
memory and the rest in a spool file; for event streams the one SSE framer notes when each event
arrived. At the end (`finish`, in a worker thread when there is a file or much to decode): a
compressed answer is decoded with a cap (LOG_DECODE_MAX_BYTES), the exchange's credentials and
credential-named fields are masked in the logged copy, and the record gets the body inline or as
a spool file. Whatever cannot be decoded is kept as received, with a note saying why.
"""

import hashlib
import time
from array import array
from collections.abc import Iterator

from django.conf import settings

from logs.pipeline.spool import SpoolWriter, spool_discard, spool_path
from logs.records import FileRef, ResponseRecord
from logs.redaction.scrub import Masked, Scrubber
from wire.encoding import SUPPORTED, DecodeError, Decoder, decode_pieces, encoding_name
from wire.sse import SSEFramer

TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml",
              "application/javascript", "application/problem+json", "application/x-www-form-urlencoded")
# What a body kept as received (not decodable) is stored as.
ENCODED_TYPES = {"gzip": "application/gzip", "x-gzip": "application/gzip", "deflate": "application/zlib",
                 "br": "application/x-brotli", "zstd": "application/zstd"}
# An answer held in memory that decodes to at most this much is decoded on the event loop (a small,
# bounded piece of work); one that decodes to more, and any file, are finished in a worker thread.
INLINE_DECODE_MAX = 256 * 1024
PIECE = 1 << 20


def content_type_is_text(content_type: str) -> bool:
    """True for content types whose bodies are logged as text."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return not ct or ct.startswith(TEXT_TYPES) or ct.endswith("+json")


class BodyCapture:
    """Tee target for one answer body."""

    def __init__(self, *, spool_name: str, content_type: str, content_encoding: str = "",
                 stream: bool = False, started: float | None = None) -> None:
        self.spool_name = spool_name
        self.content_type = content_type
        self.notes: list[str] = []
        try:
            self.encoding = encoding_name(content_encoding)
        except DecodeError as exc:
            self.encoding, self.notes = content_encoding.strip().lower(), [f"body kept as received: {exc}"]
        self.decodable = self.encoding in SUPPORTED and not self.notes
        if self.encoding and not self.decodable and not self.notes:
            self.notes.append(f"body kept as received: content encoding {self.encoding!r} is not decoded")
        self.is_text = content_type_is_text(content_type)
        self.limit = settings.LOG_BODY_INLINE_MAX_BYTES
        self.decode_max = settings.LOG_DECODE_MAX_BYTES
        self.parts: list[bytes] = []
        self.size = 0  # bytes as received
        self.spool: SpoolWriter | None = None
        self.started = time.monotonic() if started is None else started
        self.framer = SSEFramer() if stream else None
        # An encoded stream is decoded as it passes only to find its events (the bytes are dropped).
        self.framing_decoder = Decoder(self.encoding) if stream and self.encoding and self.decodable else None
        self.framing_decoded = 0
        # Machine floats, not float objects: a stream in flight holds one for every event so far (8 bytes each, not 32).
        self.event_offsets = array("d")
        self.discarded = False
        self._spooled: list[str] = []  # spool files this body made, removed if it cannot be finished
        self._decoded: bytes | None = None  # a small answer, already decoded by blocking()

    # --- while relaying
    def feed(self, chunk: bytes) -> None:
        """Take one chunk as it passes; never raises into the relay."""
        if self.framer is not None:
            self._events_count(chunk)
        self._keep(chunk)

    def _events_count(self, chunk: bytes) -> None:
        """Note the arrival of every event this chunk completes."""
        if not self.encoding:
            ends = len(self.framer.ends(chunk))
        elif self.framing_decoder is not None:
            ends = 0
            try:
                for piece in self.framing_decoder.feed(chunk, PIECE):
                    self.framing_decoded += len(piece)
                    ends += len(self.framer.ends(piece))
                    if self.framing_decoded > self.decode_max:
                        raise DecodeError(f"more than {self.decode_max} bytes decoded (LOG_DECODE_MAX_BYTES)")
            except DecodeError as exc:
                self.notes.append(f"event arrival times stop where the stream could not be decoded: {exc}")
                self.framing_decoder = None
        else:
            return
        if ends:
            at = round((time.monotonic() - self.started) * 1000, 2)
            self.event_offsets.extend([at] * ends)

    def _keep(self, data: bytes) -> None:
        """Hold or spool the bytes as received."""
        if not data:
            return
        self.size += len(data)
        if self.discarded:
            return
        if self.spool is None and (self.is_text or self.encoding) and self.size <= self.limit:
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

    # --- at the end
    def blocking(self) -> bool:
        """Whether finish() reads or writes files or decodes much (then it runs in a worker thread).

        A compressed answer held in memory is decoded here if it decodes to little; a small
        compressed body may still be a bomb, so the decoding stops at INLINE_DECODE_MAX.
        """
        if self.spool is not None:
            return True
        if not (self.encoding and self.decodable) or self.discarded:
            return False
        out, total = [], 0
        try:
            for piece in decode_pieces(self.encoding, self.parts, piece=64 * 1024):
                total += len(piece)
                if total > min(INLINE_DECODE_MAX, self.limit):
                    return True
                out.append(piece)
        except DecodeError:
            return True  # finish() says why, in a thread like any other body kept as received
        self._decoded = b"".join(out)
        return False

    def finish(self, record: ResponseRecord, scrubber: Scrubber) -> None:
        """Decode, mask and describe the captured body in the response record."""
        if self.framer is not None:
            record.event_offsets_ms = self.event_offsets.tolist()
        record.body_size = self.size
        if not self.discarded:
            try:
                self._body_finish(record, scrubber)
            except OSError as exc:
                self.notes.append(f"response body file not saved: {exc}")
                # No file half-written stays in the spool folder (nothing sweeps it: a full disk stayed full).
                if self.spool is not None:
                    self.spool.discard()
                    self.spool = None
                for name in self._spooled:
                    spool_discard(name)
                record.body_file = None
        if self.notes:
            record.notes = "; ".join(filter(None, [record.notes, *self.notes]))

    def _body_finish(self, record: ResponseRecord, scrubber: Scrubber) -> None:
        if self.spool is not None:
            self._spooled.append(self.spool.name)
            ref = self.spool.close()
            self.spool = None
        else:
            ref = None
        if self.encoding and self.decodable:
            decoded = self._decode(ref)
            if decoded is None:  # kept as received: the note says why
                self._store_raw(record, ref, scrubber)
                return
            data, ref, record.body_size = decoded
        elif self.encoding:
            self._store_raw(record, ref, scrubber)
            return
        else:
            data = b"".join(self.parts)
        masked = Masked()
        if ref is None:
            try:
                record.body = scrubber.text(data.decode("utf-8"), self.content_type, answer=True, masked=masked)
            except UnicodeDecodeError:  # not text after all: raw bytes never go into a TEXT column
                ref = self._spool_bytes(data, self.content_type)
        if ref is not None:
            record.body_file = self._masked_ref(ref, scrubber, masked)
        self._masked_note(masked)

    def _source(self, ref: FileRef | None) -> Iterator[bytes]:
        """The bytes as received: from memory, or from their spool file."""
        if ref is None:
            yield from self.parts
            return
        with open(spool_path(ref.spool), "rb") as f:
            while block := f.read(PIECE):
                yield block

    def _decode(self, ref: FileRef | None) -> tuple[bytes, FileRef | None, int] | None:
        """Decoded body: (bytes, None, size) when small text, (b"", decoded file, size) otherwise; None if not."""
        if self._decoded is not None:
            return self._decoded, None, len(self._decoded)
        out: SpoolWriter | None = None
        held: list[bytes] = []
        total = 0
        try:
            for piece in decode_pieces(self.encoding, self._source(ref)):
                total += len(piece)
                if total > self.decode_max:
                    raise DecodeError(f"it decodes to more than {self.decode_max} bytes (LOG_DECODE_MAX_BYTES)")
                if out is None and self.is_text and total <= self.limit:
                    held.append(piece)
                    continue
                if out is None:
                    out = SpoolWriter(f"{self.spool_name}.decoded", self.content_type)
                    for h in held:
                        out.write(h)
                    held = []
                out.write(piece)
        except DecodeError as exc:
            if out is not None:
                out.discard()
            self.notes.append(f"body kept as received ({self.encoding}, {self.size} bytes): {exc}")
            return None
        if ref is not None:
            spool_path(ref.spool).unlink(missing_ok=True)  # the decoded copy replaces the encoded one
        if out is not None:
            self._spooled.append(out.name)
            return b"", out.close(), total
        return b"".join(held), None, total

    def _store_raw(self, record: ResponseRecord, ref: FileRef | None, scrubber: Scrubber) -> None:
        """Keep the bytes exactly as received (an encoding not decoded, corrupt, or too large)."""
        ctype = ENCODED_TYPES.get(self.encoding, "application/octet-stream")
        if ref is None:
            ref = self._spool_bytes(b"".join(self.parts), ctype)
        ref.content_type = ctype
        masked = Masked()
        record.body_file = self._masked_ref(ref, scrubber, masked)  # the credentials' raw bytes, if sent plain
        record.body_size = self.size
        self._masked_note(masked)

    def _spool_bytes(self, data: bytes, content_type: str) -> FileRef:
        """Held bytes as a spool file."""
        spool = SpoolWriter(f"{self.spool_name}.body", content_type)
        self._spooled.append(spool.name)
        try:
            spool.write(data)
        except OSError:
            spool.discard()
            raise
        return spool.close()

    @staticmethod
    def _masked_ref(ref: FileRef, scrubber: Scrubber, masked: Masked) -> FileRef:
        """Mask a spooled body in place; its size and hash are then the stored copy's."""
        path = spool_path(ref.spool)
        if scrubber.file(path, ref.content_type, answer=True, masked=masked):
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(PIECE):
                    digest.update(block)
            ref.size, ref.sha256 = path.stat().st_size, digest.hexdigest()
        return ref

    def _masked_note(self, masked: Masked) -> None:
        if note := masked.note("response body (stored copy)"):
            self.notes.append(note)

