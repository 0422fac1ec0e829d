"""python manage.py prune_logs --older-than 30d [--dry-run]: delete old exchanges and their files."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from logs.retention import PruneBusy, PruneResult, age_parse, prune

# A batch is one transaction holding its rows' locks and one statement with its ids as parameters
# (SQLite builds take as few as 32,766); past 2**63 the database refused the LIMIT mid-run, with a
# message that sent the operator to check the database.
MAX_BATCH = 10_000


class Command(BaseCommand):
    help = "Delete exchanges older than an age (with their stored files), in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--older-than", required=True, help="age such as 30d, 12h, 2w, 90m")
        parser.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
        parser.add_argument("--batch", type=int, default=1000, help=f"exchanges per transaction (1000, at most {MAX_BATCH:,})")

    def handle(self, *args, older_than: str, dry_run: bool, batch: int, **options) -> None:
        """Parse, prune, report."""
        try:
            age = age_parse(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not 1 <= batch <= MAX_BATCH:
            raise CommandError(f"--batch must be from 1 to {MAX_BATCH:,}, not {batch:,}")

        def announce(plan: PruneResult) -> None:
            verb = "would delete" if dry_run else "deleting"
            self.stdout.write(f"{verb} {plan.exchanges} exchanges and {plan.files} files ({plan.file_bytes} bytes) "
                              f"created before {plan.cutoff.isoformat()}")

        def progress(r: PruneResult) -> None:
            self.stdout.write(f"  deleted {r.exchanges} exchanges, {r.files} files so far")

        try:
            result = prune(age, dry_run=dry_run, batch=batch, announce=announce,
                           progress=progress if options["verbosity"] > 1 else None)
        except PruneBusy as exc:
            raise CommandError(str(exc)) from None
        if not dry_run:
            self.stdout.write(f"deleted {result.exchanges} exchanges and {result.files} files "
                              f"({result.file_bytes} bytes)")
            if result.orphans_deleted:
                self.stdout.write(f"deleted {result.orphans_deleted} files that earlier deletes had left in the store")
            if result.files_left:
                self.stderr.write(f"{result.files_left} files could not be deleted (the file store failed): they are "
                                  "noted, and the next prune_logs deletes them")
