"""Splits a multipart/form-data body (kept in a file, or small in memory) into its fields and file parts."""

import mmap
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

FIELD_MAX = 64 * 1024  # a text part (no filename) up to this is a form field, read as text; larger ones are files
_LINES = re.compile(r"\r\n|\n|\r")
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass
class Part:
    """One part: its headers, name, filename, and where its bytes lie in the source file."""

    name: str
    filename: str | None
    content_type: str
    start: int
    end: int
    # The names a server may read it under besides `name` (see _other_names): a name* parameter's, an earlier
    # Content-Disposition's.
    other_names: tuple[str, ...] = ()


def header_params(value: str) -> dict[str, str]:
    """Parameters of a header like Content-Disposition or Content-Type."""
    params = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"')
        params[key.lower()] = raw
    return params


def multipart_boundary(content_type: str) -> str | None:
    """The boundary of a multipart Content-Type, or None."""
    if not content_type.lower().startswith("multipart/"):
        return None
    return header_params(content_type).get("boundary") or None


class TooManyParts(ValueError):
    """The body has more parts than the caller will handle."""


class BoundaryInside(ValueError):
    """A part holds the form's boundary: servers that take a bare line break before it (Werkzeug) split the part
    there, into parts this reader does not see."""


def multipart_split(path: Path, boundary: str, max_parts: int = 0) -> tuple[list[Part], bool]:
    """Locate the parts of a multipart body without loading it; (parts, complete).

    With max_parts, a body of more parts raises TooManyParts (a flood of tiny parts must not
    cost a file and a row each).
    """
    if path.stat().st_size == 0:
        return [], False
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return _parts_locate(m, boundary, max_parts)


def multipart_fields(body: bytes, boundary: str, max_parts: int) -> dict[str, str | None]:
    """The small text fields of a multipart body held in memory (no file parts): what names its model.

    A name sent twice with two values (model=whisper-1, then model=gpt-4o-transcribe) is None: servers
    differ on which one they take (Starlette's form, and so FastAPI servers such as vLLM, the last), and the
    gateway judging the first let a key limited to models run the other. So is one whose value cannot be read
    here: sent, unlike a name left out (a transcription's response_format says whether its answer reports usage).
    A body of more than max_parts parts raises TooManyParts, one whose parts hold its boundary BoundaryInside: none
    of its fields is read.
    """
    parts, _ = _parts_locate(body, boundary, max_parts)
    if parts and body.count(b"--" + boundary.encode("latin-1"), 0, parts[-1].end) > len(parts):
        raise BoundaryInside("a part holds the form's boundary")
    fields: dict[str, str] = {}
    repeated: set[str] = set()
    for part in parts:
        if part.other_names:  # named twice (name*, two Content-Dispositions): servers differ on which counts
            repeated.update((part.name, *part.other_names))
        elif part.filename is None and part.end - part.start <= FIELD_MAX:
            try:
                value = body[part.start:part.end].decode("utf-8")
            except UnicodeDecodeError:
                repeated.add(part.name)  # a value nobody can read here may be the one the server takes
                continue
            if fields.setdefault(part.name, value) != value:
                repeated.add(part.name)
        else:
            repeated.add(part.name)  # a file part, or one too large to read, under a field's name
    return {**fields, **dict.fromkeys(repeated)}


def _parts_locate(m, boundary: str, max_parts: int) -> tuple[list[Part], bool]:
    """The parts of a multipart body in m (bytes, or a file's mmap); (parts, complete)."""
    parts: list[Part] = []
    delim = b"--" + boundary.encode("latin-1")
    pos = m.find(delim)
    if pos < 0:
        return parts, False
    while True:
        pos += len(delim)
        if m[pos:pos + 2] == b"--":
            return parts, True
        head_end = m.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return parts, False
        # Split at bare line breaks too, as Werkzeug does: a header hidden after one is a header to it.
        headers = _LINES.split(_header_text(m[pos:head_end]).strip("\r\n"))
        start = head_end + 4
        nxt = m.find(b"\r\n" + delim, start)
        if nxt < 0:
            return parts, False
        dispositions, ctype = [""], "text/plain"
        for h in headers:
            key, _, value = h.partition(":")
            if key.strip().lower() == "content-disposition":
                dispositions.append(value)
            elif key.strip().lower() == "content-type":
                ctype = value.strip()
        params = header_params(dispositions[-1])
        # A filename* that cannot be decoded (or is empty) still makes the part a file: named as sent.
        extended = params.get("filename*")
        filename = (_extended(extended) if extended else None) or params.get("filename") or extended
        parts.append(Part(params.get("name", ""), filename, ctype, start, nxt, _other_names(dispositions[1:])))
        if max_parts and len(parts) > max_parts:
            raise TooManyParts(f"more than {max_parts} parts")
        pos = nxt + 2


def _header_text(raw: bytes) -> str:
    """A part's headers as text: browsers, curl and the SDKs send a name or filename of other letters
    as raw UTF-8 (RFC 7578 4.2); read as latin-1 (HTTP's own headers) they were stored garbled."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _extended(value: str) -> str | None:
    """An RFC 5987 parameter value (filename*=UTF-8''%D0%BF.png), decoded; None if it cannot be."""
    charset, sep, rest = value.partition("'")
    _lang, sep2, encoded = rest.partition("'")
    if not (sep and sep2):
        return None
    try:
        return unquote(encoded, encoding=charset or "utf-8", errors="strict")
    except (LookupError, UnicodeDecodeError):
        return None


def _other_names(dispositions: list[str]) -> tuple[str, ...]:
    """The names a part may be given besides its last Content-Disposition's name: a name* parameter's (which
    Werkzeug and python-multipart take when it comes last), and an earlier Content-Disposition's (Werkzeug takes
    the first, python-multipart the last)."""
    names: set[str] = set()
    for disposition in dispositions:
        params = header_params(disposition)
        names.add(params.get("name", ""))
        if (extended := params.get("name*")) is not None:
            names.update(_readings(extended))
    return tuple(names) if len(names) > 1 else ()


def _readings(value: str) -> tuple[str, ...]:
    """What an RFC 5987 parameter value may be read as: as sent, decoded, or (a charset Python's email package
    does not know, which it then skips) percent-decoded as UTF-8."""
    _charset, _, rest = value.partition("'")
    encoded = rest.partition("'")[2] or value
    return tuple({value, _extended(value) or value, unquote(encoded, errors="replace")})


def part_read(path: Path, part: Part) -> bytes:
    """The bytes of one (small) part."""
    with open(path, "rb") as f:
        f.seek(part.start)
        return f.read(part.end - part.start)
