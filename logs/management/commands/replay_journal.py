"""python manage.py replay_journal DATA_DIR: write the journals an instance left into the log, once.

For an instance that will not come back (its host is gone): copy its DATA_DIR (journal/ and
spool/) anywhere and run this with the shared settings. A journal still locked by a live process
is left alone; a journal is removed once replayed, and rows already written are skipped, so
running it twice writes nothing twice.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from logs.pipeline.ingest import write_retry
from logs.pipeline.journal import journal_counters_prune
from logs.pipeline.recovery import orphans_recover


class Command(BaseCommand):
    help = "Write the journals a gateway instance left in DATA_DIR into the log (exactly once)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("data_dir", help="the instance's DATA_DIR (holding journal/ and spool/)")

    def handle(self, *args, data_dir: str, **options) -> None:
        """Replay, retrying while the database or the payload store refuses; report."""
        journal = Path(data_dir) / "journal"
        if not journal.is_dir():
            raise CommandError(f"no journal folder in {data_dir}")
        settings.SPOOL_DIR = Path(data_dir) / "spool"  # the bodies its records name wait there
        replayed = []
        # write_retry says on the console why it waits, once per error (not at each retry, every 2 s).
        write_retry(lambda: replayed.append(orphans_recover(journal)), lambda message: None)
        journal_counters_prune(journal)
        self.stdout.write(f"replayed {sum(replayed)} records from {journal}")
