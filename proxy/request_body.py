"""The request body as received: read from ASGI with the size and idle limits, kept for the upstream and the log.

A small body stays in memory; past FILE_UPLOAD_MAX_MEMORY_SIZE it rolls over into a spool file,
which is also the file the log keeps when it keeps the body as a file (no second copy). The
upstream reads it through its own file handle, so the ingest process may move the file into
the payload store while the upstream is still reading.
"""

import asyncio
import hashlib
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings

from logs.pipeline.spool import spool_create, spool_discard, spool_path
from logs.records import FileRef
from logs.redaction.scrub import Masked, Scrubber
from wire.encoding import DecodeError, decode_pieces, encoding_name
from wire.jsonutil import json_ambiguity, json_or_none, json_parse_by
from wire.multipart import BoundaryInside, TooManyParts, multipart_boundary, multipart_fields

CHUNK = 64 * 1024
# The most a compressed body is decoded to, on the event loop, to be read (its model for a key's model list and
# the hold queue's filter, its cache key): a few kilobytes of zstd decode to the whole MAX_REQUEST_BODY_BYTES,
# and decoding, parsing and hashing that stalled every exchange of the worker for a second or more per request.
# A body in memory is at most 1 MiB as sent; JSON rarely compresses more than tenfold.
READ_DECODED_MAX = 16 * 1024 * 1024
_JSON_START = re.compile(rb"[ \t\r\n]*[{\[]")  # JSON's own whitespace, then an object or array


@dataclass(frozen=True)
class Refusal:
    """Why the gateway answers a request itself instead of forwarding it."""

    status: int
    message: str
    kind: str = "invalid_request_error"  # the error type in the provider's error body
    outcome: str = "gateway_error"
    body_size: int | None = None  # what was received when the refusal came mid-body
    headers: tuple[tuple[str, str], ...] = ()


def body_payload(body: bytes | None, content_type: str) -> object:
    """What a request body says, for the policy steps (its model above all), as the log reads it: JSON parsed,
    or a multipart form's text fields ({} for one body_reading cannot read); None for anything else."""
    try:
        return _payload(body, content_type)
    except (TooManyParts, BoundaryInside):
        return {}


def _payload(body: bytes | None, content_type: str) -> object:
    """body_payload's reading; TooManyParts for a form of more parts than the gateway reads, BoundaryInside for
    one that lenient servers split into other parts."""
    if not body:
        return None
    boundary = multipart_boundary(content_type)
    if boundary is not None:
        return multipart_fields(body, boundary, settings.LOG_MULTIPART_MAX_PARTS)
    return json_or_none(body)


