"""The journal records: what the proxy hands the log, one JSON line each. No Django here.

The proxy builds these, the journal stores their lines, the ingest process reads them back
(record_parse) and turns them into rows. Every field is declared here, with its default: a line
from an older gateway (or with fields this one does not know) still reads.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wire.jsonutil import json_line, json_parse

log = logging.getLogger(__name__)


@dataclass(slots=True)
class FileRef:
    """A body kept as a file in the spool folder until the ingest moves it into the payload store."""

    spool: str  # file name inside the spool folder
    size: int = 0
    sha256: str = ""
    content_type: str = ""
    error: str = ""  # why the file is incomplete, when it is


@dataclass(slots=True)
class RequestRecord:
    """A request as received (credentials masked): written before anything goes upstream."""

    kind: ClassVar[str] = "req"
    id: str
    provider: str = ""
    endpoint: str = ""  # the gateway path as the client sent it
    method: str = ""
    query: str = ""
    headers: list = field(default_factory=list)  # [[name, value], ...] in order, masked
    body: str | None = None  # text bodies up to LOG_BODY_INLINE_MAX_BYTES; otherwise body_file
    body_size: int = 0
    body_file: FileRef | None = None
    content_type: str = ""
    client: str = ""
    created: float = 0.0  # epoch seconds
    instance: str = ""  # the worker process that journaled it (for replay after a crash)
    key_fp: str = ""
    gateway_key: str = ""


@dataclass(slots=True)
class ResponseRecord:
    """How an exchange ended: the upstream's answer as relayed, or the gateway's own."""

    kind: ClassVar[str] = "resp"
    id: str
    request_id: str = ""
    provider: str = ""
    status: int | None = None
    headers: list = field(default_factory=list)
    content_type: str = ""
    body: str | None = None
    body_size: int = 0
    body_file: FileRef | None = None
    is_stream: bool = False
    event_offsets_ms: list | None = None  # each event's arrival, ms since the request arrived
    duration_ms: float | None = None
    ttfb_ms: float | None = None
    outcome: str = "completed"
    error: str = ""
    notes: str = ""  # what the log could not keep (a file not saved, a body not decoded)
    created: float = 0.0
    usage_injected: bool = False
    steps: list | None = None  # what the policy steps did: [{"step": name, "decision": ..., ...}]
    forwarded: dict | None = None  # what went upstream when a step changed the request
    forwarded_body_file: FileRef | None = None  # that body, when it is kept as a file (large or binary)
    cache_hit: bool | None = None  # served from the response cache (True) or stored into it (False)
    cache_source: str = ""  # the exchange a cache hit replays
    held_ms: float | None = None  # time spent in the hold queue
    usage: dict | None = None  # a realtime session: its responses' usage, summed ({"model", "input_tokens", ...})
    # A stream's: [length, fingerprint] of each of the request's credentials (never the credential),
    # so the ingest can find one that the answer spelled out across events (logs/redaction/echoes.py).
    echo_prints: list | None = None


@dataclass(slots=True)
class PartRecord:
    """The events a streamed answer relayed since the last such line (logs/pipeline/progress.py).

    Never in the journal: in the answer's own progress file, after its head (a ResponseRecord).
    """

    kind: ClassVar[str] = "part"
    id: str  # the exchange's request id
    body: str = ""  # whole events, masked as the final record's body is
    body_size: int = 0  # bytes of the answer received so far
    event_offsets_ms: list | None = None  # these events' arrival, ms since the request arrived


@dataclass(slots=True)
class FrameRecord:
    """One WebSocket message of a realtime session, as it passed (the session's request id is `id`)."""

    kind: ClassVar[str] = "frame"
    id: str
    seq: int = 0  # the frame's place in the session, both directions counted together
    direction: str = ""  # "client" (towards the upstream) or "upstream" (towards the client)
    at_ms: float = 0.0  # ms since the session's request arrived
    text: str | None = None  # a text frame, base64 audio replaced by {"$gateway_audio": {track, offset, bytes}}
    file_key: str = ""  # a binary frame (or a text one too large for its row, "text-..."): the session file its
    file_offset: int | None = None  # bytes were appended to, and where they start in it
    event_type: str = ""  # a text frame kept in a file: its event's "type" (else read from `text`)
    size: int = 0  # bytes on the wire
    provider: str = ""
    created: float = 0.0  # the session's start (epoch seconds)


@dataclass(slots=True)
class FileRecord:
    """A file a realtime session produced (a track of audio, its binary frames), complete in the spool."""

    kind: ClassVar[str] = "file"
    id: str  # the session's request id
    key: str = ""  # "output-1", "input-2", "binary-upstream": the frames name it
    file: FileRef | None = None
    provider: str = ""
    created: float = 0.0


Record = RequestRecord | ResponseRecord | FrameRecord | FileRecord
KINDS: dict[str, type] = {"req": RequestRecord, "resp": ResponseRecord, "frame": FrameRecord, "file": FileRecord,
                          "part": PartRecord}
_FILE_FIELDS = ("body_file", "forwarded_body_file", "file")  # FileRef fields, as nested objects in a line
_FIELDS = {cls: frozenset(f.name for f in dataclasses.fields(cls))
           for cls in (RequestRecord, ResponseRecord, FrameRecord, FileRecord, PartRecord, FileRef)}


def record_line(record: Record) -> bytes:
    """A record as one journal line."""
    data = {"t": record.kind}
    data.update({name: getattr(record, name) for name in record.__slots__})
    for name in _FILE_FIELDS:
        ref = data.get(name)
        if ref is not None:
            data[name] = {slot: getattr(ref, slot) for slot in FileRef.__slots__}
    return json_line(data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from a dict, ignoring keys it does not declare."""
    known = _FIELDS[cls]
    return cls(**{k: v for k, v in data.items() if k in known})


def record_parse(line: bytes | str) -> Record:
    """A journal line back as its record; ValueError when it is not one."""
    data = json_parse(line)
    if not isinstance(data, dict) or data.get("t") not in KINDS or not isinstance(data.get("id"), str):
        raise ValueError("not a journal record")
    cls = KINDS[data.pop("t")]
    for name in _FILE_FIELDS:
        ref = data.get(name)
        data[name] = _build(FileRef, ref) if isinstance(ref, dict) and "spool" in ref else None
    try:
        return _build(cls, data)
    except TypeError as exc:
        raise ValueError(f"malformed journal record: {exc}") from None


def lines_parse(lines: list[bytes]) -> list[Record | None]:
    """One entry per journal line: its record, or None for a line that is not one (logged, still counted)."""
    out: list[Record | None] = []
    for line in lines:
        try:
            out.append(record_parse(line))
        except ValueError:
            log.error("unreadable log line (%d bytes): kept aside", len(line))
            out.append(None)
    return out
