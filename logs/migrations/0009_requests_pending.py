"""requests_pending: the ids of requests without a response row, kept by triggers (see models.PendingRequest).

"No response yet" was NOT EXISTS (a response) over every request: the whole log for a filter
that matches a handful. This table holds only those requests, so the filter reads it and then
sorts its few rows. Triggers rather than the ingest: every writer (bulk inserts, deletes by
prune_logs and the admin, raw INSERT ... SELECT) keeps it exact.

The migration adds a table and triggers (no rewrite of `requests` or `responses`) and fills the
table with one pass over the request ids (an index) against the responses' request_id index.
"""

from django.db import migrations, models

BACKFILL = """INSERT INTO requests_pending (request_id)
    SELECT r.id FROM requests r WHERE NOT EXISTS (SELECT 1 FROM responses p WHERE p.request_id = r.id)"""

SQLITE_FORWARD = [
    """CREATE TRIGGER requests_pending_ai AFTER INSERT ON requests
        WHEN NOT EXISTS (SELECT 1 FROM responses WHERE request_id = new.id) BEGIN
        INSERT OR IGNORE INTO requests_pending (request_id) VALUES (new.id);
    END""",
    """CREATE TRIGGER requests_pending_ad AFTER DELETE ON requests BEGIN
        DELETE FROM requests_pending WHERE request_id = old.id;
    END""",
    """CREATE TRIGGER requests_pending_au AFTER UPDATE OF id ON requests BEGIN
        DELETE FROM requests_pending WHERE request_id = old.id;
        INSERT OR IGNORE INTO requests_pending (request_id) SELECT new.id
            WHERE NOT EXISTS (SELECT 1 FROM responses WHERE request_id = new.id);
    END""",
    """CREATE TRIGGER responses_pending_ai AFTER INSERT ON responses BEGIN
        DELETE FROM requests_pending WHERE request_id = new.request_id;
    END""",
    # prune_logs and the admin delete responses before their requests: the request is pending for
    # the rest of that transaction, then its own delete takes it out.
    """CREATE TRIGGER responses_pending_ad AFTER DELETE ON responses BEGIN
        INSERT OR IGNORE INTO requests_pending (request_id) SELECT old.request_id
            WHERE EXISTS (SELECT 1 FROM requests WHERE id = old.request_id);
    END""",
    """CREATE TRIGGER responses_pending_au AFTER UPDATE OF request_id ON responses BEGIN
        INSERT OR IGNORE INTO requests_pending (request_id) SELECT old.request_id
            WHERE EXISTS (SELECT 1 FROM requests WHERE id = old.request_id);
        DELETE FROM requests_pending WHERE request_id = new.request_id;
    END""",
    BACKFILL,
]
SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS {t}" for t in (
    "requests_pending_ai", "requests_pending_ad", "requests_pending_au",
    "responses_pending_ai", "responses_pending_ad", "responses_pending_au")]

POSTGRES_FORWARD = [
    """CREATE FUNCTION requests_pending_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            DELETE FROM requests_pending WHERE request_id = OLD.id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO requests_pending (request_id) SELECT NEW.id
                WHERE NOT EXISTS (SELECT 1 FROM responses WHERE request_id = NEW.id) ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION requests_pending_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO requests_pending (request_id) SELECT OLD.request_id
                WHERE EXISTS (SELECT 1 FROM requests WHERE id = OLD.request_id) ON CONFLICT DO NOTHING;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            DELETE FROM requests_pending WHERE request_id = NEW.request_id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER requests_pending_keep AFTER INSERT OR DELETE OR UPDATE OF id ON requests
        FOR EACH ROW EXECUTE FUNCTION requests_pending_on_request()""",
    """CREATE TRIGGER responses_pending_keep AFTER INSERT OR DELETE OR UPDATE OF request_id ON responses
        FOR EACH ROW EXECUTE FUNCTION requests_pending_on_response()""",
    BACKFILL,
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS requests_pending_keep ON requests",
    "DROP TRIGGER IF EXISTS responses_pending_keep ON responses",
    "DROP FUNCTION IF EXISTS requests_pending_on_request()",
    "DROP FUNCTION IF EXISTS requests_pending_on_response()",
]


def _run(statements: dict):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    dependencies = [("logs", "0008_body_text_index")]

    operations = [
        migrations.CreateModel(
            name="PendingRequest",
            fields=[("request_id", models.UUIDField(primary_key=True, serialize=False))],
            options={"db_table": "requests_pending"},
        ),
        migrations.RunPython(
            _run({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD}),
            _run({"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
        ),
    ]
