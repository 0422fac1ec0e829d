"""GET /health: a fixed reason to anyone who asks, the driver's error on the console once per change."""

import logging

import pytest
from django.db import OperationalError, connection
from django.test import Client

from proxy import health

pytestmark = pytest.mark.django_db

# What a PostgreSQL driver says when the server refuses: host, address, user and database, none for a probe.
REFUSAL = ('connection to server at "db-7.internal.example" (10.20.30.40), port 5432 failed: FATAL:  password '
           'authentication failed for user "gw_owner" (database "gateway_prod", via postgres://gw_owner:Hunter2-db-Pa55word@db-7.internal.example)')
LEAKS = ("db-7.internal", "10.20.30.40", "gw_owner", "gateway_prod", "Hunter2-db-Pa55word")


@pytest.fixture
def fresh(monkeypatch):
    """Health state as a starting process has it, restored after (other tests share the module)."""
    monkeypatch.setitem(health._state, "problem", "")
    monkeypatch.setitem(health._state, "schema_current", False)


@pytest.fixture
def db_down(monkeypatch):
    """The log database refuses connections while state["down"]; its password is the one in REFUSAL."""
    state = {"down": True}
    real = connection.cursor

    def cursor(*args, **kwargs):
        if state["down"]:
            raise OperationalError(REFUSAL)
        return real(*args, **kwargs)

    monkeypatch.setattr(connection, "cursor", cursor)
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", "Hunter2-db-Pa55word")
    return state


def _health_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "proxy.health"]


def test_a_database_error_is_not_told_to_the_prober_but_logged_once_per_change(fresh, db_down, caplog):
    caplog.set_level(logging.WARNING, logger="proxy.health")
    caplog.set_level(logging.WARNING, logger="django.request")
    for _ in range(3):  # a probe every few seconds
        r = Client().get("/health")
        assert r.status_code == 503
        assert r.json()["detail"] == "the log database does not answer" and r.json()["status"] == "error"
        assert not [leak for leak in LEAKS if leak in r.content.decode()]
    lines = _health_lines(caplog)
    assert len(lines) == 1  # once, not once per probe
    # Nor Django's own "Service Unavailable: /health" line per probe (the reason is in the one above).
    assert [r.getMessage() for r in caplog.records if r.name == "django.request"] == []
    # The operator's console has the driver's words (the host, the user), its configured password masked.
    assert "the log database does not answer (OperationalError: connection to server at" in lines[0]
    assert "db-7.internal.example" in lines[0] and "gw_owner" in lines[0]
    assert "Hunter2-db-Pa55word" not in caplog.text

    db_down["down"] = False
    assert Client().get("/health").status_code == 200
    assert Client().get("/health").status_code == 200
    assert _health_lines(caplog)[1:] == ["health: the log database answers again"]
    db_down["down"] = True
    assert Client().get("/health").status_code == 503
    assert len(_health_lines(caplog)) == 3  # down again: said again


def test_a_database_not_migrated_keeps_its_instruction(fresh, monkeypatch, caplog):
    from django.db.migrations.executor import MigrationExecutor

    monkeypatch.setattr(MigrationExecutor, "migration_plan", lambda self, targets: [("logs", "0099"), ("keys", "0042")])
    caplog.set_level(logging.WARNING, logger="proxy.health")
    for _ in range(2):
        r = Client().get("/health")
        assert r.status_code == 503
        assert r.json()["detail"] == "the database is not migrated (2 migrations to apply): run python manage.py migrate"
    assert _health_lines(caplog) == [
        "health: the database is not migrated (2 migrations to apply): run python manage.py migrate"]


def test_journal_lines_kept_aside_are_counted_only_when_there_are_some(settings):
    from logs.pipeline.journal import lines_keep_aside

    assert "log_lines_kept_aside" not in Client().get("/health").json()
    lines_keep_aside(settings.JOURNAL_DIR, "gone-host", [b"not a record\n", b'{"t": "future"}\n'])
    lines_keep_aside(settings.JOURNAL_DIR, "worker-7", [b"not a record either\n"])
    answer = Client().get("/health")
    assert answer.status_code == 200 and answer.json()["log_lines_kept_aside"] == 3
