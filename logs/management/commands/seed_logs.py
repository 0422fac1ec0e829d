"""python manage.py seed_logs N: fill the log with N realistic fake exchanges."""

import time
from datetime import datetime, timedelta, timezone

from django.core.management.base import BaseCommand, CommandError, CommandParser

from logs.models import Request
from logs.seed import exchanges_seed

# Ten times the largest log the benchmarks seeded: about 2 GB and four minutes a million, so already
# hours and disks' worth; a count past it (a typo, 10**23) ran until the disk was full.
MAX_COUNT = 100_000_000
# A batch's rows are all built in memory before its transaction: a batch of the count (--batch 100000000) held
# the whole seeding in memory and in one transaction until the process was killed.
MAX_BATCH = 50_000


def _args_problem(count: int, days: float, batch: int) -> str:
    """Why the arguments cannot seed ("" when they can)."""
    if count < 1 or batch < 1 or not days > 0:
        return "count, --batch and --days must be positive"
    if count > MAX_COUNT:
        return f"count must be at most {MAX_COUNT:,}, not {count:,}"
    if batch > MAX_BATCH:
        return f"--batch must be at most {MAX_BATCH:,} rows, not {batch:,}"
    # inf, or a start before 1970 (the ids, UUIDv7, count milliseconds since then), was a traceback in the seeding.
    try:
        too_long = datetime.now(timezone.utc) - timedelta(days=days) < datetime(1970, 1, 1, tzinfo=timezone.utc)
    except (OverflowError, ValueError):
        too_long = True
    return f"--days {days:g} is too long: the exchanges would start before 1970" if too_long else ""


class Command(BaseCommand):
    help = "Insert N realistic fake exchanges (for trying the admin at scale). Never run it on a real log."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("count", type=int, help="how many exchanges")
        parser.add_argument("--days", type=float, default=30.0, help="spread over the last N days (30)")
        parser.add_argument("--batch", type=int, default=5000, help=f"rows per transaction (5000, at most {MAX_BATCH:,})")
        parser.add_argument("--no-files", action="store_true", help="no image/audio files or file rows")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable data")
        parser.add_argument("--add", action="store_true",
                            help="add to a log that already holds exchanges (one seeded before: never a real one)")

    def handle(self, *args, count: int, days: float, batch: int, no_files: bool, seed: int | None, add: bool,
               **options) -> None:
        """Seed and report progress."""
        if problem := _args_problem(count, days, batch):
            self.stderr.write(problem)
            raise SystemExit(2)
        # Seeded rows carry no mark: run in the gateway's own folder, it mixed fakes into the audit log for good.
        if not add and Request.objects.exists():
            raise CommandError("the log already holds exchanges, and fake ones could not be told from them after: "
                               "seed a scratch DATA_DIR (docs/log.md#seed-data), or --add to a log seeded before")
        started = time.monotonic()
        step = max(count // 10, batch)

        def progress(done: int) -> None:
            if done % step < batch or done == count:
                self.stdout.write(f"{done}/{count} exchanges")

        exchanges_seed(count, days=days, batch=batch, files=not no_files, seed=seed, progress=progress)
        self.stdout.write(self.style.SUCCESS(
            f"seeded {count} exchanges in {time.monotonic() - started:.1f}s"))
