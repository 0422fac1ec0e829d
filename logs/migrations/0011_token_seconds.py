"""token_seconds: each gateway key's tokens per second of answers, kept by triggers (see models.TokenSecond).

A limited key's tokens per minute were summed from the log's answers of the last minute, once a
second per key and worker: a read that grew with the traffic (60,000 rows at 1,000 requests a
second). It now adds up at most 61 rows. Triggers rather than the ingest, as for spend_days:
every writer and every delete keeps the figures exact. Rows older than KEEP_SECONDS are deleted
as answers are written, so the table stays at about an hour of seconds per active key.
"""

from django.db import migrations, models

from logs.migrations._vendor import vendor_sql

KEEP_SECONDS = 3600
UPSERT = ('INSERT INTO token_seconds ("key", second, tokens) {select} '
          'ON CONFLICT ("key", second) DO UPDATE SET tokens = token_seconds.tokens + excluded.tokens')


def _second(vendor: str, resp: str) -> str:
    """The epoch second an answer ended: its row's created_at is the exchange's start, duration_ms runs to its end."""
    if vendor == "sqlite":  # created_at is stored as 'YYYY-MM-DD HH:MM:SS...' in UTC
        return (f"CAST((julianday({resp}.created_at) - 2440587.5) * 86400.0 "
                f"+ coalesce({resp}.duration_ms, 0) / 1000.0 AS INTEGER)")
    return f"floor(extract(epoch FROM {resp}.created_at) + coalesce({resp}.duration_ms, 0) / 1000.0)::bigint"


def _add(vendor: str, sign: int, source: str) -> str:
    """Add sign x the tokens of the answers in `source` (responses `p` joined to their requests `q`) of keyed requests."""
    second = _second(vendor, "p")
    return UPSERT.format(select=(
        f'SELECT q.gateway_key, {second}, sum({sign} * p.total_tokens) FROM {source} '
        f"WHERE q.gateway_key <> '' AND p.total_tokens IS NOT NULL "
        f"GROUP BY q.gateway_key, {second} ORDER BY q.gateway_key, {second}"))


def _trim(vendor: str) -> str:
    # Not strftime('%s', ...): the migration's SQL goes through a cursor that reads %s as a parameter.
    now = ("CAST((julianday('now') - 2440587.5) * 86400.0 AS INTEGER)" if vendor == "sqlite"
           else "extract(epoch FROM now())::bigint")
    return f"DELETE FROM token_seconds WHERE second < {now} - {KEEP_SECONDS}"


def _sqlite_forward() -> list[str]:
    def response(row: str, sign: int) -> str:
        return _add("sqlite", sign, f"(SELECT {row}.created_at AS created_at, {row}.duration_ms AS duration_ms, "
                                    f"{row}.total_tokens AS total_tokens) p "
                                    f"JOIN requests q ON q.id = {row}.request_id")

    def request(row: str, sign: int) -> str:
        return _add("sqlite", sign, f"responses p JOIN (SELECT {row}.gateway_key AS gateway_key) q "
                                    f"ON p.request_id = old.id")

    return [
        # Only answers with tokens; and the old seconds are trimmed when a key's new second starts (an
        # upsert that adds to an existing row is an UPDATE of token_seconds), not at every answer.
        f"CREATE TRIGGER responses_tokens_ai AFTER INSERT ON responses WHEN new.total_tokens IS NOT NULL "
        f"BEGIN {response('new', 1)}; END",
        f"CREATE TRIGGER token_seconds_trim AFTER INSERT ON token_seconds BEGIN {_trim('sqlite')}; END",
        f"CREATE TRIGGER responses_tokens_ad AFTER DELETE ON responses BEGIN {response('old', -1)}; END",
        f"CREATE TRIGGER responses_tokens_au AFTER UPDATE OF created_at, duration_ms, total_tokens, request_id ON responses "
        f"BEGIN {response('old', -1)}; {response('new', 1)}; END",
        f"CREATE TRIGGER requests_tokens_au AFTER UPDATE OF gateway_key ON requests "
        f"BEGIN {request('old', -1)}; {request('new', 1)}; END",
        _backfill("sqlite"),
    ]


def _postgres_forward() -> list[str]:
    """Statement-level triggers over the transition tables (one grouped upsert per statement), as for spend_days."""
    def add(sign: int, responses: str, requests: str) -> str:
        return _add("postgresql", sign, f"{responses} p JOIN {requests} q ON q.id = p.request_id")

    return [
        f"""CREATE FUNCTION token_seconds_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN {add(-1, "old_rows", "requests")}; END IF;
            IF TG_OP <> 'DELETE' THEN {add(1, "new_rows", "requests")}; END IF;
            IF TG_OP = 'INSERT' THEN {_trim("postgresql")}; END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION token_seconds_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {add(-1, "responses", "old_rows")}; {add(1, "responses", "new_rows")};
            RETURN NULL;
        END $$""",
        *(f"""CREATE TRIGGER responses_tokens_{event[:3].lower()} AFTER {event} ON responses REFERENCING {tables}
            FOR EACH STATEMENT EXECUTE FUNCTION token_seconds_on_response()"""
          for event, tables in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows"),
                                ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"))),
        """CREATE TRIGGER requests_tokens_upd AFTER UPDATE ON requests
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION token_seconds_on_request()""",
        _backfill("postgresql"),
    ]


def _backfill(vendor: str) -> str:
    """The last KEEP_SECONDS of answers (older seconds are never read)."""
    since = (f"datetime('now', '-{KEEP_SECONDS} seconds')" if vendor == "sqlite"
             else f"now() - interval '{KEEP_SECONDS} seconds'")
    return _add(vendor, 1, f"responses p JOIN requests q ON q.id = p.request_id AND p.created_at >= {since}")


SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS {t}" for t in (
    "responses_tokens_ai", "responses_tokens_ad", "responses_tokens_au", "requests_tokens_au", "token_seconds_trim")]
POSTGRES_BACKWARD = [
    *(f"DROP TRIGGER IF EXISTS responses_tokens_{event} ON responses" for event in ("ins", "del", "upd")),
    "DROP TRIGGER IF EXISTS requests_tokens_upd ON requests",
    "DROP FUNCTION IF EXISTS token_seconds_on_response()",
    "DROP FUNCTION IF EXISTS token_seconds_on_request()",
]


class Migration(migrations.Migration):
    dependencies = [("logs", "0010_spend_days")]

    operations = [
        migrations.CreateModel(
            name="TokenSecond",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=160)),
                ("second", models.BigIntegerField()),
                ("tokens", models.BigIntegerField(default=0)),
            ],
            options={
                "db_table": "token_seconds",
                "constraints": [models.UniqueConstraint(fields=("key", "second"), name="token_seconds_key_second_uniq")],
                "indexes": [models.Index(fields=["second"], name="token_seconds_second")],
            },
        ),
        vendor_sql({"sqlite": _sqlite_forward(), "postgresql": _postgres_forward()},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
