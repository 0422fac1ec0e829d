"""The word index reads a JSON body's decoded strings, and a streamed answer's reassembled result.

Migration 0008 indexed the bodies as stored, JSON text: a prompt's "\\nQuarterly" was the word
"nquarterly", "K\\u00fcndigung" (Python's json.dumps, requests' json=) the word "u00fcndigung", and
a streamed answer's words were cut where its chunks were. Now a body that is JSON is indexed by its
string and number values, decoded (its keys are not words of the conversation), and a response's
stream_result (the reassembled answer) is indexed beside its body. A body that is not JSON (an event
stream, a form) is indexed as stored, as before.

SQLite: the FTS5 tables' triggers take json_tree's values (about 30 us for a 10 KB body, in the
ingest process). PostgreSQL: an IMMUTABLE function, log_search_text, does the same for the GIN
indexes' expressions (logs/textsearch.py holds the same expressions). Both indexes are rebuilt: on
a large log this migration reads every body once (minutes at millions of exchanges).
"""

from django.db import migrations

from logs.migrations._vendor import vendor_sql

TEXT_CHARS = 200000
SEPARATORS = "'/.@:-?=&+#~', '           '"  # as in 0008: see logs/textsearch.py


def _decoded(column: str) -> str:
    """SQLite: a JSON column's string and number values, decoded; the column as stored when it is no JSON."""
    return (f"CASE WHEN json_valid({column}) THEN (SELECT group_concat(value, ' ') FROM json_tree({column}) "
            f"WHERE type IN ('text', 'integer', 'real')) ELSE {column} END")


def _request_text(row: str) -> str:
    return f"substr({_decoded(f'{row}.body')}, 1, {TEXT_CHARS})"


def _response_text(row: str) -> str:
    return (f"substr(coalesce({_decoded(f'{row}.body')}, '') || ' ' || coalesce({_decoded(f'{row}.stream_result')}, ''),"
            f" 1, {TEXT_CHARS})")


TRIGGERS = ("requests_text_fts_ai", "requests_text_fts_ad", "requests_text_fts_au",
            "responses_text_fts_ai", "responses_text_fts_ad", "responses_text_fts_au")


def _sqlite(request_text, response_text, response_columns: str) -> list[str]:
    """The six triggers of 0008 with these texts, and the index rebuilt with them."""
    return [
        *(f"DROP TRIGGER IF EXISTS {t}" for t in TRIGGERS),
        f"""CREATE TRIGGER requests_text_fts_ai AFTER INSERT ON requests BEGIN
            INSERT OR REPLACE INTO requests_text_fts (rowid, request_id, endpoint, body)
            VALUES (new.rowid, new.id, new.endpoint, {request_text('new')});
        END""",
        """CREATE TRIGGER requests_text_fts_ad AFTER DELETE ON requests BEGIN
            DELETE FROM requests_text_fts WHERE rowid = old.rowid;
        END""",
        f"""CREATE TRIGGER requests_text_fts_au AFTER UPDATE OF id, endpoint, body ON requests BEGIN
            INSERT OR REPLACE INTO requests_text_fts (rowid, request_id, endpoint, body)
            VALUES (new.rowid, new.id, new.endpoint, {request_text('new')});
        END""",
        f"""CREATE TRIGGER responses_text_fts_ai AFTER INSERT ON responses BEGIN
            INSERT OR REPLACE INTO responses_text_fts (rowid, request_id, body)
            VALUES (new.rowid, new.request_id, {response_text('new')});
        END""",
        """CREATE TRIGGER responses_text_fts_ad AFTER DELETE ON responses BEGIN
            DELETE FROM responses_text_fts WHERE rowid = old.rowid;
        END""",
        f"""CREATE TRIGGER responses_text_fts_au AFTER UPDATE OF {response_columns} ON responses BEGIN
            INSERT OR REPLACE INTO responses_text_fts (rowid, request_id, body)
            VALUES (new.rowid, new.request_id, {response_text('new')});
        END""",
        "DELETE FROM requests_text_fts",
        "DELETE FROM responses_text_fts",
        f"""INSERT INTO requests_text_fts (rowid, request_id, endpoint, body)
            SELECT rowid, id, endpoint, {request_text('requests')} FROM requests""",
        f"""INSERT INTO responses_text_fts (rowid, request_id, body)
            SELECT rowid, request_id, {response_text('responses')} FROM responses""",
    ]


def _raw_request(row: str) -> str:  # 0008's
    return f"substr({row}.body, 1, {TEXT_CHARS})"


SQLITE_FORWARD = _sqlite(_request_text, _response_text, "request_id, body, stream_result")
SQLITE_BACKWARD = _sqlite(_raw_request, _raw_request, "request_id, body")

POSTGRES_FUNCTION = """CREATE OR REPLACE FUNCTION log_search_text(doc text) RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF doc IS NULL THEN
        RETURN '';
    END IF;
    IF left(ltrim(doc), 1) NOT IN ('{', '[', '"') THEN
        RETURN doc;
    END IF;
    RETURN coalesce((SELECT string_agg(v #>> '{}', ' ') FROM jsonb_path_query(doc::jsonb, 'strict $.**') AS v
                     WHERE jsonb_typeof(v) IN ('string', 'number')), '');
EXCEPTION WHEN others THEN  -- not JSON after all (or a NUL jsonb cannot hold): as stored
    RETURN doc;
END
$$"""
POSTGRES_FORWARD = [
    POSTGRES_FUNCTION,
    "DROP INDEX IF EXISTS requests_text_idx",
    "DROP INDEX IF EXISTS responses_text_idx",
    f"""CREATE INDEX requests_text_idx ON requests USING gin
        (to_tsvector('simple'::regconfig, translate(left(coalesce(endpoint, '') || ' ' || log_search_text(body),
         {TEXT_CHARS}), {SEPARATORS})))""",
    f"""CREATE INDEX responses_text_idx ON responses USING gin
        (to_tsvector('simple'::regconfig, translate(left(log_search_text(body) || ' ' ||
         log_search_text(stream_result::text), {TEXT_CHARS}), {SEPARATORS})))""",
]
POSTGRES_BACKWARD = [
    "DROP INDEX IF EXISTS requests_text_idx",
    "DROP INDEX IF EXISTS responses_text_idx",
    f"""CREATE INDEX requests_text_idx ON requests USING gin
        (to_tsvector('simple'::regconfig, translate(left(coalesce(endpoint, '') || ' ' || coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS})))""",
    f"""CREATE INDEX responses_text_idx ON responses USING gin
        (to_tsvector('simple'::regconfig, translate(left(coalesce(body, ''), {TEXT_CHARS}), {SEPARATORS})))""",
    "DROP FUNCTION IF EXISTS log_search_text(text)",
]


class Migration(migrations.Migration):
    dependencies = [("logs", "0013_payload_orphans")]

    operations = [
        vendor_sql({"sqlite": SQLITE_FORWARD, "postgresql": POSTGRES_FORWARD},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
