"""python manage.py prune_logs --older-than 30d [--dry-run]: delete old exchanges and their files."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from logs.retention import PruneBusy, PruneResult, age_parse, prune


class Command(BaseCommand):
    help = "Delete exchanges older than an age (with their stored files), in batches."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--older-than", required=True, help="age such as 30d, 12h, 2w, 90m")
        parser.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
        parser.add_argument("--batch", type=int, default=1000, help="exchanges per transaction (1000)")

    def handle(self, *args, older_than: str, dry_run: bool, batch: int, **options) -> None:
        """Parse, prune, report."""
        try:
            age = age_parse(older_than)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if batch < 1:
            raise CommandError("--batch must be positive")

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
