"""A realtime session's files, written as frames pass: each audio track of a turn, and binary frames.

Audio arrives as base64 inside events (a few KiB every few ms); it is decoded and appended to a
spool file that starts with a WAV header, whose two sizes are filled in when the turn ends, so a
finished track is a playable file without a second copy. The session journals a FileRecord then,
and the ingest process moves the file into the payload store. A track a crash left unfinished is
stored at recovery (logs/pipeline/recovery.py), its header sizes fixed from the file's length.
"""

import hashlib
import os
import struct
from pathlib import Path

from logs.pipeline.spool import spool_dir, spool_path
from logs.records import FileRef

# WAV format codes and sample widths for the codecs realtime APIs use.
WAV_CODECS = {"pcm16": (1, 2), "ulaw": (7, 1), "alaw": (6, 1)}
HEADER_SIZE = 44
TRACK_SUFFIX = ".track"


def wav_header(codec: str, rate: int, data_size: int = 0) -> bytes:
    """A 44-byte WAV header for mono audio (data_size 0 until the track ends)."""
    fmt, width = WAV_CODECS[codec]
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, fmt, 1, rate, rate * width, width, width * 8) +
            b"data" + struct.pack("<I", data_size))


def wav_sizes_fix(path: Path) -> None:
    """Write the RIFF and data sizes of a WAV track from the file's length."""
    data = path.stat().st_size - HEADER_SIZE
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 36 + data))
        f.seek(40)
        f.write(struct.pack("<I", data))


def track_spool_name(session_id: str, key: str) -> str:
    """The spool file of one track of a session (found by its session id at recovery)."""
    return f"{session_id}.{key}{TRACK_SUFFIX}"


class Track:
    """One file of a session being written: audio of one turn (a WAV), or one direction's binary frames."""

    def __init__(self, session_id: str, key: str, codec: str | None = None, rate: int = 24000) -> None:
        self.key = key
        self.wav = codec in WAV_CODECS
        self.name = track_spool_name(session_id, key)
        # Unbuffered: every append is a write() of its own, so a crash keeps what was relayed so far.
        self._file = open(spool_dir() / self.name, "wb", buffering=0)  # noqa: SIM115 (closed by finish)
        self.size = 0  # payload bytes (after the header)
        if self.wav:
            self._file.write(wav_header(codec, rate))

    def append(self, data: bytes) -> int:
        """Add bytes; returns where they start in the track's payload."""
        offset = self.size
        self._file.write(data)
        self.size += len(data)
        return offset

    def finish(self) -> FileRef:
        """Close the file (filling in a WAV header's sizes) and describe it for the journal."""
        self._file.close()
        path = spool_path(self.name)
        if self.wav:
            wav_sizes_fix(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        return FileRef(spool=self.name, size=os.path.getsize(path), sha256=digest.hexdigest(),
                       content_type="audio/wav" if self.wav else "application/octet-stream")


def unfinished_tracks(session_id: str) -> list[tuple[str, Path]]:
    """(key, path) of the tracks of a session still in the spool folder (a crash ended it)."""
    out = []
    for path in sorted(spool_dir().glob(f"{session_id}.*{TRACK_SUFFIX}")):
        key = path.name[len(session_id) + 1:-len(TRACK_SUFFIX)]
        out.append((key, path))
    return out
