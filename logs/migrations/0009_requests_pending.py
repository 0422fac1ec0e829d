"""requests_pending: the ids of requests without a response row, kept by triggers (see models.PendingRequest).

"No response yet" was NOT EXISTS (a response) over every request: the whole log for a filter
that matches a handful. This table holds only those requests, so the filter reads it and then
sorts its few rows. Triggers rather than the ingest: every writer (bulk inserts, deletes by
prune_logs and the admin, raw INSERT ... SELECT) keeps it exact.

The migration adds a table and triggers (no rewrite of `requests` or `responses`) and fills the
table with one pass over the request ids (an index) against the responses' request_id index.
"""

from django.db import migrations, models

from logs.migrations._vendor import vendor_sql

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

# PostgreSQL: statement-level triggers over the transition tables, one set-based statement per
# INSERT or DELETE (the ingest inserts up to 256 rows a statement); a row-level plpgsql trigger
# cost the log writer a measurable share of its rate (docs/benchmark.md). A trigger with transition
# tables takes one event, so each table has three triggers on one function.
POSTGRES_FORWARD = [
    """CREATE FUNCTION requests_pending_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            DELETE FROM requests_pending p USING old_rows o WHERE p.request_id = o.id;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            INSERT INTO requests_pending (request_id) SELECT n.id FROM new_rows n
                WHERE NOT EXISTS (SELECT 1 FROM responses r WHERE r.request_id = n.id) ON CONFLICT DO NOTHING;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE FUNCTION requests_pending_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            INSERT INTO requests_pending (request_id) SELECT DISTINCT o.request_id FROM old_rows o
                WHERE EXISTS (SELECT 1 FROM requests q WHERE q.id = o.request_id)
                  AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.request_id = o.request_id) ON CONFLICT DO NOTHING;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            DELETE FROM requests_pending p USING new_rows n WHERE p.request_id = n.request_id;
        END IF;
        RETURN NULL;
    END $$""",
    *(f"""CREATE TRIGGER {table}_pending_{event[:3].lower()} AFTER {event} ON {table} REFERENCING {tables}
        FOR EACH STATEMENT EXECUTE FUNCTION requests_pending_on_{table[:-1]}()"""
      for table in ("requests", "responses")
      for event, tables in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows"),
                            ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"))),
    BACKFILL,
]
POSTGRES_BACKWARD = [
    *(f"DROP TRIGGER IF EXISTS {table}_pending_{event} ON {table}"
      for table in ("requests", "responses") for event in ("ins", "del", "upd")),
    "DROP FUNCTION IF EXISTS requests_pending_on_request()",
    "DROP FUNCTION IF EXISTS requests_pending_on_response()",
]


class Migration(migrations.Migration):
    dependencies = [("logs", "0008_body_text_index")]

    operations = [
        migrations.CreateModel(
            name="PendingRequest",
            fields=[("request_id", models.UUIDField(primary_key=True, serialize=False))],
            options={"db_table": "requests_pending"},
        ),
        vendor_sql({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
