"""JSON in and out, fast: orjson first, the standard library for what orjson refuses."""

import json
from typing import Any

import orjson


# A digit as "0", anything else as "x": a run of 19 digits is then one bytes.find (C speed; a regex took
# 9 ms a megabyte).
_DIGITS_MARKED = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_RUN = b"0" * 19


def json_long_number(data: bytes | str) -> bool:
    """Whether a JSON text may hold an integer that orjson reads inexactly: it reads one past 64 bits as a float
    (2**64 as 1.8446744073709552e+19, written back so), and below -2**63 takes only 19 digits. Any run of
    19 digits says maybe (one in a string too: rare, and then the standard library reads it, exactly)."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    return _LONG_RUN in raw.translate(_DIGITS_MARKED)


def json_parse(data: bytes | str) -> Any:
    """JSON text as Python, exactly; raises ValueError if it is not JSON (or nests too deep to read).

    orjson first (a fifth of json.loads's time); json for what orjson refuses (NaN, escaped lone
    surrogates, nesting over 1024 levels: json then may raise RecursionError, which is reported as
    the ValueError callers expect) and for what it reads inexactly (integers past 64 bits,
    json_long_number): a body written back (a stream's usage asked for) kept a seed of 2**64 as a float.
    """
    return json_parse_by(data)[0]


def json_parse_by(data: bytes | str) -> tuple[Any, bool]:
    """json_parse's value, and whether orjson read it (else the standard library did: orjson refused it, or would
    have read it inexactly). orjson may then write it back as read; not what it refused (it writes NaN as null)."""
    if not json_long_number(data):
        try:
            return orjson.loads(data), True
        except orjson.JSONDecodeError:
            pass
    return _json_std(data), False


def _json_std(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deep to parse") from None


def json_or_none(data: bytes | str | None) -> Any:
    """A body or an event as JSON, to read and show; None when it is empty or not JSON (an SSE [DONE],
    plain text). An escaped lone surrogate ("\\ud800", valid JSON, no character) reads as U+FFFD, as
    the log's columns keep it and as pages and exports can write it (json_parse keeps it)."""
    if not data:
        return None
    try:
        return orjson.loads(data)  # refuses lone surrogates: what it reads has none
    except orjson.JSONDecodeError:
        pass
    try:
        value = _json_std(data)
    except ValueError:
        return None
    if (b"\\ud" if isinstance(data, bytes) else "\\ud") in data.lower():
        if isinstance(value, str):
            return text_valid(value)
        _lone_surrogates_replace(value)
    return value


class _KeyRepeated(Exception):
    pass


def _keys_once(pairs: list[tuple[str, Any]]) -> None:
    if len(dict(pairs)) != len(pairs):
        raise _KeyRepeated


# Built once: json.loads(data, object_pairs_hook=...) builds a decoder a call, half of a small body's check.
_PAIRS_DECODER = json.JSONDecoder(object_pairs_hook=_keys_once)


def json_ambiguity(data: bytes | str) -> str:
    """Why a JSON text may not read the same to every parser, or "" (also for what is no JSON): it repeats a key
    within one of its objects (`{"model": "a", "model": "b"}`, escapes undone: `"mod\\u0065l"` is `"model"`),
    where parsers differ on which value counts (Python's json and orjson keep the last, others the first, or
    refuse it); or it nests deeper than Python's json reads, where a parser with a deeper limit still reads it.
    What the gateway judged may then not be what an upstream reads."""
    try:
        if isinstance(data, str):
            if data.startswith("\ufeff"):
                return ""  # json.loads refuses it: no JSON
            text = data
        else:  # as json.loads reads bytes: UTF-8, -16 or -32, a BOM allowed
            text = data.decode(json.detect_encoding(data), "surrogatepass")
        _PAIRS_DECODER.decode(text)
    except _KeyRepeated:
        return "repeats a key"
    except RecursionError:
        return "nests too deep to read"
    except ValueError:
        return ""
    return ""


def text_valid(text: str) -> str:
    """The text with each lone surrogate (which no UTF-8 writer takes) as U+FFFD."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _lone_surrogates_replace(value: Any) -> None:
    """Every string of a parsed value through text_valid, keys included: in place, without recursion
    (the value may nest as deep as json.loads reads)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            for i, v in enumerate(item):
                if isinstance(v, str):
                    item[i] = text_valid(v)
                elif isinstance(v, (list, dict)):
                    stack.append(v)
        elif isinstance(item, dict):
            for k in list(item):
                v = item[k]
                if isinstance(v, str):
                    v = item[k] = text_valid(v)
                elif isinstance(v, (list, dict)):
                    stack.append(v)
                if isinstance(k, str) and (fixed := text_valid(k)) is not k:
                    del item[k]
                    item[fixed] = v


def json_line(obj: Any) -> bytes:
    """One compact JSON line, newline-terminated (orjson: a tenth of json.dumps's time)."""
    try:
        return orjson.dumps(obj, default=str) + b"\n"
    except orjson.JSONEncodeError:  # what orjson refuses (a lone surrogate, a huge int) json escapes
        return (json.dumps(obj, separators=(",", ":"), default=str) + "\n").encode()


def json_depth(obj: Any, limit: int) -> int:
    """How deeply a parsed JSON value nests (containers), counted without recursion; stops above limit."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest
