"""Server-sent events: the one framer the gateway has, with its state carried across chunks.

An event ends at a blank line; a line ends with CRLF, LF or CR (OpenAI frames with LF, Google
with CRLF). Chunks from the network split events, lines and even CRLF pairs anywhere, so the
framer remembers where it stands between chunks. The capture (arrival offsets), the usage-chunk
filter, TTFT and parsing all use it, so they always agree on where each event ends.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from wire.jsonutil import json_or_none

_LINE_END = re.compile(rb"\r\n?|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One parsed event: its `event:` name, `data:` lines joined, and `id:`; None when absent."""

    name: str | None = None
    data: str | None = None
    id: str | None = None


class SSEFramer:
    """Finds where events end in a byte stream fed chunk by chunk."""

    def __init__(self) -> None:
        self._line_empty = True  # nothing since the last line end: a line end now makes a blank line
        self._content = False  # the event under way has at least one non-blank line
        self._cr = False  # the last byte was a CR: an LF first in the next chunk completes that CRLF

    def ends(self, chunk: bytes) -> list[int]:
        """Positions in `chunk` just after each blank line that ends an event, in order."""
        out: list[int] = []
        if not chunk:
            return out
        pos = 1 if self._cr and chunk[0] == 0x0A else 0
        for match in _LINE_END.finditer(chunk, pos):
            start, end = match.span()
            if start > pos:
                self._line_empty = False
            if not self._line_empty:
                self._content = True
            elif self._content:  # a blank line after content: the event is complete
                out.append(end)
                self._content = False
            self._line_empty = True
            pos = end
        if pos < len(chunk):
            self._line_empty = False
        self._cr = chunk[-1] == 0x0D
        return out


class SSESplitter:
    """A framer that also keeps the bytes: feed chunks, get whole events' raw bytes back."""

    def __init__(self) -> None:
        self.framer = SSEFramer()
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The raw bytes of each event completed by this chunk (from the previous event's end)."""
        ends = self.framer.ends(chunk)
        if not ends:
            self._partial += chunk
            return []
        out, start = [], 0
        for end in ends:
            self._partial += chunk[start:end]
            out.append(bytes(self._partial))
            self._partial.clear()
            start = end
        self._partial += chunk[start:]
        return out

    def rest(self) -> bytes:
        """Bytes after the last complete event (an unterminated event, stray blank lines), and forget them."""
        rest = bytes(self._partial)
        self._partial.clear()
        return rest


# How an event ends (a blank line, in any of the three line endings).
EVENT_ENDS = (b"\n\n", b"\r\r", b"\n\r\n")


def event_end(data: bytes) -> int:
    """Where the last whole event in data ends (0: none does)."""
    return max(data.rfind(end) + len(end) if end in data else 0 for end in EVENT_ENDS)


def sse_blocks(data: bytes) -> list[bytes]:
    """A whole stream's events as raw byte blocks; an unterminated last event (a cut stream) is kept."""
    splitter = SSESplitter()
    blocks = splitter.feed(data)
    rest = splitter.rest()
    if rest.strip():
        blocks.append(rest)
    return blocks


def event_parse(block: bytes) -> SSEEvent:
    """Fields of one event block (comments and unknown fields ignored; invalid UTF-8 replaced)."""
    name = ident = None
    data: list[str] = []
    for line in _LINE_END.split(block):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"id":
            ident = value.decode("utf-8", "replace")
    return SSEEvent(name, "\n".join(data) if data else None, ident)


def sse_events(data: bytes | str) -> list[SSEEvent]:
    """Every event of a whole stream, one per block (so the i-th matches the i-th arrival offset)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return [event_parse(block) for block in sse_blocks(raw)]


class EventFilter:
    """Relays SSE bytes event by event, dropping the events `drop` picks (by their parsed data).

    Every byte of a kept event passes unchanged; an event still arriving waits for its end.
    """

    def __init__(self, drop: Callable[[object], bool]) -> None:
        self.drop = drop
        self.splitter = SSESplitter()
        self.dropped = 0
        # A dropped event ended at a CR whose LF had not come yet: that LF is the dropped event's too.
        self._lf_owed = False

    def _owed_lf_strip(self, raw: bytes) -> bytes:
        if self._lf_owed and raw.startswith(b"\n"):
            raw = raw[1:]
        self._lf_owed = False
        return raw

    def headers(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return pairs

    def __call__(self, chunk: bytes) -> bytes:
        """Bytes to send now."""
        kept = []
        for raw in self.splitter.feed(chunk):
            raw = self._owed_lf_strip(raw)
            if self.drop(json_or_none(event_parse(raw).data)):
                self.dropped += 1
                kept.append(raw[: len(raw) - len(raw.lstrip(b"\r\n"))])  # blank lines before it end the last event
                self._lf_owed = raw.endswith(b"\r")
            else:
                kept.append(raw)
        return b"".join(kept)

    def rest(self) -> bytes:
        """Whatever is left when the upstream ends."""
        return self._owed_lf_strip(self.splitter.rest())
