"""Deleting exchanges with their files: the admin's delete and prune_logs, in batches, one at a time."""

import fcntl
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Count, QuerySet, Sum

from logs.models import BinaryFile, DeletedSpend, Frame, PayloadOrphan, PendingRequest, Request, Response
from logs.stats import E8
from logs.storage import payloads_delete

log = logging.getLogger(__name__)

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# A request with no answer logged yet, started within this, may still be in flight (a long stream, a
# realtime session, a held request): prune keeps it. Older, it is one whose answer was never logged.
IN_FLIGHT_KEEP = timedelta(days=1)


class PruneBusy(Exception):
    """Another prune holds the lock."""


@dataclass
class PruneResult:
    """What a prune deleted (or, in a dry run, would delete)."""

    cutoff: datetime
    exchanges: int = 0
    files: int = 0
    file_bytes: int = 0
    dry_run: bool = False
    files_left: int = 0  # files the store did not delete: kept as PayloadOrphan rows for the next prune
    orphans_deleted: int = 0  # files left by earlier deletes, deleted now


@dataclass
class Deleted:
    """What deletes removed: exchanges, their files, and the files the store did not delete.

    Files go when the delete commits, which inside an outer transaction (the admin's delete view)
    is after the call returns: `files_left` counts them once they went.
    """

    exchanges: int = 0
    files: int = 0
    lefts: list[list[str]] = field(default_factory=list)  # each delete's list, filled as its files go

    @property
    def files_left(self) -> int:
        return sum(len(left) for left in self.lefts)

    def __iadd__(self, other: "Deleted") -> "Deleted":
        self.exchanges, self.files = self.exchanges + other.exchanges, self.files + other.files
        self.lefts += other.lefts
        return self


