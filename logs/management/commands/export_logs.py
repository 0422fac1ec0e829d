"""python manage.py export_logs: write exchanges as JSONL, JSON or CSV, streaming."""

import os
import stat
import sys
import tempfile
from datetime import datetime, time, timezone
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from logs.export import FORMATS, export_write
from logs.selectors import STATUS_CLASSES, ExportFilters, export_filters_check, exchanges_for_export, status_q


def moment_parse(text: str) -> datetime:
    """An ISO date or datetime; dates mean midnight UTC, naive datetimes are UTC."""
    try:
        value = parse_datetime(text)
        if value is None:
            day = parse_date(text)
            value = datetime.combine(day, time.min) if day else None
    except ValueError:
        value = None
    if value is None:
        raise CommandError(f"not an ISO date or datetime: {text!r} (e.g. 2025-01-31 or 2025-01-31T12:00:00Z)")
    try:  # in UTC, as the database compares it: 0001-01-01T00:00+14:00 is before the calendar begins
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    except OverflowError:
        raise CommandError(f"{text!r} is outside the dates the log can hold (years 1 to 9999, in UTC)") from None


class Command(BaseCommand):
    help = "Export exchanges (request, response, file references), one record per exchange, oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        """Options."""
        parser.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default), json or csv")
        parser.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
        parser.add_argument("--since", help="from this ISO date/datetime on (inclusive)")
        parser.add_argument("--until", help="before this ISO date/datetime (exclusive)")
        parser.add_argument("--provider", help="provider name, e.g. openai")
        parser.add_argument("--endpoint", help="endpoint contains this text (case ignored), e.g. /chat/completions")
        parser.add_argument("--status", help="a status code (200) or one of " + ", ".join(STATUS_CLASSES)
                            + " (a class such as 4xx holds the provider's own answers: the gateway's own "
                              "refusals and errors are gateway_error and rate_limited)")
        parser.add_argument("--model", help="requested or answering model, exactly")
        parser.add_argument("--gateway-key", help="a gateway key's name (or its label as logged, "
                                                  "'name (fp 0123456789ab)'); - for requests without one")
        parser.add_argument("--key", help="a provider API key's fingerprint (12 hex digits, as logged)")
        parser.add_argument("--no-bodies", action="store_true", help="leave request/response bodies out")

    def handle(self, *args, **opts) -> None:
        """Build the filters, stream the export, report the count on stderr."""
        if opts["status"] is not None:  # an empty one too: it is no filter, not "everything"
            try:
                status_q(opts["status"])
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        filters = ExportFilters(
            since=moment_parse(opts["since"]) if opts["since"] else None,
            until=moment_parse(opts["until"]) if opts["until"] else None,
            provider=opts["provider"], endpoint=opts["endpoint"], status=opts["status"], model=opts["model"],
            gateway_key=opts["gateway_key"], key=opts["key"])
        try:
            export_filters_check(filters)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        bodies = not opts["no_bodies"]
        qs = exchanges_for_export(filters, bodies=bodies)
        if opts["output"] == "-":  # `export_logs | head`: manage.py ends quietly when the reader goes
            count = export_write(qs, opts["format"], sys.stdout, bodies)
            sys.stdout.flush()
        else:
            if own := _gateway_own(opts["output"]):
                raise CommandError(f"{opts['output']} is {own}: write the export anywhere else")
            try:
                count = _export_to_path(qs, opts["format"], opts["output"], bodies)
            except OSError as exc:
                raise CommandError(f"cannot write {opts['output']}: {exc.strerror or exc}") from None
        self.stderr.write(f"exported {count} exchange{'' if count == 1 else 's'}")


def _gateway_own(target: str) -> str:
    """What of the gateway's own data a path is ("" if none): an export written there replaced the SQLite
    database it was read from, or landed in the journal folder, where the ingest took it for a dead process's
    journal, skipped every line as unreadable and deleted it."""
    path = Path(os.path.realpath(target))
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and str(db["NAME"]) != ":memory:":
        name = Path(os.path.realpath(db["NAME"]))
        if path in (name, name.with_name(f"{name.name}-wal"), name.with_name(f"{name.name}-shm")):
            return "the log's database"
    for folder, what in ((settings.JOURNAL_DIR, "journal"), (settings.SPOOL_DIR, "spool"),
                         (settings.FILE_STORAGE_PATH, "payload store")):
        if path.is_relative_to(os.path.realpath(folder)):
            return f"in the gateway's {what} folder"
    return ""


def _export_to_path(qs, fmt: str, target: str, bodies: bool) -> int:
    """Write the export to a file that appears, or replaces the file there, only once it is complete.

    Written in place, an export stopped half-way (Ctrl-C, a full disk, the database gone) left a file of
    whole JSONL lines that read as a complete export, over the previous export it had already erased.
    A FIFO or a device (-o /dev/stdout) is written to as it is: there is nothing to replace.
    """
    newline = "" if fmt == "csv" else None  # csv writes its own CRLF
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):  # open() names a folder's error itself
        with open(target, "w", encoding="utf-8", newline=newline) as out:
            return export_write(qs, fmt, out, bodies)
    path = os.path.realpath(target)  # a symlink's target is what gets replaced, not the link
    folder, name = os.path.split(path)
    try:
        fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
    except PermissionError as exc:  # a file one may write in a folder one may not: say why it is the folder
        raise PermissionError(exc.errno, f"{exc.strerror} to create a file in {folder} (the export is written "
                                         "there first, then takes the file's place)") from None
    try:
        with open(fd, "w", encoding="utf-8", newline=newline) as out:
            count = export_write(qs, fmt, out, bodies)
        # mkstemp's file is its owner's only: keep the mode of the export replaced, or the one a plain open gives.
        os.chmod(partial, stat.S_IMODE(mode) if mode is not None else 0o666 & ~_umask())
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    return count


def _umask() -> int:
    """The process's umask (reading it means setting it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
