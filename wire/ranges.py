"""HTTP Range requests (RFC 9110 section 14): which bytes of a representation of known size to send.

One range only. A header this does not understand (another unit, bad syntax, several ranges) is
ignored and the whole representation is sent, as the RFC allows; a valid range that starts past
the end is unsatisfiable (416). Browsers ask for one range at a time when they scrub audio and
video, so a multipart/byteranges answer would buy nothing.
"""

import re

_SPEC = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


class RangeNotSatisfiable(ValueError):
    """No byte of the range exists: answer 416 with Content-Range: bytes */size."""


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The [start, end) bytes a Range header asks for; None to send the whole representation.

    "bytes=a-b" (b past the end is cut to the end), "bytes=a-" (from a to the end), "bytes=-n"
    (the last n bytes, all of them when n >= size). Raises RangeNotSatisfiable when none of the
    asked-for bytes exists.
    """
    match = _SPEC.fullmatch(header or "")
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last n bytes
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - count), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid, so ignored
    if start >= size:
        raise RangeNotSatisfiable(header)
    return start, size if not last else min(int(last) + 1, size)
