#!/usr/bin/env python
"""Django's command-line utility for the gateway."""

import os
import sys


def main() -> None:
    """Run a management command."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line
    from django.db import DatabaseError

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A setting that cannot be used, named by settings.py (`migrate` with a typo in .env): that line, as the
        # server prints it (gateway_project/asgi.py), not the traceback of Django's import of the settings.
        sys.stderr.write(f"ImproperlyConfigured: {exc}\n")
        sys.exit(1)
    except DatabaseError as exc:
        if "--traceback" in sys.argv:
            raise
        # `gateway_key list` before `migrate` on a new machine, or with the database down: the driver's words and
        # what to check, not 40 lines of Django's traceback ending in "no such table: gateway_keys".
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no reason given"
        sys.stderr.write(f"{type(exc).__name__}: {reason} (is the database up, and migrated? "
                         "python manage.py migrate)\n")
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The reader went away (`hold list | head -1`, `export_logs | head`): what it wanted, it got.
        # Python's own advice: point stdout at /dev/null so the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        if "--traceback" in sys.argv:
            raise
        # Ctrl-C (a long export_logs, prune_logs): the user knows why it stopped; 60 lines of whatever frame it hit
        # said nothing more. The exit status a shell gives a command SIGINT ended. Stdout may be a pipe nobody reads.
        # What the interrupted frames still hold is cleaned up at exit, after Django's command closed the database
        # connections: an export's cursor then printed sqlite3's "Cannot operate on a closed database", a traceback
        # about nothing the user can act on.
        sys.unraisablehook = lambda unraisable: None
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write("interrupted\n")
        sys.exit(130)
