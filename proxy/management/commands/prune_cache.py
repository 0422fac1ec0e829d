"""python manage.py prune_cache [--all]: delete expired response cache entries (or all of them)."""

from django.core.management.base import BaseCommand, CommandError, CommandParser

from keys.store import StoreUnavailable
from proxy.cache_store import cache_store


class Command(BaseCommand):
    help = ("Delete expired response cache entries and evict the least recently used ones past CACHE_MAX_BYTES; "
            "--all empties the cache.")

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--all", action="store_true", help="delete every entry, expired or not")

    def handle(self, *args, all: bool, **options) -> None:
        """Prune, report."""
        try:
            entries, size = cache_store().prune(everything=all)
        except StoreUnavailable as exc:
            raise CommandError(f"{exc}: {exc.detail}") from None
        self.stdout.write(f"deleted {entries} cache entries ({size} bytes)")
