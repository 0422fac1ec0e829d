"""Captures a body for the log while it streams past: small text in memory, the rest to a file."""

import hashlib
import mimetypes
import time
import uuid
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from django.conf import settings

TEXT_TYPES = ("text/", "application/json", "application/x-ndjson", "application/xml",
              "application/javascript", "application/problem+json", "application/x-www-form-urlencoded")
EXTENSIONS = {
    "audio/mpeg": ".mp3", "audio/mp3": ".mp3", "audio/wav": ".wav", "audio/x-wav": ".wav",
    "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/aac": ".aac", "audio/flac": ".flac",
    "audio/pcm": ".pcm", "image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp",
    "image/gif": ".gif", "application/pdf": ".pdf", "video/mp4": ".mp4",
    "application/octet-stream": ".bin", "application/json": ".json", "text/plain": ".txt",
    "text/event-stream": ".txt", "multipart/form-data": ".multipart",
}


def content_type_is_text(content_type: str) -> bool:
    """True for content types whose bodies are logged as text."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return not ct or ct.startswith(TEXT_TYPES) or ct.endswith("+json")


def extension_for(content_type: str) -> str:
    """File extension for a content type (".bin" when unknown)."""
    ct = content_type.split(";", 1)[0].strip().lower()
    return EXTENSIONS.get(ct) or mimetypes.guess_extension(ct) or ".bin"


def payload_name(provider: str, content_type: str) -> str:
    """A new relative path in the payload store: {provider}/{YYYY-MM-DD}/{uuid}.{ext}."""
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return f"{provider}/{day}/{uuid.uuid4().hex}{extension_for(content_type)}"


def payload_open(name: str):
    """Open a new payload file for writing, creating its folder."""
    path = Path(settings.FILE_STORAGE_PATH) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "wb")


def decoder_for(content_encoding: str):
    """An incremental decoder for a Content-Encoding, None for identity, False if unsupported."""
    enc = content_encoding.strip().lower()
    if enc in ("", "identity"):
        return None
    if enc in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if enc == "deflate":
        return zlib.decompressobj()
    try:
        if enc == "br":
            import brotli  # optional: only when the user installed it

            return brotli.Decompressor()
    except ImportError:
        pass
    return False


class BodyCapture:
    """Tee target for one body: keeps decoded text in memory, spills to a payload file."""

    def __init__(self, *, provider: str, content_type: str, content_encoding: str = "",
                 stream: bool = False) -> None:
        self.provider = provider
        self.content_type = content_type
        self.is_text = content_type_is_text(content_type)
        self.stream = stream
        self.decoder = decoder_for(content_encoding)
        if self.decoder is False:  # unknown encoding: keep the bytes exactly as received
            self.decoder, self.is_text = None, False
        self.limit = settings.LOG_BODY_INLINE_MAX_BYTES
        self.parts: list[bytes] = []
        self.size = 0
        self.file = None
        self.file_name = ""
        self.sha = None
        self.event_offsets: list[float] | None = [] if stream else None
        self.started = time.monotonic()
        self.write_error = ""
        self.discarded = False

    def feed(self, chunk: bytes) -> None:
        """Take one chunk as it passes; never raises into the relay."""
        if self.event_offsets is not None:
            n = chunk.count(b"\n\n") + chunk.count(b"\r\n\r\n")  # Google frames events with CRLF
            if n:
                at = round((time.monotonic() - self.started) * 1000, 1)
                self.event_offsets.extend([at] * n)
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except Exception as exc:  # corrupt compressed data: log what we have
                self.write_error = f"decode failed: {exc}"
                self.decoder = None
        self._keep(chunk)

    def _keep(self, data: bytes) -> None:
        """Hold or write decoded bytes."""
        if not data:
            return
        self.size += len(data)
        if self.file is None and self.is_text and self.size <= self.limit:
            self.parts.append(data)
            return
        if self.write_error:
            return
        try:
            if self.file is None:
                self.file_name = payload_name(self.provider, self.content_type)
                self.file = payload_open(self.file_name)
                self.sha = hashlib.sha256()
                for part in self.parts:
                    self.file.write(part)
                    self.sha.update(part)
                self.parts = []
            self.file.write(data)
            self.sha.update(data)
        except OSError as exc:  # disk full etc.: the client still gets its answer
            self.write_error = f"response body file not saved: {exc}"
            self._file_discard()

    def _file_discard(self) -> None:
        """Drop a partly written file: a truncated copy is no evidence, and frees the disk."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            (Path(settings.FILE_STORAGE_PATH) / self.file_name).unlink(missing_ok=True)
        self.file, self.file_name, self.parts, self.discarded = None, "", [], True

    def finish(self) -> dict[str, Any]:
        """Close any file and describe the captured body for the log record."""
        if self.decoder is not None:
            try:
                self._keep(self.decoder.flush())
            except Exception:
                pass
        out: dict[str, Any] = {"body_size": self.size}
        if self.event_offsets is not None:
            out["event_offsets_ms"] = self.event_offsets
        if self.discarded:
            out["capture_error"] = self.write_error
            return out
        if self.file is not None:
            try:
                self.file.close()
            except OSError as exc:
                self.write_error = f"response body file not saved: {exc}"
                self._file_discard()
                out["capture_error"] = self.write_error
                return out
            out["body_file"] = {"name": self.file_name, "size": self.size,
                                "sha256": self.sha.hexdigest() if self.sha else "",
                                "content_type": self.content_type, "error": self.write_error}
            return out
        data = b"".join(self.parts)
        try:
            out["body"] = data.decode("utf-8")
        except UnicodeDecodeError:
            # Not text after all: raw bytes never go into a TEXT column.
            self.is_text = False
            self._keep_file_now(data)
            if self.discarded:
                out["capture_error"] = self.write_error
                return out
            out["body_file"] = {"name": self.file_name, "size": self.size,
                                "sha256": self.sha.hexdigest() if self.sha else "",
                                "content_type": self.content_type, "error": self.write_error}
        if self.write_error:
            out["capture_error"] = self.write_error
        return out

    def _keep_file_now(self, data: bytes) -> None:
        """Write held bytes straight to a payload file."""
        self.size -= len(data)
        self.parts = []
        self.limit = -1
        self._keep(data)
        if self.file is not None:
            self.file.close()
