"""spend_hours, answer_hours, latency_hours: the log's figures per UTC hour, kept by triggers (see models.SpendHour,
AnswerHour, LatencyHour).

The dashboard read every answer of its window (seconds for 24 hours at 333,000 answers a day) and
the spend page every answer of the partial days at its range's ends. Both now read whole hours
from these rows: the dashboard's window is whole hours, and a spend range reads the log only for
the minutes of an hour it leaves out. Triggers rather than the ingest, as for spend_days: every
writer and every delete (prune_logs, the admin) keeps the figures exact.

The migration adds three tables and triggers (no rewrite of `requests` or `responses`) and fills
them with one grouped pass over the answers each (spend_hours with their requests).
"""

from django.db import migrations, models

from logs.migrations._vendor import vendor_sql

# logs/stats.py BINS as this migration made the histogram: (lower bound ms, bin width ms). Changing
# the bins there needs a migration that refills latency_hours.
BINS = [(0, 1), (10, 2), (100, 10), (1_000, 100), (10_000, 1_000), (100_000, 10_000)]


def _hour(vendor: str, row: str) -> str:
    """The UTC hour an answer's created_at falls in."""
    if vendor == "sqlite":  # created_at is stored as 'YYYY-MM-DD HH:MM:SS...' in UTC, as Django writes datetimes
        return f"substr({row}.created_at, 1, 13) || ':00:00'"
    return f"date_trunc('hour', {row}.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def _e8(vendor: str, value: str) -> str:
    """A dollar amount in units of 1e-8 (its stored precision), 0 when unknown."""
    if vendor == "sqlite":
        return f"coalesce(CAST(round({value} * 100000000) AS INTEGER), 0)"
    return f"coalesce(round({value} * 100000000)::bigint, 0)"


def _bin(vendor: str, value: str) -> str:
    """The histogram bin of a timing, as logs/stats.py bin_expression computes it (CAST truncates on SQLite; PostgreSQL
    floors first, since its cast rounds)."""
    def part(low: int, width: int, first: int) -> str:
        if vendor == "sqlite":
            return f"CAST(({value} - {float(low)!r}) / {float(width)!r} AS INTEGER) + {first}"
        return f"CAST(FLOOR(({value} - {float(low)!r}::float8) / {float(width)!r}::float8) AS INTEGER) + {first}"

    whens, first = [], 0
    for i, (low, width) in enumerate(BINS[:-1]):
        upper = BINS[i + 1][0]
        whens.append(f"WHEN {value} < {float(upper)!r} THEN {part(low, width, first)}")
        first += (upper - low) // width
    low, width = BINS[-1]
    return f"CASE {' '.join(whens)} ELSE {part(low, width, first)} END"


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN 1 ELSE 0 END"


class Rollup:
    """A table of sums per group, and the SQL that adds sign x some answers' figures to it."""

    def __init__(self, table: str, groups: list[str], sums: list[str], rows) -> None:
        # rows(vendor, sign, p, q) -> [(select expressions in groups + sums order, condition or "")]: each answer
        # `p` (its request `q`) gives one row per entry.
        self.table, self.groups, self.sums, self.rows = table, groups, sums, rows

    def _upsert(self, select: str) -> str:
        updates = ", ".join(f"{c} = {self.table}.{c} + excluded.{c}" for c in self.sums)
        return (f"INSERT INTO {self.table} ({', '.join(self.groups + self.sums)}) {select} "
                f"ON CONFLICT ({', '.join(self.groups)}) DO UPDATE SET {updates}")

    def row_add(self, vendor: str, sign: int, p: str, q: str = "q", source: str = "", where: str = "") -> list[str]:
        """SQLite's row triggers: one upsert per entry of one answer `p` whose request is `q` (`source` and `where`:
        the FROM and WHERE that find whichever of the two is not the trigger's row, when needed)."""
        out = []
        for exprs, condition in self.rows(vendor, sign, p, q):
            conditions = " AND ".join(c for c in (where, condition) if c) or "true"  # a WHERE: see SQLite's upsert
            out.append(self._upsert(f"SELECT {', '.join(exprs)} {source} WHERE {conditions}"))
        return out

    def grouped_add(self, vendor: str, sign: int, source: str) -> str:
        """Many answers grouped first: `source` names responses `p` (joined to their requests `q` when needed)."""
        names = self.groups + self.sums
        inner = " UNION ALL ".join(
            f"SELECT {', '.join(f'{e} AS {c}' for e, c in zip(exprs, names))} FROM {source}"
            + (f" WHERE {condition}" if condition else "")
            for exprs, condition in self.rows(vendor, sign, "p", "q"))
        group = ", ".join(self.groups)
        return self._upsert(f"SELECT {group}, {', '.join(f'sum({c})' for c in self.sums)} FROM ({inner}) answers "
                            f"GROUP BY {group} ORDER BY {group}")


