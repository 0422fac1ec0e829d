"""spend_days: spend and tokens per UTC day and (requested model, key, user), kept by triggers (see models.SpendDay).

The spend page read every answer in its range and its request (seconds at a million exchanges);
the whole days of a range now come from these rows, and only the partial days at its ends from
the log. Triggers rather than the ingest: every writer (bulk inserts, prune_logs, the admin's
delete, raw INSERT ... SELECT) keeps the figures exact.

The migration adds a table and triggers (no rewrite of `requests` or `responses`) and fills the
table with one grouped pass over the answers and their requests.
"""

from django.db import migrations, models

from logs.migrations._vendor import vendor_sql

SUMS = ("exchanges", "input_tokens", "output_tokens", "total_tokens", "priced", "cost_e8")
GROUP = 'day, model, "key", end_user'
COLUMNS = f"{GROUP}, {', '.join(SUMS)}"


def _values(vendor: str, sign: int, resp: str, req: str) -> list[str]:
    """One answer's group and figures times sign: `resp` names the response's row, `req` its request's."""
    if vendor == "sqlite":  # created_at is stored as 'YYYY-MM-DD HH:MM:SS...' in UTC
        day, cost = f"substr({resp}.created_at, 1, 10)", f"CAST(round({resp}.cost_usd * 100000000) AS INTEGER)"
    else:
        day, cost = f"({resp}.created_at AT TIME ZONE 'UTC')::date", f"round({resp}.cost_usd * 100000000)::bigint"
    return [day, f"coalesce({req}.model, '')",
            f"CASE WHEN {req}.gateway_key <> '' THEN {req}.gateway_key ELSE {req}.key_fingerprint END",
            f"coalesce({req}.end_user, '')", str(sign),
            *(f"{sign} * coalesce({resp}.{c}, 0)" for c in ("input_tokens", "output_tokens", "total_tokens")),
            f"{sign} * (CASE WHEN {resp}.cost_usd IS NULL THEN 0 ELSE 1 END)", f"{sign} * coalesce({cost}, 0)"]


def _add(vendor: str, sign: int, resp: str, req: str, source: str) -> str:
    """Add sign x an answer's figures to its group's row (made when missing)."""
    updates = ", ".join(f"{c} = spend_days.{c} + excluded.{c}" for c in SUMS)
    return (f"INSERT INTO spend_days ({COLUMNS}) SELECT {', '.join(_values(vendor, sign, resp, req))} {source} "
            f"ON CONFLICT ({GROUP}) DO UPDATE SET {updates}")


def _add_grouped(vendor: str, sign: int, source: str) -> str:
    """Add sign x the figures of many answers, grouped first: `source` joins responses `p` to their requests `q`."""
    names = COLUMNS.replace('"', "").split(", ")
    inner = ", ".join(f"{e} AS {c}" for e, c in zip(_values(vendor, sign, "p", "q"), names))
    updates = ", ".join(f"{c} = spend_days.{c} + excluded.{c}" for c in SUMS)
    return (f"INSERT INTO spend_days ({COLUMNS}) SELECT {GROUP}, {', '.join(f'sum({c})' for c in SUMS)} "
            f"FROM (SELECT {inner} FROM {source}) answers GROUP BY {GROUP} "
            f"ON CONFLICT ({GROUP}) DO UPDATE SET {updates}")


def _backfill(vendor: str) -> str:
    return _add_grouped(vendor, 1, "responses p JOIN requests q ON q.id = p.request_id")


FIGURES = "created_at, input_tokens, output_tokens, total_tokens, cost_usd"  # an update of these moves an answer
GROUPING = "model, gateway_key, key_fingerprint, end_user"  # an update of these moves a request's answer


def _sides(vendor: str, row: str, new: str, old: str) -> tuple[str, str]:
    """SQLite's row triggers: (subtract the old version, add the new one) of a response row (row="response") or a
    request's answer."""
    if row == "response":
        return (_add(vendor, -1, old, "q", f"FROM requests q WHERE q.id = {old}.request_id"),
                _add(vendor, 1, new, "q", f"FROM requests q WHERE q.id = {new}.request_id"))
    return (_add(vendor, -1, "p", old, f"FROM responses p WHERE p.request_id = {old}.id"),
            _add(vendor, 1, "p", new, f"FROM responses p WHERE p.request_id = {old}.id"))


