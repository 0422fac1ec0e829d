"""A credential an answer spells out across a stream's events, found in the ingest without the credential.

The worker scrubs every record for the request's credentials, but a stream that sends a key a few
characters per event never holds it whole: only the reassembled answer (stream_result, built by
the ingest) does. The ingest process never sees the credentials; the record carries each one's
length and keyed fingerprint (the HMAC of requests.key_fingerprint), and the ingest fingerprints
the reassembled text's key-shaped runs of that length. Prose has few such runs: the cost is a few
regular expression scans per string, and an HMAC per window of a run long enough to hold a key.
"""

import re
from typing import Any

from logs.redaction.redact import key_fingerprint, token_mask

ECHO_MIN_LEN = 16  # shorter secrets are no API keys, and too likely to match ordinary text
RUN_MAX = 512  # a longer run (base64 data) is not searched: it would cost an HMAC per character
_RUN = re.compile(r"[A-Za-z0-9_\-.+/=~]+")


def echo_prints(secrets: list[str]) -> list[list] | None:
    """[length, fingerprint] of each key-shaped credential (no whitespace, ECHO_MIN_LEN or longer)."""
    prints = [[len(s), key_fingerprint(s)] for s in secrets if len(s) >= ECHO_MIN_LEN and not any(c.isspace() for c in s)]
    return prints or None


def _text_mask(text: str, prints: dict[int, set[str]]) -> str:
    found = set()
    for run in _RUN.finditer(text):
        word = run.group()
        if len(word) > RUN_MAX:
            continue
        for length, fingerprints in prints.items():
            for i in range(len(word) - length + 1):
                window = word[i:i + length]
                if key_fingerprint(window) in fingerprints:
                    found.add(window)
    for secret in found:
        text = text.replace(secret, token_mask(secret))
    return text


def echoes_mask(value: Any, prints: list | None) -> Any:
    """The value (parsed JSON) with every string's spelled-out credential masked."""
    if not prints:
        return value
    by_length: dict[int, set[str]] = {}
    for length, fingerprint in prints:
        by_length.setdefault(int(length), set()).add(str(fingerprint))
    shortest = min(by_length)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return _text_mask(v, by_length) if len(v) >= shortest else v
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v

    return walk(value)
