"""Credentials inside what the log keeps: the request's own keys wherever they echo, and fields named like secrets.

Two kinds of masking, for journal lines, inline bodies and body files alike:
- the exchange's own credentials (from its headers and query, redact.credentials_collect), found
  by their bytes in any encoding a body might carry them in (raw, JSON-escaped, URL-encoded);
- values of fields whose name says they hold a credential (`"api_key": "..."` in JSON,
  `password=...` in a form, a multipart field `client_secret`), whoever's they are.
The upstream always gets the bytes the client sent; only the logged copy is masked, and the
exchange's notes say what was masked.
"""

import functools
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

import orjson
from django.conf import settings

from logs.redaction.console import text_redact
from logs.redaction.redact import MASK, field_is_secret, token_mask, value_mask
from wire.jsonutil import json_line, json_parse
from wire.multipart import FIELD_MAX, TooManyParts, multipart_boundary, multipart_split

CHUNK = 1 << 20
# JSON files larger than this are searched for the request's own credentials only; their fields are
# not parsed (reading them whole would cost the worker their size in memory).
FIELD_SCAN_MAX_BYTES = 16 * 1024 * 1024
# "name": "value" in JSON text (escapes included); names are short.
_JSON_FIELD = re.compile(rb'"((?:[^"\\\r\n]|\\.){1,128})"(\s*:\s*)"((?:[^"\\]|\\.)*)"')


def text_scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of the given secrets in a text by their masked form."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, value_mask(secret))
    return text


def error_scrub(text: str, secrets: list[str]) -> str:
    """An exception's text (a policy step's, a request hook's, or their traceback) as the client's answer, the
    log and the console get it: the exchange's credentials masked, and what looks like one as the console
    masks it (a key by its shape, a value named like a credential), since an exception may quote what is no
    credential of the request: the body's `'api_key': ...`, a team key the hook holds."""
    return text_redact(text_scrub(text, secrets))


