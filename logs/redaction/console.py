"""Scrubs credentials from every console log line (ours, Django's, uvicorn's access log, httpx's)."""

import logging
import re
from typing import Any

from logs.redaction.redact import (MASK, header_is_secret, param_is_secret, path_mask, query_piece_mask, shapes_mask,
                                   token_mask, value_mask)

# A query's piece (name=value or a bare name, percent-encoded or not: api%5Fkey=, note=sk%2D...), masked
# as the log's query is; and a "name: value" or "name=value" pair as headers and dicts print, which counts
# when its name says it is a secret (built-in names, LOG_REDACT_*, providers' own, secret-like words).
_PARAM = re.compile(r"(?<=[?&])[^&\s\"'#;,]+")
_PAIR = re.compile(r"(?<![\w%-])([A-Za-z][\w.-]{0,63})([\"']?\s*[:=]\s*[\"']?)([^\"'\r\n,}\]&]+)")
# A percent-encoded run outside a query (a URL's path: /v1/models/sk%2D...), decoded to find a key's shape.
_ENCODED = re.compile(r"[\w.~+-]*(?:%[0-9A-Fa-f]{2}[\w.~+-]*)+")
_SCHEME = re.compile(r"(?i)\b((?:bearer|basic|token)\s+)([A-Za-z0-9._~+/=-]{8,})")
# A URL's user:password@ (an upstream behind basic auth, given in GATEWAY_PROVIDERS): httpx's request log prints
# the URL whole. Shown as user:***@, as the settings' refusals show it; a user part alone (redis://token@) may be
# the credential itself.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s@:?#]*)(:[^/\s@?#]*)?@")


# An exception's class before its message ("KeyError: 'messages'", "TokenError: ...") names no credential:
# its message is what an operator reads to find the bug.
_EXCEPTION_NAME = re.compile(r"[A-Za-z]\w*(?:Error|Exception|Warning)")


def _pair(match: re.Match) -> str:
    name = match.group(1)
    if MASK in match.group(3) or _EXCEPTION_NAME.fullmatch(name) or (not header_is_secret(name)
                                                                     and not param_is_secret(name)):
        return match.group(0)
    return match.group(1) + match.group(2) + value_mask(match.group(3))


def text_redact(text: str) -> str:
    """Mask anything that looks like a credential in a free-text line."""
    text = _PARAM.sub(lambda m: query_piece_mask(m.group(0), logged=True), text)
    if "%" in text:
        text = _ENCODED.sub(lambda m: path_mask(m.group(0)), text)
    text = _PAIR.sub(_pair, text)
    text = _SCHEME.sub(lambda m: m.group(1) + token_mask(m.group(2)), text)
    if "@" in text:
        text = _USERINFO.sub(lambda m: f"{m.group(1)}{m.group(2)}:***@" if m.group(3) else f"{m.group(1)}***@", text)
    return shapes_mask(text)


def _arg_redact(arg: Any) -> Any:
    """One %-format argument, replaced by its scrubbed text only when it held a credential."""
    if arg is None or isinstance(arg, (int, float, bool)):
        return arg
    try:
        text = str(arg)
    except Exception:  # an object that cannot print itself is left for logging to report
        return arg
    # CR/LF inside an argument (a path with %0d%0a) would forge extra log lines.
    clean = text_redact(text).replace("\r", "\\r").replace("\n", "\\n")
    return arg if clean == text else clean


def record_redact(record: logging.LogRecord) -> None:
    """Scrub a log record in place: message, arguments, traceback and stack text."""
    if isinstance(record.msg, str):
        record.msg = text_redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_arg_redact(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _arg_redact(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
        # Formatters reuse exc_text when set, so the traceback is printed scrubbed.
        record.exc_text = text_redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = text_redact(record.stack_info)


_installed = False


def console_redaction_install() -> None:
    """Scrub every log record at creation, whichever logger or handler it goes to (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            record_redact(record)
        except Exception:  # scrubbing must never cost the log line itself
            pass
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