def age_parse(text: str) -> timedelta:
    """'30d', '12h', '2w', '90m', '45s' as a timedelta; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not match:
        raise ValueError(f"not an age: {text!r} (use e.g. 30d, 12h, 2w)")
    try:
        age = timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
        datetime.now(timezone.utc) - age  # a cutoff before year 1 is no age either
    except OverflowError:
        raise ValueError(f"not an age: {text!r} is too long ago") from None
    return age


def exchanges_delete(request_ids: list, *, store_away: bool = False) -> Deleted:
    """Delete exchanges by id in one transaction; their files go once it has committed.

    Files are removed only after the commit: a rolled back delete must not lose evidence. Their
    names are noted as PayloadOrphan rows in the delete's own transaction, and each note goes with
    its file: a run stopped in between (Ctrl-C, a crash) leaves the files noted, not unknown, and the
    next prune_logs deletes them. Files the store does not delete (unreachable, refusing) stay noted
    the same way; store_away: the store failed a moment ago, so they are left without asking it.
    """
    left: list[str] = []
    with transaction.atomic():
        files = list(BinaryFile.objects.filter(request_id__in=request_ids).values_list("file", flat=True))
        PayloadOrphan.objects.bulk_create([PayloadOrphan(name=n) for n in files if n], ignore_conflicts=True)
        _spend_keep(request_ids)
        # Children first, one DELETE per table: every child row names its request, so Django's
        # collector (a SELECT of each table's keys, then deletes 100 ids at a time) has nothing to
        # find, and on a big PostgreSQL log it doubled the time each batch holds its row locks.
        for model in (BinaryFile, Frame, Response):
            model.objects.filter(request_id__in=request_ids)._raw_delete(model.objects.db)
        deleted = Request.objects.filter(pk__in=request_ids)._raw_delete(Request.objects.db)
        transaction.on_commit(lambda: left.extend(files_delete(files, store_away)))
    return Deleted(deleted, len(files), [left])


# One upsert per (key, day): the sum grows in the database, so two deletes at once both count.
_SPEND_KEEP_SQL = (f'INSERT INTO {DeletedSpend._meta.db_table} ("key", day, cost_e8) VALUES (%s, %s, %s) '
                   f'ON CONFLICT ("key", day) DO UPDATE SET cost_e8 = {DeletedSpend._meta.db_table}.cost_e8 '
                   "+ excluded.cost_e8")


def _spend_keep(request_ids: list) -> None:
    """Add what these exchanges cost to their gateway keys' DeletedSpend, before the rows (and with them
    spend_days' sums) go: the money was spent, and a key's budget must keep counting it."""
    sums: dict[tuple[str, date], int] = {}
    rows = (Response.objects.filter(request_id__in=request_ids, cost_usd__isnull=False)
            .exclude(request__gateway_key="").values_list("request__gateway_key", "created_at", "cost_usd"))
    for key, created, cost in rows:
        group = (key, created.astimezone(timezone.utc).date())
        sums[group] = sums.get(group, 0) + int((cost * E8).to_integral_value())
    params = [(key, connection.ops.adapt_datefield_value(day), e8) for (key, day), e8 in sums.items() if e8]
    if params:
        with connection.cursor() as cur:
            cur.executemany(_SPEND_KEEP_SQL, params)


DEADLOCK_RETRIES = 3


def _deleted_retrying(ids: list, store_away: bool) -> Deleted:
    """exchanges_delete, tried again when PostgreSQL chose its transaction as a deadlock's victim: the
    log's rollup triggers (written by the ingest as it goes) can meet a batch's in the other order."""
    attempt = 0
    while True:
        try:
            return exchanges_delete(ids, store_away=store_away)
        except OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == DEADLOCK_RETRIES:
                raise
            attempt += 1
            log.warning("prune_logs: a batch met the log's writes in a deadlock; trying it again")
            time.sleep(0.1 * attempt)


def files_delete(names: list[str], store_away: bool = False) -> list[str]:
    """Delete stored files whose rows are gone; those the store does not delete now are noted for prune_logs,
    and the notes of those it deleted (exchanges_delete notes them all first) go."""
    names = [n for n in names if n]
    left = names if store_away else payloads_delete(names)
    if left:
        PayloadOrphan.objects.bulk_create([PayloadOrphan(name=n) for n in left], ignore_conflicts=True)
    kept = set(left)
    gone = [n for n in names if n not in kept]
    for i in range(0, len(gone), 1000):  # a statement's parameters are bounded (SQLite)
        PayloadOrphan.objects.filter(name__in=gone[i:i + 1000]).delete()
    return left


def orphans_delete(batch: int = 1000) -> tuple[int, int]:
    """Try again to delete the files earlier deletes left in the store: (deleted now, still left)."""
    deleted = 0
    seen_last = ""
    while names := list(PayloadOrphan.objects.filter(name__gt=seen_last).order_by("name")
                        .values_list("name", flat=True)[:batch]):
        seen_last = names[-1]
        left = set(payloads_delete(names))
        gone = [n for n in names if n not in left]
        PayloadOrphan.objects.filter(name__in=gone).delete()
        deleted += len(gone)
    return deleted, PayloadOrphan.objects.count()


def queryset_delete(qs: QuerySet, batch: int = 1000) -> Deleted:
    """Delete every exchange of a queryset (the admin's delete action), in batches."""
    total = Deleted()
    for ids in _id_batches(qs, batch):
        total += exchanges_delete(ids)
    return total


def _id_batches(qs: QuerySet, batch: int) -> Iterator[list]:
    """Ids of a queryset, a batch at a time, re-queried after each delete so nothing is skipped."""
    seen_last = None
    base = qs.order_by("pk").values_list("pk", flat=True)
    while True:
        page = base.filter(pk__gt=seen_last) if seen_last is not None else base
        ids = list(page[:batch])
        if not ids:
            return
        yield ids
        seen_last = ids[-1]


# pg_try_advisory_lock key of prune_logs (any constant unique to this purpose).
PRUNE_ADVISORY_LOCK = 0x6761_7465_7072_756E  # "gateprun"


@contextmanager
def prune_lock() -> Iterator[None]:
    """An exclusive lock file under DATA_DIR, so two prunes on this host never overlap; on
    PostgreSQL also an advisory lock, so two prunes on hosts sharing the database never do."""
    path = Path(settings.DATA_DIR) / "prune.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PruneBusy(f"another prune_logs is running (lock {path})") from None
        with _database_lock():
            yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def _database_lock() -> Iterator[None]:
    """A session advisory lock on PostgreSQL (held by this connection until released)."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_ADVISORY_LOCK])
        if not cur.fetchone()[0]:
            raise PruneBusy("another prune_logs is running on a host sharing this database")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_ADVISORY_LOCK])


def _in_flight(now: datetime) -> QuerySet:
    """Ids of the requests that may still be in flight: no answer logged yet, started within IN_FLIGHT_KEEP."""
    return Request.objects.filter(created_at__gte=now - IN_FLIGHT_KEEP,
                                  pk__in=PendingRequest.objects.values("request_id")).values("pk")


def prune_plan(cutoff: datetime, now: datetime) -> PruneResult:
    """What a prune at this cutoff would delete: exchanges, files and their bytes."""
    result = PruneResult(cutoff=cutoff, dry_run=True)
    result.exchanges = Request.objects.filter(created_at__lt=cutoff).exclude(pk__in=_in_flight(now)).count()
    agg = BinaryFile.objects.filter(request__created_at__lt=cutoff).exclude(
        request_id__in=_in_flight(now)).aggregate(n=Count("pk"), b=Sum("size"))
    result.files, result.file_bytes = agg["n"], agg["b"] or 0
    return result


def prune(older_than: timedelta, *, dry_run: bool = False, batch: int = 1000, now: datetime | None = None,
          announce: Callable[[PruneResult], None] | None = None,
          progress: Callable[[PruneResult], None] | None = None) -> PruneResult:
    """Delete exchanges that started before now - older_than, with their files, batch by batch.

    announce hears what will be deleted before anything is (a dry run stops there).
    """
    now = now or datetime.now(timezone.utc)
    cutoff = now - older_than
    with prune_lock():
        plan = prune_plan(cutoff, now)
        if announce:
            announce(plan)
        if dry_run:
            return plan
        result = PruneResult(cutoff=cutoff)
        result.orphans_deleted, _ = orphans_delete(batch)
        # An exchange still in flight is kept: its answer, logged when it ends, needs its request row.
        old = Request.objects.filter(created_at__lt=cutoff).exclude(pk__in=_in_flight(now))
        store_away = False
        while True:
            # Oldest first: a prune stopped half-way leaves a clean, shorter log.
            ids = list(old.order_by("created_at").values_list("pk", flat=True)[:batch])
            if not ids:
                break
            result.file_bytes += BinaryFile.objects.filter(request_id__in=ids).aggregate(b=Sum("size"))["b"] or 0
            done = _deleted_retrying(ids, store_away)
            result.exchanges, result.files = result.exchanges + done.exchanges, result.files + done.files
            result.files_left += done.files_left
            if not store_away and done.files and done.files_left == done.files:
                # The store deleted none of them: the rest of this run notes its files for the next prune
                # instead of waiting on the store batch after batch (each attempt takes its timeouts).
                store_away = True
                log.warning("prune_logs: the payload store deleted none of a batch's files; the files of the "
                            "batches after it are left for the next prune")
            if progress:
                progress(result)
    return result