def record_scrub(obj: Any, secrets: list[str]) -> Any:
    """A copy of a log record (nested dicts/lists/strings) with the secrets masked everywhere."""
    if not secrets:
        return obj
    if isinstance(obj, str):
        return text_scrub(obj, secrets)
    if isinstance(obj, dict):
        return {k: record_scrub(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [record_scrub(v, secrets) for v in obj]
    return obj


def text_forms(text: str) -> set[bytes]:
    """Every way a string can appear inside a JSON line: raw UTF-8, and JSON-escaped either way."""
    forms = {text.encode("utf-8", "surrogatepass"), json.dumps(text)[1:-1].encode()}
    try:
        forms.add(orjson.dumps(text)[1:-1])
    except orjson.JSONEncodeError:
        pass
    return forms


def secret_needles(secrets: list[str]) -> frozenset[bytes]:
    """Each secret as it could appear in a journal line."""
    return frozenset(form for secret in secrets for form in text_forms(secret))


def line_scrub(line: bytes, secrets: list[str], needles: frozenset[bytes]) -> bytes:
    """A journal line with the request's secrets masked wherever they echo (a body, an error).

    The line is searched first and rebuilt only when a secret shows up (rarely: a body echoing
    the key): walking every record to scrub it cost more than writing it.
    """
    if not any(needle in line for needle in needles):
        return line
    return json_line(record_scrub(json_parse(line), secrets))


def byte_replacements(secrets: list[str]) -> dict[bytes, bytes]:
    """Each secret in every form a body may carry it (raw, JSON-escaped, URL-encoded) -> its masked form."""
    out: dict[bytes, bytes] = {}
    for secret in secrets:
        masked = value_mask(secret)
        for form in text_forms(secret) | {quote(secret, safe="").encode(), quote_plus(secret).encode()}:
            out.setdefault(form, masked.encode())
    return out


class Masked:
    """What was masked in one body, for the exchange's notes."""

    def __init__(self) -> None:
        self.echoes = 0
        self.fields: dict[str, int] = {}
        self.unchecked = ""  # why some fields could not be looked at

    def __bool__(self) -> bool:
        return bool(self.echoes or self.fields)

    def note(self, what: str) -> str:
        """A line for the log: what was masked in `what` (e.g. "request body"), or ""."""
        parts = []
        if self.echoes:
            parts.append(f"masked {self.echoes} copy(ies) of the request's credentials")
        if self.fields:
            names = ", ".join(f"{k} ({n})" if n > 1 else k for k, n in sorted(self.fields.items()))
            parts.append(f"masked the values of fields named like credentials: {names}")
        if self.unchecked:
            parts.append(self.unchecked)
        return f"{what}: " + "; ".join(parts) if parts else ""


def _field_mask(match: re.Match, answer: bool, masked: Masked) -> bytes:
    """One "name": "value" pair, its value masked when the name says it is a credential."""
    try:
        name = json.loads(b'"' + match.group(1) + b'"')
    except ValueError:
        return match.group(0)
    if not field_is_secret(name, answer=answer) or MASK.encode() in match.group(3):
        return match.group(0)
    try:
        value = json.loads(b'"' + match.group(3) + b'"')
    except ValueError:
        value = match.group(3).decode("utf-8", "replace")
    masked.fields[name] = masked.fields.get(name, 0) + 1
    return b'"' + match.group(1) + b'"' + match.group(2) + json.dumps(token_mask(value), ensure_ascii=False).encode()


def _form_mask(data: bytes, answer: bool, masked: Masked) -> bytes:
    """An x-www-form-urlencoded body with the values of credential-named fields masked."""
    out = []
    for piece in data.split(b"&"):
        name, eq, value = piece.partition(b"=")
        field = unquote_plus(name.decode("utf-8", "replace"))
        if eq and field_is_secret(field, answer=answer) and MASK.encode() not in value:
            masked.fields[field] = masked.fields.get(field, 0) + 1
            piece = name + b"=" + quote_plus(token_mask(unquote_plus(value.decode("utf-8", "replace")))).encode()
        out.append(piece)
    return b"&".join(out)


def fields_mask(data: bytes, content_type: str, *, answer: bool, masked: Masked) -> bytes:
    """A JSON or form body with the values of fields named like credentials masked."""
    ct = content_type.split(";", 1)[0].strip().lower()
    if ct == "application/x-www-form-urlencoded":
        return _form_mask(data, answer, masked)
    if "json" in ct or data[:1] in (b"{", b"["):
        found = _json_secrets(data, answer)
        if found == FREE:
            return data
        data = _JSON_FIELD.sub(lambda m: _field_mask(m, answer, masked), data)
        return _containers_mask(data, answer, masked) if found == IN_CONTAINERS else data
    return data


def _containers_mask(data: bytes, answer: bool, masked: Masked) -> bytes:
    """Every key-shaped string (CONTAINED_MIN characters or more, no whitespace) in a list or object
    that a credential-named field holds ("credentials": ["sk-…"], "api_key": {"value": "sk-…"}), which
    the field regex (a name and a string) does not reach; not the words of a tool's JSON schema for
    such a field ("password": {"type": "string", "description": "…"}). The body is written anew
    (compact JSON) only when one is found."""
    doc = orjson.loads(data)
    changed = False

    def walk(node: Any, field: str | None) -> Any:  # field: the credential-named field it is in
        nonlocal changed
        if isinstance(node, str):
            if field and len(node) >= CONTAINED_MIN and MASK not in node and not any(c.isspace() for c in node):
                changed = True
                masked.fields[field] = masked.fields.get(field, 0) + 1
                return token_mask(node)
            return node
        if isinstance(node, list):
            return [walk(v, field) for v in node]
        if isinstance(node, dict):
            return {key: walk(value, field or (key if isinstance(value, (dict, list))
                                               and field_is_secret(key, answer=answer) else None))
                    for key, value in node.items()}
        return node

    new = walk(doc, None)
    return orjson.dumps(new) if changed else data


FREE, IN_STRINGS, IN_CONTAINERS = 0, 1, 2
CONTAINED_MIN = 12


def _json_secrets(data: bytes, answer: bool) -> int:
    """FREE when a JSON text parses and no field of it is named like a credential; IN_CONTAINERS when
    such a field holds a list or an object; else IN_STRINGS (the field regex's work, as for text
    the parser refuses: not JSON, nested too deep).

    Parsing (orjson, in C) and looking at the keys costs a fraction of running the field regex
    over every string of the text, and nearly every body has no such field.
    """
    try:
        stack = [orjson.loads(data)]
    except orjson.JSONDecodeError:
        return IN_STRINGS
    found = FREE
    # A plain dict per side: field_is_secret's lru_cache, called with a keyword, cost more than the walk itself.
    secret = _SECRET_IN_ANSWERS if answer else _SECRET_IN_REQUESTS
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                named = secret.get(key)
                if named is None:
                    named = _secret_named(secret, key, answer)
                if isinstance(value, str):
                    if named:
                        found = IN_STRINGS
                elif isinstance(value, (dict, list)):
                    if named:
                        return IN_CONTAINERS
                    stack.append(value)
        else:
            stack.extend(v for v in node if isinstance(v, (dict, list)))
    return found


_SECRET_IN_REQUESTS: dict[str, bool] = {}
_SECRET_IN_ANSWERS: dict[str, bool] = {}
_SECRET_NAMES_MAX = 4096  # field names are the client's and the upstream's word: the memo stays bounded


def _secret_named(memo: dict[str, bool], name: str, answer: bool) -> bool:
    if len(memo) >= _SECRET_NAMES_MAX:
        memo.clear()
    memo[name] = named = field_is_secret(name, answer=answer)
    return named


@functools.lru_cache(maxsize=256)
def _forms(secrets: tuple[str, ...]) -> tuple[frozenset[bytes], dict[bytes, bytes], "re.Pattern[bytes] | None"]:
    """(needles, replacements, pattern) of a set of credentials, built once per distinct set.

    Most exchanges carry the same few keys: building these every request (every form of every
    secret, a regex of them all) cost more than the scrubbing itself.
    """
    replacements = byte_replacements(list(secrets))
    pattern = re.compile(b"|".join(re.escape(k) for k in sorted(replacements, key=len, reverse=True))
                         ) if replacements else None
    return secret_needles(list(secrets)), replacements, pattern


class Scrubber:
    """Masks one exchange's credentials, and credential-named fields, in what its log keeps."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = secrets
        self.needles, self.replacements, self._pattern = _forms(tuple(secrets))

    def line(self, line: bytes) -> bytes:
        """A journal line, the exchange's credentials masked."""
        return line_scrub(line, self.secrets, self.needles) if self.needles else line

    def text(self, text: str, content_type: str, *, answer: bool, masked: Masked) -> str:
        """An inline body: credential-named fields masked (the line scrub catches the echoes)."""
        data = text.encode("utf-8", "surrogatepass")
        out = fields_mask(data, content_type, answer=answer, masked=masked)
        return text if out is data else out.decode("utf-8", "surrogatepass")

    def _echoes_copy(self, src, dst, masked: Masked) -> None:
        """Copy src to dst with every form of the credentials replaced, across chunk boundaries."""
        overlap = max(len(k) for k in self.replacements) - 1
        carry = b""
        while True:
            chunk = src.read(CHUNK)
            data = carry + chunk
            cut = len(data) if not chunk else len(data) - overlap
            pos = 0
            for m in self._pattern.finditer(data):
                if m.start() >= cut:
                    break
                dst.write(data[pos:m.start()])
                dst.write(self.replacements[m.group()])
                masked.echoes += 1
                pos = m.end()
            if not chunk:
                dst.write(data[pos:])
                return
            dst.write(data[pos:max(pos, cut)])
            carry = data[max(pos, cut):]

    def masked_copy(self, src: Path, dst: Path, content_type: str, *, answer: bool, masked: Masked) -> bool:
        """Write src to dst with credentials masked; True (dst kept) when anything was, else dst is removed
        (and on any error: a full disk left partial copies in the spool folder for good)."""
        try:
            return self._masked_copy(src, dst, content_type, answer=answer, masked=masked)
        except BaseException:
            dst.unlink(missing_ok=True)
            raise

    def _masked_copy(self, src: Path, dst: Path, content_type: str, *, answer: bool, masked: Masked) -> bool:
        size = src.stat().st_size
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            if self._pattern is not None:
                self._echoes_copy(fin, fout, masked)
            else:
                while block := fin.read(CHUNK):
                    fout.write(block)
        ct = content_type.split(";", 1)[0].strip().lower()
        if size <= FIELD_SCAN_MAX_BYTES and ("json" in ct or ct == "application/x-www-form-urlencoded"):
            data = dst.read_bytes()
            out = fields_mask(data, content_type, answer=answer, masked=masked)
            if out is not data:
                dst.write_bytes(out)
        elif boundary := multipart_boundary(content_type):
            _multipart_fields_mask(dst, boundary, answer, masked)
        if not masked:
            dst.unlink()
            return False
        return True

    def file(self, path: Path, content_type: str, *, answer: bool, masked: Masked) -> bool:
        """Mask a body file in place (a masked copy renamed over it); True when anything changed."""
        tmp = path.with_name(path.name + ".scrub")
        if self.masked_copy(path, tmp, content_type, answer=answer, masked=masked):
            os.replace(tmp, path)
            return True
        return False


def _multipart_fields_mask(path: Path, boundary: str, answer: bool, masked: Masked) -> None:
    """Rewrite the text parts of a multipart body whose field name says they hold a credential."""
    try:
        parts, _complete = multipart_split(path, boundary, settings.LOG_MULTIPART_MAX_PARTS)
    except TooManyParts:
        masked.unchecked = f"fields not checked: more than {settings.LOG_MULTIPART_MAX_PARTS} parts"
        return
    # A part named like a credential is one whether or not the client gave it a filename (curl's
    # `-F password=@file`); one too large to read as text is replaced whole.
    spans = [p for p in parts if field_is_secret(p.name, answer=answer)]
    if not spans:
        return
    tmp = path.with_name(path.name + ".fields")
    try:
        _fields_rewrite(path, tmp, spans, masked)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _fields_rewrite(path: Path, tmp: Path, spans: list, masked: Masked) -> None:
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        pos = 0
        for part in spans:
            dst.write(src.read(part.start - pos))
            pos = part.end
            if part.end - part.start > FIELD_MAX:
                src.seek(part.end)
                value = MASK
            else:
                raw = src.read(part.end - part.start)
                if MASK.encode() in raw:  # masked already, as an echo of a known key
                    dst.write(raw)
                    continue
                value = token_mask(raw.decode("utf-8", "replace"))
            masked.fields[part.name] = masked.fields.get(part.name, 0) + 1
            dst.write(value.encode())
        while block := src.read(CHUNK):
            dst.write(block)