def _sqlite_forward() -> list[str]:
    minus, plus = _sides("sqlite", "response", "new", "old")
    req_minus, req_plus = _sides("sqlite", "request", "new", "old")
    return [
        f"CREATE TRIGGER responses_spend_ai AFTER INSERT ON responses BEGIN {plus}; END",
        f"CREATE TRIGGER responses_spend_ad AFTER DELETE ON responses BEGIN {minus}; END",
        f"CREATE TRIGGER responses_spend_au AFTER UPDATE OF {FIGURES} ON responses BEGIN {minus}; {plus}; END",
        f"CREATE TRIGGER requests_spend_au AFTER UPDATE OF {GROUPING} ON requests BEGIN {req_minus}; {req_plus}; END",
        _backfill("sqlite"),
    ]


def _postgres_forward() -> list[str]:
    """Statement-level triggers over the transition tables: one grouped upsert per INSERT or DELETE (the ingest
    inserts up to 256 rows a statement), not one per row. A trigger with transition tables takes one event,
    so each table has three triggers on one function; they take no column list, so any UPDATE moves the
    updated rows' figures (requests and responses are not updated in normal use)."""
    def add(sign: int, responses: str, requests: str) -> str:
        return _add_grouped("postgresql", sign, f"{responses} p JOIN {requests} q ON q.id = p.request_id")

    return [
        f"""CREATE FUNCTION spend_days_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN {add(-1, "old_rows", "requests")}; END IF;
            IF TG_OP <> 'DELETE' THEN {add(1, "new_rows", "requests")}; END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION spend_days_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {add(-1, "responses", "old_rows")}; {add(1, "responses", "new_rows")};
            RETURN NULL;
        END $$""",
        *(f"""CREATE TRIGGER responses_spend_{event[:3].lower()} AFTER {event} ON responses REFERENCING {tables}
            FOR EACH STATEMENT EXECUTE FUNCTION spend_days_on_response()"""
          for event, tables in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows"),
                                ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"))),
        """CREATE TRIGGER requests_spend_upd AFTER UPDATE ON requests
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION spend_days_on_request()""",
        _backfill("postgresql"),
    ]


SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS {t}" for t in (
    "responses_spend_ai", "responses_spend_ad", "responses_spend_au", "requests_spend_au")]
POSTGRES_BACKWARD = [
    *(f"DROP TRIGGER IF EXISTS responses_spend_{event} ON responses" for event in ("ins", "del", "upd")),
    "DROP TRIGGER IF EXISTS requests_spend_upd ON requests",
    "DROP FUNCTION IF EXISTS spend_days_on_response()",
    "DROP FUNCTION IF EXISTS spend_days_on_request()",
]


class Migration(migrations.Migration):
    dependencies = [("logs", "0009_requests_pending")]

    operations = [
        migrations.CreateModel(
            name="SpendDay",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("day", models.DateField()),
                ("model", models.CharField(max_length=255)),
                ("key", models.CharField(max_length=160)),
                ("end_user", models.CharField(max_length=255)),
                ("exchanges", models.BigIntegerField(default=0)),
                ("input_tokens", models.BigIntegerField(default=0)),
                ("output_tokens", models.BigIntegerField(default=0)),
                ("total_tokens", models.BigIntegerField(default=0)),
                ("priced", models.BigIntegerField(default=0)),
                ("cost_e8", models.BigIntegerField(default=0)),
            ],
            options={
                "db_table": "spend_days",
                "constraints": [models.UniqueConstraint(fields=("day", "model", "key", "end_user"),
                                                        name="spend_days_group_uniq")],
            },
        ),
        vendor_sql({"sqlite": _sqlite_forward(), "postgresql": _postgres_forward()},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
