"""After a crash: replay the journals dead gateway processes left, and close their unfinished exchanges."""

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

from django.db import transaction

from logs.models import BinaryFile, Request, Response
from logs.outcomes import Outcome
from logs.pipeline.journal import journal_lines, journal_orphans, unwritten_keep
from logs.pipeline.progress import PROGRESS_EVERY, parts_remove, progress_files, progress_read
from logs.pipeline.rows import records_write, session_file_row
from logs.pipeline.tracks import unfinished_tracks, wav_sizes_fix
from logs.records import FileRecord, FileRef, ResponseRecord, lines_parse

STOPPED = "the gateway process stopped before this exchange ended"


def interrupted_mark(instance: str, directory: Path | None = None) -> int:
    """Give every request of a dead gateway process that has no response an 'interrupted' one.

    An answer it was streaming gets what its progress file kept (status, headers, the events
    relayed); a realtime session it was relaying gets the files it had not finished (the audio of
    the turn under way), as far as they were written.
    """
    from logs.pipeline.ingest import batch_write  # here: the ingest process's module imports this one

    now = datetime.now(timezone.utc)
    orphans = list(Request.objects.filter(instance=instance, response__isnull=True).values_list("id", "provider",
                                                                                               "created_at"))
    answers = dict(progress_files(directory, instance)) if directory is not None else {}
    partial = [rec for rid, _, _ in orphans if rid.hex in answers
               and (rec := answer_interrupted(answers[rid.hex])) is not None]
    if partial:
        batch_write(records_write, partial)
    done = {rec.request_id for rec in partial}
    rows = [Response(request_id=rid, outcome=Outcome.INTERRUPTED, is_error=True, error_message=STOPPED,
                     created_at=now) for rid, _, _ in orphans if rid.hex not in done]
    files: list[BinaryFile] = []
    for rid, provider, created in orphans:
        tracks_recover(rid.hex, provider, created.timestamp(), files)
    with transaction.atomic():
        Response.objects.bulk_create(rows, ignore_conflicts=True)
        BinaryFile.objects.bulk_create(files, ignore_conflicts=True)
    return len(orphans)


def answer_interrupted(path: Path) -> ResponseRecord | None:
    """The response record of an answer a dead process was streaming, from its progress file."""
    progress = progress_read(path)
    if progress is None:
        return None
    rec = progress.head
    rec.body, rec.body_size = progress.body, max(progress.body_size, len(progress.body.encode("utf-8", "replace")))
    if rec.is_stream:
        rec.event_offsets_ms = progress.event_offsets_ms
    if progress.event_offsets_ms:
        rec.duration_ms = progress.event_offsets_ms[-1]
    rec.outcome = Outcome.INTERRUPTED
    if progress.body and progress.event_offsets_ms:
        kept = (f"the status, the headers and the {len(progress.event_offsets_ms)} events relayed up to "
                f"{progress.event_offsets_ms[-1]:g} ms are kept (those of its last {PROGRESS_EVERY:g} s may be missing)")
    else:
        kept = "the status and the headers it had are kept, not the body relayed"
    rec.error = f"the gateway process stopped mid-answer: {kept}"
    return rec


def tracks_recover(session_id: str, provider: str, created: float, files: list[BinaryFile]) -> None:
    """Store the files of a session a crash left unfinished in the spool folder."""
    for key, path in unfinished_tracks(session_id):
        wav = path.read_bytes()[:4] == b"RIFF"
        if wav:
            wav_sizes_fix(path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        ref = FileRef(spool=path.name, size=path.stat().st_size, sha256=digest.hexdigest(),
                      content_type="audio/wav" if wav else "application/octet-stream")
        session_file_row(FileRecord(id=session_id, key=key, file=ref, provider=provider, created=created), files)


def orphans_recover(directory: Path, batch: int = 500) -> int:
    """Replay the journals of dead processes into the database, then remove them."""
    from logs.pipeline.ingest import batch_write  # here: the ingest process's module imports this one

    replayed = 0
    for instance, path, fd in journal_orphans(directory):
        try:
            lines = journal_lines(path)
            entries = lines_parse(lines)
            records = [r for r in entries if r is not None]
            refused = []
            for i in range(0, len(records), batch):
                # A record the database rejects (an answer whose request line was torn) is kept aside,
                # as the live ingest does: retried, it held every other record back for good.
                refused += batch_write(records_write, records[i:i + batch])
            interrupted_mark(instance, directory)
            # Last, once the rest is written: a retry (the database down) starts this journal over.
            unwritten_keep(directory, instance, lines, entries, refused)
            replayed += len(records)
            path.unlink(missing_ok=True)
            parts_remove(directory, instance)
        finally:
            os.close(fd)
    return replayed
