"""python manage.py reprice_logs [--since 2026-01-01] [--dry-run]: price stored exchanges again."""

from datetime import datetime, timezone

from django.core.management.base import BaseCommand, CommandError, CommandParser

from logs.pricing import LIBRARY_SOURCE
from logs.pricing.reprice import reprice


class Command(BaseCommand):
    help = "Recompute the cost of stored exchanges (after a genai-prices update or a PRICE_TABLE_PATH change)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--since", help="only exchanges from this date (UTC), e.g. 2026-01-01")
        parser.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")

    def handle(self, *args, since: str | None, dry_run: bool, **options) -> None:
        """Parse, reprice, report."""
        start = None
        if since:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise CommandError(f"--since must be a date such as 2026-01-01, not {since!r}") from None
            start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        result = reprice(since=start, dry_run=dry_run)
        verb = "would change" if dry_run else "changed"
        self.stdout.write(f"{result.seen} exchanges with usage priced with {LIBRARY_SOURCE} and PRICE_TABLE_PATH; "
                          f"{verb} the cost of {result.changed}")
