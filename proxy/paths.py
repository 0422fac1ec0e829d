"""Path normalisation: a proxied path may never step outside its provider's prefix."""

import posixpath
from urllib.parse import unquote


class PathRefused(ValueError):
    """The path tries to leave the provider prefix or hides its structure."""


def path_normalise(raw_path: str) -> str:
    """Return the path to route on, refusing dot segments, empty segments and encoded slashes."""
    decoded = raw_path
    for _ in range(3):  # %252e%252e decodes in two rounds: look through every layer
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    if "\\" in decoded or "\x00" in decoded or "//" in decoded:
        raise PathRefused("empty path segments and backslashes are not allowed")
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered:
        raise PathRefused("encoded slashes are not allowed")
    segments = decoded.split("/")
    if any(s in (".", "..") for s in segments):
        raise PathRefused("dot segments are not allowed")
    if not decoded.startswith("/"):
        raise PathRefused("path must be absolute")
    if posixpath.normpath(decoded) != decoded.rstrip("/") and decoded != "/":
        raise PathRefused("path is not in normal form")
    return decoded
