"""A streamed answer's progress on disk, so a worker killed mid-answer still leaves what the client had.

The journal gets an exchange's response record only when the answer ends. A worker killed (SIGKILL,
OOM) mid-stream never writes it: the client had the status, the headers and some events, and the log
would have none of them. So once a streamed answer has been going to the client for
PROGRESS_EVERY seconds, its progress is written to a file of its own,
`JOURNAL_DIR/<instance>.parts/<request id>.jsonl`: first the response record as it stands (status,
headers, outcome `interrupted`) with the events so far, then, at most every PROGRESS_EVERY seconds
while events keep coming, one line with the event stream's whole events since the last one (masked
as the final record's body is). Not at once: most streams end within the first PROGRESS_EVERY
seconds, and for them the file (its record built, opened, written, removed) cost a fifth more of
the worker's CPU per stream (docs/benchmark.md); what they cost now is one timer. Each is one write(), never an fsync:
the journal's own line per record is fsynced only with JOURNAL_FSYNC, and a killed process's
writes are in the page cache all the same. The file goes when the exchange's own response record
is journaled; recovery (logs/pipeline/recovery.py) turns what a dead worker left into the
interrupted exchange's response. What can be lost: the events of the last PROGRESS_EVERY seconds
before the kill (and the bytes of an event not yet ended), so a stream killed within its first
PROGRESS_EVERY seconds leaves the bare interrupted row; bodies that are not an uncompressed
event stream keep their head and size only, and a stream's text past LOG_BODY_INLINE_MAX_BYTES is
not added.
"""

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from logs.pipeline.capture import BodyCapture
from logs.pipeline.journal import PARTS_SUFFIX, private_folder
from logs.records import PartRecord, ResponseRecord, record_line, record_parse
from logs.redaction.scrub import Masked, Scrubber
from wire.sse import event_end

log = logging.getLogger(__name__)

PROGRESS_EVERY = 0.5  # seconds: at most this much of a stream's events is lost with its worker
WARN_EVERY = 60.0  # seconds between console warnings while progress files cannot be written
_warned = {"at": -WARN_EVERY, "since": 0}  # a full disk fails every stream's file: one line a minute, not one each


def parts_folder(directory: Path, instance: str) -> Path:
    """Where one process's answers in progress are written."""
    return directory / f"{instance}{PARTS_SUFFIX}"