SPEND_SUMS = ["exchanges", "input_tokens", "output_tokens", "total_tokens", "priced", "cost_e8"]


def _spend_rows(vendor, sign, p, q):
    return [([_hour(vendor, p), f"coalesce({q}.model, '')",
              f"CASE WHEN {q}.gateway_key <> '' THEN {q}.gateway_key ELSE {q}.key_fingerprint END",
              f"coalesce({q}.end_user, '')", str(sign),
              *(f"{sign} * coalesce({p}.{c}, 0)" for c in ("input_tokens", "output_tokens", "total_tokens")),
              f"{sign} * {_flag(f'{p}.cost_usd IS NOT NULL')}", f"{sign} * {_e8(vendor, f'{p}.cost_usd')}"], "")]


def _answer_rows(vendor, sign, p, q):
    def tokens(c: str) -> str:  # counted over the answers that reported a total, as the dashboard does
        return f"{sign} * (CASE WHEN {p}.total_tokens IS NULL THEN 0 ELSE coalesce({p}.{c}, 0) END)"

    return [([_hour(vendor, p), f"coalesce({p}.model, '')", str(sign), f"{sign} * {_flag(f'{p}.is_error')}",
              f"{sign} * {_flag(f'{p}.cost_usd IS NOT NULL')}", f"{sign} * {_e8(vendor, f'{p}.cost_usd')}",
              f"{sign} * {_flag(f'{p}.cache_hit')}", f"{sign} * {_flag(f'NOT {p}.cache_hit')}",
              f"{sign} * {_flag(f'{p}.cost_saved_usd IS NOT NULL')}", f"{sign} * {_e8(vendor, f'{p}.cost_saved_usd')}",
              f"{sign} * {_flag(f'{p}.total_tokens IS NOT NULL')}", tokens("input_tokens"), tokens("output_tokens"),
              tokens("total_tokens")], "")]


def _latency_rows(vendor, sign, p, q):
    return [([_hour(vendor, p), str(metric), _bin(vendor, f"{p}.{column}"), str(sign)], f"{p}.{column} IS NOT NULL")
            for metric, column in ((0, "duration_ms"), (1, "ttfb_ms"))]


SPEND = Rollup("spend_hours", ["hour", "model", '"key"', "end_user"], SPEND_SUMS, _spend_rows)
ANSWERS = Rollup("answer_hours", ["hour", "model"],
                 ["exchanges", "errors", "priced", "cost_e8", "cache_hits", "cache_fills", "saved", "saved_e8",
                  "tokened", "input_tokens", "output_tokens", "total_tokens"], _answer_rows)
LATENCY = Rollup("latency_hours", ["hour", "metric", "bin"], ["answers"], _latency_rows)

# An update of these columns of a response moves its figures (SQLite; PostgreSQL's triggers take any update).
RESPONSE_COLUMNS = ("created_at, model, is_error, cost_usd, cache_hit, cost_saved_usd, input_tokens, output_tokens, "
                    "total_tokens, duration_ms, ttfb_ms")
REQUEST_COLUMNS = "model, gateway_key, key_fingerprint, end_user"  # an update of these moves a request's answer


def _backfill(vendor: str) -> list[str]:
    return [ANSWERS.grouped_add(vendor, 1, "responses p"), LATENCY.grouped_add(vendor, 1, "responses p"),
            SPEND.grouped_add(vendor, 1, "responses p JOIN requests q ON q.id = p.request_id")]


def _sqlite_forward() -> list[str]:
    def response(row: str, sign: int) -> str:
        return "; ".join([*ANSWERS.row_add("sqlite", sign, row), *LATENCY.row_add("sqlite", sign, row),
                          *SPEND.row_add("sqlite", sign, row, source="FROM requests q", where=f"q.id = {row}.request_id")])

    def request(row: str, sign: int) -> str:  # the request's answer, grouped by the request's old or new values
        return "; ".join(SPEND.row_add("sqlite", sign, "p", row, source="FROM responses p",
                                       where="p.request_id = old.id"))

    return [
        f"CREATE TRIGGER responses_hours_ai AFTER INSERT ON responses BEGIN {response('new', 1)}; END",
        f"CREATE TRIGGER responses_hours_ad AFTER DELETE ON responses BEGIN {response('old', -1)}; END",
        f"CREATE TRIGGER responses_hours_au AFTER UPDATE OF {RESPONSE_COLUMNS} ON responses "
        f"BEGIN {response('old', -1)}; {response('new', 1)}; END",
        f"CREATE TRIGGER requests_hours_au AFTER UPDATE OF {REQUEST_COLUMNS} ON requests "
        f"BEGIN {request('old', -1)}; {request('new', 1)}; END",
        *_backfill("sqlite"),
    ]


