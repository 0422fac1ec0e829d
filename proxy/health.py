"""Whether the log database serves the gateway, as GET /health says it to anyone who asks.

The answer is unauthenticated, so it never quotes the database driver: its text can name the host, the
user, the database or a file's path. It says one fixed reason; the full error goes to the console,
once each time the reason changes (a probe every few seconds must not flood it).
"""

import logging

from django.db import connection

from logs.redaction.redact import SCRUB_MIN_LEN
from logs.redaction.scrub import error_scrub

log = logging.getLogger(__name__)

NO_ANSWER = "the log database does not answer"
# schema_current: every migration applied, once seen (a running gateway never takes them back).
# problem: the reason /health gave last ("" while healthy), to log only its changes.
_state = {"schema_current": False, "problem": ""}


class NotMigrated(Exception):
    """Migrations are missing: the message is an instruction to the operator, safe to show."""


def _db_ping() -> None:
    """A trivial query on the log database, then, until it once finds them applied, whether every
    migration is: an unmigrated database answers SELECT 1, and every proxied call with a 500."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    if not _state["schema_current"]:
        from django.db.migrations.executor import MigrationExecutor  # loads the migration files: once

        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if plan:
            raise NotMigrated(f"the database is not migrated ({len(plan)} migrations to apply): "
                              "run python manage.py migrate")
        _state["schema_current"] = True


def db_problem() -> str:
    """Why the log database cannot serve the gateway, in words safe to show anyone ("" when it can)."""
    try:
        _db_ping()
        problem, error = "", ""
    except NotMigrated as exc:
        problem, error = str(exc), ""
    except Exception as exc:
        problem, error = NO_ANSWER, _error_text(exc)
    if problem != _state["problem"]:
        _state["problem"] = problem
        if problem:
            log.error("health: %s%s", problem, f" ({error})" if error else "")
        else:
            log.warning("health: the log database answers again")
    return problem


def _error_text(exc: Exception) -> str:
    """The driver's error for the console: credential-shaped text masked, the configured password too."""
    password = str(connection.settings_dict.get("PASSWORD") or "")
    return error_scrub(f"{type(exc).__name__}: {exc}", [password] if len(password) >= SCRUB_MIN_LEN else [])
