"""After a crash: replay the journals dead gateway processes left, and close their unfinished exchanges."""

import os
from datetime import datetime, timezone
from pathlib import Path

from logs.models import Request, Response
from logs.outcomes import Outcome
from logs.pipeline.journal import journal_lines, journal_orphans
from logs.pipeline.rows import records_write
from logs.records import lines_parse


def interrupted_mark(instance: str) -> int:
    """Give every request of a dead gateway process that has no response an 'interrupted' one."""
    now = datetime.now(timezone.utc)
    orphans = Request.objects.filter(instance=instance, response__isnull=True).values_list("id", flat=True)
    rows = [Response(request_id=rid, outcome=Outcome.INTERRUPTED, is_error=True,
                     error_message="the gateway process stopped before this exchange ended",
                     created_at=now) for rid in orphans]
    Response.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def orphans_recover(directory: Path, batch: int = 500) -> int:
    """Replay the journals of dead processes into the database, then remove them."""
    replayed = 0
    for instance, path, fd in journal_orphans(directory):
        try:
            records = [r for r in lines_parse(journal_lines(path)) if r is not None]
            for i in range(0, len(records), batch):
                records_write(records[i:i + batch])
            interrupted_mark(instance)
            replayed += len(records)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return replayed