def headers_for_json(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers for a body replaced by JSON text (an operator's edit, a hook's `json`): a JSON type declared
    is kept, any other replaced by application/json (a form upload's went as JSON labelled multipart/form-data
    with the form's boundary, which the upstream read as a broken form)."""
    declared = next((v for k, v in headers if k.lower() == "content-type"), "")
    if "json" in declared.lower():
        return list(headers)
    return [*((k, v) for k, v in headers if k.lower() != "content-type"), ("Content-Type", "application/json")]


def body_decoded(headers: list[tuple[str, str]], body: bytes, size_max: int) -> bytes | None:
    """body with the headers' Content-Encoding undone (body itself when there is none); None when it cannot
    be: corrupt, stacked encodings, or more than size_max bytes decoded."""
    # Every Content-Encoding line, as one list (RFC 9110): the first alone (identity) left a gzip body sent with a
    # second line unread, which the upstream decodes.
    encoding = ", ".join(v for k, v in headers if k.lower() == "content-encoding")
    try:
        name = encoding_name(encoding)
        if not name:
            return body
        out, size = [], 0
        for piece in decode_pieces(name, [body]):
            size += len(piece)
            if size > size_max:
                return None
            out.append(piece)
        return b"".join(out)
    except DecodeError:
        return None


@dataclass(frozen=True, slots=True)
class BodyReading:
    """The body that goes upstream as the policy steps read it, read once for all of them (Exchange.body_reading):
    the key step's model list, budget and token count, the cache's key, the hold queue's model filter and the
    stream usage step each ask this, not the bytes (each parsing and checking them cost a keyed request twice).

    `unread` says why the gateway cannot read the body for sure: it does not parse, repeats a key, nests too
    deep, has two Content-Types, does not decode... A step that must read it refuses it as bad input
    (Exchange.body_refusal, 400). `payload` is what it says (JSON parsed exactly, a repeated key's last value
    kept; a form's text fields), None when nothing could be read."""

    payload: object = None
    unread: str = ""
    ambiguity: str = ""  # wire.jsonutil.json_ambiguity's verdict ("" when none), also in `unread`
    decoded: bytes | None = None  # the body with its Content-Encoding undone (None: empty, or cannot be decoded)
    is_json: bool = False  # payload is the body's JSON (not a form's fields)
    by_orjson: bool = False  # orjson read that JSON (wire.jsonutil.json_parse_by): it may write it back exactly


def body_reading(headers: list[tuple[str, str]], body: bytes | None, content_type: str) -> BodyReading:
    """The body read as body_payload reads it, its Content-Encoding undone; with why it cannot be read for sure:
    of two Content-Types, compressed past decoding, a form of too many parts or holding its boundary in a part,
    JSON that repeats a key, nests too deep or does not parse. Blocking for a large or compressed body (run it
    off the event loop)."""
    if not body:
        return BodyReading()
    if sum(k.lower() == "content-type" for k, _ in headers) > 1:
        # Django joins them, reading the last one's boundary; Starlette takes the first: a form in the body's
        # preamble, under the first boundary, was the one the upstream read.
        return BodyReading(unread="this request has more than one Content-Type header (servers differ on which "
                                  "they take)")
    decoded = body_decoded(headers, body, READ_DECODED_MAX)
    if decoded is None:
        return BodyReading(unread=f"this request's compressed body cannot be decoded to be read (corrupt, or more "
                                  f"than {READ_DECODED_MAX // (1024 * 1024)} MiB decoded)")
    if multipart_boundary(content_type) is not None:
        return _form_reading(decoded, content_type)
    return _json_reading(decoded)


def _form_reading(decoded: bytes, content_type: str) -> BodyReading:
    try:
        return BodyReading(payload=_payload(decoded, content_type), decoded=decoded)
    except TooManyParts:
        # Read as empty, such a form looked like one that sends no model and no response_format: a key's
        # checks of them were skipped while the upstream read every field.
        return BodyReading(decoded=decoded, unread=f"this request's form has more than "
                           f"{settings.LOG_MULTIPART_MAX_PARTS} parts, more than the gateway reads "
                           "(LOG_MULTIPART_MAX_PARTS)")
    except BoundaryInside:
        return BodyReading(decoded=decoded, unread="a part of this request's form holds the form's boundary, where "
                           "servers that take a bare line break before it (Werkzeug) see more fields")


def _json_reading(decoded: bytes) -> BodyReading:
    """JSON as read here (a BOM, UTF-16 too), exactly (json_parse: the stream usage step writes it back); or why
    it cannot be read for sure."""
    try:
        payload, by_orjson = json_parse_by(decoded)
    except (ValueError, UnicodeDecodeError):
        if not _JSON_START.match(decoded):
            return BodyReading(decoded=decoded)  # not JSON: nothing to read (a binary upload, plain text)
        if why := json_ambiguity(decoded):  # too deep for Python's json: a parser with a deeper limit reads it
            return _ambiguous(None, decoded, why)
        # Go's JSON (Ollama) reads bytes that are not UTF-8 as U+FFFD, and the model beside them.
        return BodyReading(decoded=decoded, unread="this request's body starts as JSON but cannot be read as JSON "
                                                   "(not UTF-8, or malformed)")
    if isinstance(payload, (dict, list)) and (why := json_ambiguity(decoded)):
        return _ambiguous(payload, decoded, why)
    return BodyReading(payload=payload, decoded=decoded, is_json=True, by_orjson=by_orjson)


def _ambiguous(payload: object, decoded: bytes, why: str) -> BodyReading:
    # Python's json and orjson keep a repeated key's last value, other parsers the first: the model judged here
    # was not always the one the upstream ran (realtime messages are judged so too).
    return BodyReading(payload=payload, decoded=decoded, is_json=payload is not None, ambiguity=why,
                       unread=f"this request's JSON {why} (parsers differ on which value counts)")


class BodySpool:
    """A body being received: bytes in memory, rolled over into a named spool file when large."""

    def __init__(self, name: str) -> None:
        self.name = name  # the spool file's name, should it need one
        self.size = 0
        self._memory: io.BytesIO | None = io.BytesIO()
        # A small body the log keeps as a file (binary, multipart) is still read from memory: its model,
        # its cache key and the upstream's copy do not depend on a file the ingest process may move.
        self._held: bytes | None = None
        self._file = None
        self.kept = False  # handed to the log: the ingest process owns the file now
        # Opened when the file is handed to the log: the ingest moves it into the payload store as soon
        # as it writes the request's row, which may come before the upstream reads it (a held request,
        # a slow step), and an open handle still reads a moved or deleted file.
        self._reader = None
        self.spool_error = ""  # why the body could not be spooled to disk (it stayed in memory)
        self._on_disk = 0  # bytes of the body in its file
        self._unwritten = b""  # what a failed write left out of the file

    def write(self, data: bytes) -> None:
        """Append received bytes (rolling over to a file past the in-memory limit)."""
        self.size += len(data)
        if self._memory is not None and self.size > settings.FILE_UPLOAD_MAX_MEMORY_SIZE and not self.spool_error:
            try:
                self._rollover()
            except OSError as exc:  # spool disk full: keep receiving in memory (bounded by MAX_REQUEST_BODY_BYTES)
                self.spool_error = str(exc)
        if self._memory is not None:
            self._memory.write(data)
            return
        try:
            self._file_write(data)
        except OSError as exc:  # the disk filled up meanwhile: what is on it, then the rest, in memory
            self._to_memory(exc)

    def _file_write(self, data: bytes) -> None:
        """Write all of data to the (unbuffered) file, counting what reached it; OSError leaves the rest in
        self._unwritten."""
        view = memoryview(data)
        try:
            while view:
                n = self._file.write(view)
                self._on_disk += n
                view = view[n:]
        finally:
            self._unwritten = bytes(view)

    def _to_memory(self, exc: OSError) -> None:
        with open(spool_path(self.name), "rb") as f:
            self._memory = io.BytesIO(f.read(self._on_disk))
        self._memory.seek(0, io.SEEK_END)
        self._memory.write(self._unwritten)
        self.spool_error, self._unwritten = str(exc), b""
        self._discard_file()

    def _rollover(self) -> None:
        try:
            self._file = spool_create(self.name, buffered=False)  # closed by close/keep
            self._on_disk = 0
            self._file_write(self._memory.getvalue())
        except OSError:
            self._discard_file()
            raise
        self._memory = None

    def _discard_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        spool_discard(self.name)

    def in_memory(self) -> bytes | None:
        """The whole body when it is held in memory, else None."""
        return self._memory.getvalue() if self._memory is not None else self._held

    def keep(self, content_type: str, scrubber: Scrubber, masked: Masked) -> FileRef:
        """The spool file the log keeps of this body (blocking: run it off the event loop).

        The body's own file, unless credentials had to be masked: then a masked copy, and the
        original stays for the upstream. OSError when it cannot be written (the body is still
        forwarded, from memory).
        """
        if self.spool_error:
            raise OSError(self.spool_error)
        if self._memory is not None:
            self._held = self._memory.getvalue()
            self._rollover()
        self._file.close()
        source = spool_path(self.name)
        copy = source.with_name(self.name + ".log")
        if scrubber.masked_copy(source, copy, content_type, answer=False, masked=masked):
            name = copy.name
        else:
            self._reader = open(source, "rb")  # before the ingest can see the record that hands it over
            name, self.kept = self.name, True
        digest, size = hashlib.sha256(), 0
        with open(spool_path(name), "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        return FileRef(spool=name, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def read_all(self) -> bytes:
        """The whole body as bytes, from memory or from its file (blocking when it is a file)."""
        data = self.in_memory()
        if data is not None:
            return data
        if self._reader is not None:
            self._reader.seek(0)
            return self._reader.read()
        if not self._file.closed:
            self._file.flush()
        return spool_path(self.name).read_bytes()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body for the upstream, streamed from memory or from its file (its own handle)."""
        data = self.in_memory()
        if data is not None:
            yield data
            return
        if self._reader is not None:
            self._reader.seek(0)
            while chunk := self._reader.read(CHUNK):
                yield chunk
            return
        if not self._file.closed:
            self._file.flush()
        with open(spool_path(self.name), "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def close(self) -> None:
        """Release the body; its file goes unless the log kept it."""
        self._held = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._file is not None and not self._file.closed:
            self._file.close()
        if self._file is not None and not self.kept:
            self._discard_file()


def _header(scope: dict, name: bytes) -> bytes | None:
    """First value of a request header in an ASGI scope."""
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v
    return None


def body_is_large(scope: dict) -> bool:
    """A body declared over 1 MiB, or chunked (of a size not known): worth refusing before it is read."""
    declared = declared_length(scope)
    if declared is not None:
        return declared > LARGE_BODY_BYTES
    return b"chunked" in (_header(scope, b"transfer-encoding") or b"").lower()


LARGE_BODY_BYTES = 1024 * 1024


def declared_length(scope: dict) -> int | None:
    """The body's Content-Length, when it declares one that reads as a number."""
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


# On a refusal that leaves the body unread: the server drops the connection instead of reading the
# rest of an unwanted body (or waiting for one that stalled) before the next request on it.
CONNECTION_CLOSE = (("Connection", "close"),)


def _too_large(size: int, counted: bool = False) -> Refusal:
    limit = settings.MAX_REQUEST_BODY_BYTES
    tail = " (counted while reading)" if counted else ""
    return Refusal(413, f"Request body of {size} bytes exceeds MAX_REQUEST_BODY_BYTES ({limit}).{tail}",
                   body_size=size, headers=CONNECTION_CLOSE)


def refusal_before_body(scope: dict) -> Refusal | None:
    """Limits that apply before any body byte is read: header block size, declared body size."""
    header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
    if header_bytes > settings.MAX_REQUEST_HEADER_BYTES:
        return Refusal(431, f"Request headers of {header_bytes} bytes exceed MAX_REQUEST_HEADER_BYTES "
                            f"({settings.MAX_REQUEST_HEADER_BYTES}).", body_size=0)
    declared = declared_length(scope)
    if declared is not None and declared > settings.MAX_REQUEST_BODY_BYTES:
        return _too_large(declared)
    return None


async def body_receive(scope: dict, receive, spool: BodySpool) -> Refusal | None:
    """Read the whole body into the spool, enforcing the size limit and the idle timeout.

    Returns why the request must be refused (too large, too slow, client gone), or None.
    """
    declared = declared_length(scope)
    chunked = b"chunked" in (_header(scope, b"transfer-encoding") or b"").lower()
    expected = declared if declared is not None else "an unknown number of"
    while True:
        try:
            async with asyncio.timeout(settings.REQUEST_BODY_TIMEOUT):
                message = await receive()
        except TimeoutError:
            return Refusal(408, f"Request body incomplete: got {spool.size} of {expected} bytes, then nothing "
                                f"for {settings.REQUEST_BODY_TIMEOUT:g} s (REQUEST_BODY_TIMEOUT).",
                           body_size=spool.size, headers=CONNECTION_CLOSE)
        if message["type"] == "http.disconnect":
            if not declared and not chunked:
                return None  # nothing was expected: a client that left is noticed later
            return Refusal(400, f"Client closed the connection after {spool.size} of {expected} body bytes.",
                           outcome="client_aborted", body_size=spool.size)
        data = message.get("body", b"")
        if spool.size + len(data) > settings.MAX_REQUEST_BODY_BYTES:
            return _too_large(spool.size + len(data), counted=True)
        if data:
            spool.write(data)
        if not message.get("more_body", False):
            return None
