"""A word index over request and response bodies (and request endpoints), for the list's search box.

LIKE '%word%' reads every body: seconds at a few hundred thousand exchanges, growing with the log.
These indexes answer "which exchanges contain this word" from the index alone (logs/textsearch.py
asks them; the expressions there must stay the same as here, tests/logs/test_textsearch.py checks
the query plans use them).

SQLite: two FTS5 tables (one per side), each row keyed by its source row's rowid and holding the
request id, kept by triggers. A table rebuild of `requests` or `responses` by a later migration
drops the triggers: such a migration must create them again (the test checks they exist).
PostgreSQL: GIN indexes on to_tsvector('simple', ...) of the same text, paths and URLs split into
words first (SEPARATORS); no extension needed (pg_trgm would need CREATE EXTENSION). Building them
locks writes to the two tables while it runs (not timed on a large log).
Both index the first TEXT_CHARS characters of a body (a tsvector has a 1 MB limit; an insert
that exceeds it would fail the log write).
"""

from django.db import migrations

from logs.migrations._vendor import vendor_sql

TEXT_CHARS = 200000
# PostgreSQL's parser keeps paths, URLs, e-mail addresses, hosts and numbers as single words; these
# characters become spaces first, so "/v1/embeddings" holds the word "embeddings" as with FTS5.
SEPARATORS = "'/.@:-?=&+#~', '           '"

SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE requests_text_fts USING fts5(request_id UNINDEXED, endpoint, body)",
    "CREATE VIRTUAL TABLE responses_text_fts USING fts5(request_id UNINDEXED, body)",
    # INSERT OR REPLACE: a VACUUM may renumber rowids of tables without an INTEGER PRIMARY KEY, so a
    # new row may meet a stale index row's rowid; the index row follows the table, not the reverse.
    f"""CREATE TRIGGER requests_text_fts_ai AFTER INSERT ON requests BEGIN
        INSERT OR REPLACE INTO requests_text_fts (rowid, request_id, endpoint, body)
        VALUES (new.rowid, new.id, new.endpoint, substr(new.body, 1, {TEXT_CHARS}));
    END""",
    """CREATE TRIGGER requests_text_fts_ad AFTER DELETE ON requests BEGIN
        DELETE FROM requests_text_fts WHERE rowid = old.rowid;
    END""",
    f"""CREATE TRIGGER requests_text_fts_au AFTER UPDATE OF id, endpoint, body ON requests BEGIN
        INSERT OR REPLACE INTO requests_text_fts (rowid, request_id, endpoint, body)
        VALUES (new.rowid, new.id, new.endpoint, substr(new.body, 1, {TEXT_CHARS}));
    END""",
    f"""CREATE TRIGGER responses_text_fts_ai AFTER INSERT ON responses BEGIN
        INSERT OR REPLACE INTO responses_text_fts (rowid, request_id, body)
        VALUES (new.rowid, new.request_id, substr(new.body, 1, {TEXT_CHARS}));
    END""",
    """CREATE TRIGGER responses_text_fts_ad AFTER DELETE ON responses BEGIN
        DELETE FROM responses_text_fts WHERE rowid = old.rowid;
    END""",
    f"""CREATE TRIGGER responses_text_fts_au AFTER UPDATE OF request_id, body ON responses BEGIN
        INSERT OR REPLACE INTO responses_text_fts (rowid, request_id, body)
        VALUES (new.rowid, new.request_id, substr(new.body, 1, {TEXT_CHARS}));
    END""",
    f"""INSERT INTO requests_text_fts (rowid, request_id, endpoint, body)
        SELECT rowid, id, endpoint, substr(body, 1, {TEXT_CHARS}) FROM requests""",
    f"""INSERT INTO responses_text_fts (rowid, request_id, body)
        SELECT rowid, request_id, substr(body, 1, {TEXT_CHARS}) FROM responses""",
]
SQLITE_BACKWARD = [
    *(f"DROP TRIGGER IF EXISTS {t}" for t in (
        "requests_text_fts_ai", "requests_text_fts_ad", "requests_text_fts_au",
        "responses_text_fts_ai", "responses_text_fts_ad", "responses_text_fts_au")),
    "DROP TABLE IF EXISTS requests_text_fts",
    "DROP TABLE IF EXISTS responses_text_fts",
]

POSTGRES_FORWARD = [
    f"""CREATE INDEX IF NOT EXISTS requests_text_idx ON requests USING gin
        (to_tsvector('simple'::regconfig, translate(left(coalesce(endpoint, '') || ' ' || coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS})))""",
    f"""CREATE INDEX IF NOT EXISTS responses_text_idx ON responses USING gin
        (to_tsvector('simple'::regconfig, translate(left(coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS})))""",
]
POSTGRES_BACKWARD = ["DROP INDEX IF EXISTS requests_text_idx", "DROP INDEX IF EXISTS responses_text_idx"]


class Migration(migrations.Migration):
    dependencies = [("logs", "0007_request_user_session_metadata")]

    operations = [
        vendor_sql({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
