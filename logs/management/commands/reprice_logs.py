"""python manage.py reprice_logs [--since 2026-01-01] [--dry-run]: price stored exchanges again."""

from datetime import datetime, timezone

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django.conf import settings

from logs.models import Response
from logs.pricing import LIBRARY_SOURCE, USER_SOURCE, price_table_problem
from logs.pricing.reprice import reprice


class Command(BaseCommand):
    help = "Recompute the cost of stored exchanges (after a genai-prices update or a PRICE_TABLE_PATH change)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--since", help="only exchanges from this date (UTC), e.g. 2026-01-01")
        parser.add_argument("--dry-run", action="store_true", help="count what would change, write nothing")
        parser.add_argument("--without-price-table", action="store_true",
                            help="price exchanges that PRICE_TABLE_PATH priced with genai-prices, PRICE_TABLE_PATH "
                                 "being unset here (without it, that stops the command)")

    def handle(self, *args, since: str | None, dry_run: bool, without_price_table: bool, **options) -> None:
        """Parse, reprice, report."""
        start = None
        if since:
            try:
                start = datetime.fromisoformat(since)
            except ValueError:
                raise CommandError(f"--since must be a date such as 2026-01-01, not {since!r}") from None
            start = start if start.tzinfo else start.replace(tzinfo=timezone.utc)
        # The gateway goes on without a price table it cannot read; this command would rewrite the
        # table's prices with genai-prices' (and every budget that counts them).
        if problem := price_table_problem():
            raise CommandError(f"{problem}: fix it (or unset it) before repricing")
        if not settings.PRICE_TABLE_PATH and not without_price_table:
            table_priced = Response.objects.filter(price_source=USER_SOURCE)
            if start is not None:
                table_priced = table_priced.filter(created_at__gte=start)
            if table_priced.exists():
                raise CommandError("exchanges priced from PRICE_TABLE_PATH are in the log, and PRICE_TABLE_PATH is not "
                                   "set here: set it as the gateway has it, or pass --without-price-table")
        result = reprice(since=start, dry_run=dry_run)
        verb = "would change" if dry_run else "changed"
        table = " and PRICE_TABLE_PATH" if settings.PRICE_TABLE_PATH else ""
        self.stdout.write(f"{result.seen} exchanges with usage priced with {LIBRARY_SOURCE}{table}; "
                          f"{verb} the cost of {result.changed}")