class AnswerProgress:
    """One streamed answer's progress file, written while it is relayed (on the event loop: a few writes)."""

    __slots__ = ("path", "capture", "scrubber", "fd", "done", "events", "carry", "handle", "content_type", "body",
                 "head", "_head", "place")

    def __init__(self, capture: BodyCapture, scrubber: Scrubber, head: Callable[[], ResponseRecord]) -> None:
        """head(): the response record as it stands, which the file starts with (the one a crash leaves)."""
        self.capture, self.scrubber = capture, scrubber
        self.fd: int | None = None
        self.path: str | None = None  # a str, not a Path: every stream past PROGRESS_EVERY holds it (a Path is 0.4 KiB)
        self.done = 0  # of the capture's parts, how many are written (or left out)
        self.events = 0  # of its event offsets, how many are written
        self.carry = b""  # the start of an event not ended yet
        self.handle: asyncio.TimerHandle | None = None
        self.head: Callable[[], ResponseRecord] | None = None  # set by start(), until the file is begun with it
        self._head = head
        self.place: tuple[Path, str] | None = None  # (journal directory, instance)
        self.content_type = capture.content_type
        # Only an uncompressed event stream's text is written: its events end on ASCII, so a cut
        # at an event's end is a cut between whole characters, and each piece masks alone.
        self.body = capture.framer is not None and not capture.encoding

    def start(self, *, directory: Path, instance: str) -> None:
        """The head is going to the client: its record (the one a crash leaves: interrupted) is written with the
        events so far if the answer is still going PROGRESS_EVERY seconds from now."""
        self.head, self.place = self._head, (directory, instance)
        self.handle = asyncio.get_running_loop().call_later(PROGRESS_EVERY, self.flush)

    def tick(self) -> None:
        """A chunk went to the client: have its events written within PROGRESS_EVERY seconds."""
        if self.fd is None or self.handle is not None or not self.body:
            return
        if len(self.capture.parts) > self.done:
            self.handle = asyncio.get_running_loop().call_later(PROGRESS_EVERY, self.flush)

    def flush(self) -> None:
        """Write the whole events the capture got since the last flush (the file and its head first)."""
        self.handle = None
        if self.head is not None:
            self._open()
        if self.fd is None:
            return
        parts = self.capture.parts
        if self.capture.spool is not None or self.capture.discarded:  # past the inline limit: the head only
            self.body = False
            return
        new, self.done = parts[self.done:], len(parts)
        data = self.carry + b"".join(new)
        cut = event_end(data)
        if not cut:
            self.carry = data
            return
        self.carry = data[cut:]
        try:
            text = data[:cut].decode("utf-8")
        except UnicodeDecodeError:  # the final record keeps such a body as a file: the head only here
            self.body = False
            return
        text = self.scrubber.text(text, self.content_type, answer=True, masked=Masked())
        offsets, self.events = self.capture.event_offsets[self.events:].tolist(), len(self.capture.event_offsets)
        self._write(PartRecord(id=os.path.basename(self.path).removesuffix(".jsonl"), body=text,
                               body_size=self.capture.size, event_offsets_ms=offsets))

    def _open(self) -> None:
        """The file, begun with the head's record."""
        head, self.head = self.head(), None
        directory, instance = self.place
        try:
            folder = private_folder(parts_folder(directory, instance))
            self.path = str(folder / f"{head.request_id}.jsonl")
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        except OSError as exc:
            self._fail(exc)
            return
        self._write(head)

    def _write(self, record: ResponseRecord | PartRecord) -> None:
        line = self.scrubber.line(record_line(record))
        try:
            if os.write(self.fd, line) != len(line):  # a full disk: the file ends on a torn line, left out
                raise OSError(28, "short write (disk full?)")
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        """The file cannot be written (disk full, folder gone): the answer goes on, kept only at its end. What
        the file holds stays until then (a crash meanwhile still leaves it; a torn last line is left out)."""
        _warned["since"] += 1
        now = time.monotonic()
        if now >= _warned["at"] + WARN_EVERY:
            log.warning("progress of streamed answers not written (kept only when they end): %s (%d since the last "
                        "warning)", exc, _warned["since"])
            _warned.update(at=now, since=0)
        self._stop()

    def _stop(self) -> None:
        """Write no more: the timer cancelled, the file closed (and kept)."""
        self.head = self._head = None  # (the head's maker may hold what holds this: no cycle left behind)
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """The exchange's own record is journaled: this one is no longer needed."""
        self._stop()
        if self.path is not None:
            Path(self.path).unlink(missing_ok=True)
            self.path = None


@dataclass(slots=True)
class Progress:
    """What a dead process's progress file holds for one exchange."""

    head: ResponseRecord
    body: str
    body_size: int
    event_offsets_ms: list


def progress_read(path: Path) -> Progress | None:
    """A progress file back: its head and the events written (a torn last line left out); None if unreadable."""
    try:
        with open(path, "rb") as f:
            lines = [line for line in f if line.endswith(b"\n")]
        head = record_parse(lines[0]) if lines else None
    except (OSError, ValueError):
        return None
    if not isinstance(head, ResponseRecord):
        return None
    progress = Progress(head=head, body="", body_size=0, event_offsets_ms=[])
    pieces = []
    for line in lines[1:]:
        try:
            part = record_parse(line)
        except ValueError:
            break
        if not isinstance(part, PartRecord):
            break
        pieces.append(part.body)
        progress.body_size = part.body_size
        progress.event_offsets_ms.extend(part.event_offsets_ms or [])
    progress.body = "".join(pieces)
    return progress


def progress_files(directory: Path, instance: str) -> Iterator[tuple[str, Path]]:
    """(request id, path) of each answer a process had in progress."""
    folder = parts_folder(directory, instance)
    if folder.is_dir():
        for path in folder.glob("*.jsonl"):
            yield path.stem, path


def parts_remove(directory: Path, instance: str) -> None:
    """Forget a process's answers in progress (its exchanges are all logged)."""
    shutil.rmtree(parts_folder(directory, instance), ignore_errors=True)