def _postgres_forward() -> list[str]:
    """Statement-level triggers over the transition tables, as for spend_days: one grouped upsert per table and
    statement. answer_hours and latency_hours need the response alone; spend_hours its request too."""
    def response(sign: int, rows: str) -> str:
        return "; ".join([ANSWERS.grouped_add("postgresql", sign, f"{rows} p"),
                          LATENCY.grouped_add("postgresql", sign, f"{rows} p"),
                          SPEND.grouped_add("postgresql", sign, f"{rows} p JOIN requests q ON q.id = p.request_id")])

    def request(sign: int, rows: str) -> str:
        return SPEND.grouped_add("postgresql", sign, f"responses p JOIN {rows} q ON q.id = p.request_id")

    return [
        f"""CREATE FUNCTION log_hours_on_response() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP <> 'INSERT' THEN {response(-1, "old_rows")}; END IF;
            IF TG_OP <> 'DELETE' THEN {response(1, "new_rows")}; END IF;
            RETURN NULL;
        END $$""",
        f"""CREATE FUNCTION log_hours_on_request() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {request(-1, "old_rows")}; {request(1, "new_rows")};
            RETURN NULL;
        END $$""",
        *(f"""CREATE TRIGGER responses_hours_{event[:3].lower()} AFTER {event} ON responses REFERENCING {tables}
            FOR EACH STATEMENT EXECUTE FUNCTION log_hours_on_response()"""
          for event, tables in (("INSERT", "NEW TABLE AS new_rows"), ("DELETE", "OLD TABLE AS old_rows"),
                                ("UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"))),
        """CREATE TRIGGER requests_hours_upd AFTER UPDATE ON requests
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION log_hours_on_request()""",
        *_backfill("postgresql"),
    ]


SQLITE_BACKWARD = [f"DROP TRIGGER IF EXISTS {t}" for t in (
    "responses_hours_ai", "responses_hours_ad", "responses_hours_au", "requests_hours_au")]
POSTGRES_BACKWARD = [
    *(f"DROP TRIGGER IF EXISTS responses_hours_{event} ON responses" for event in ("ins", "del", "upd")),
    "DROP TRIGGER IF EXISTS requests_hours_upd ON requests",
    "DROP FUNCTION IF EXISTS log_hours_on_response()",
    "DROP FUNCTION IF EXISTS log_hours_on_request()",
]


def _sums(*names: str) -> list[tuple[str, models.BigIntegerField]]:
    return [(n, models.BigIntegerField(default=0)) for n in names]


ID = ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID"))


class Migration(migrations.Migration):
    dependencies = [("logs", "0011_token_seconds")]

    operations = [
        migrations.CreateModel(
            name="SpendHour",
            fields=[ID, ("hour", models.DateTimeField()), ("model", models.CharField(max_length=255)),
                    ("key", models.CharField(max_length=160)), ("end_user", models.CharField(max_length=255)),
                    *_sums(*SPEND_SUMS)],
            options={"db_table": "spend_hours", "constraints": [models.UniqueConstraint(
                fields=("hour", "model", "key", "end_user"), name="spend_hours_group_uniq")]},
        ),
        migrations.CreateModel(
            name="AnswerHour",
            fields=[ID, ("hour", models.DateTimeField()), ("model", models.CharField(max_length=255)),
                    *_sums(*ANSWERS.sums)],
            options={"db_table": "answer_hours", "constraints": [models.UniqueConstraint(
                fields=("hour", "model"), name="answer_hours_group_uniq")]},
        ),
        migrations.CreateModel(
            name="LatencyHour",
            fields=[ID, ("hour", models.DateTimeField()), ("metric", models.SmallIntegerField()),
                    ("bin", models.IntegerField()), ("answers", models.BigIntegerField(default=0))],
            options={"db_table": "latency_hours", "constraints": [models.UniqueConstraint(
                fields=("hour", "metric", "bin"), name="latency_hours_bin_uniq")]},
        ),
        vendor_sql({"sqlite": _sqlite_forward(), "postgresql": _postgres_forward()},
                   {"sqlite": SQLITE_BACKWARD, "postgresql": POSTGRES_BACKWARD}),
    ]
