#!/usr/bin/env python
"""Django's command-line utility for the gateway."""

import os
import sys


def main() -> None:
    """Run a management command."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A setting that cannot be used, named by settings.py (`migrate` with a typo in .env): that line, as the
        # server prints it (gateway_project/asgi.py), not the traceback of Django's import of the settings.
        sys.stderr.write(f"ImproperlyConfigured: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        # The reader went away (`hold list | head -1`, `export_logs | head`): what it wanted, it got.
        # Python's own advice: point stdout at /dev/null so the exit's flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
