"""The log browser at volume: every list filter, search and page timed on N exchanges, SQLite and PostgreSQL.

    python -m bench.admin_volume [--n 1000000] [--db sqlite,postgresql] [--runs 3] [--dir DIR]
                                 [--pg-name NAME] [--seed-only]

For each database: a fresh SQLite file under DIR (default: a temporary folder) or a fresh PostgreSQL
database (postgres://postgres@127.0.0.1:5432/gw_volume_<n>), migrated, then seeded: BASE exchanges
from logs/seed.py (realistic variety), copied by INSERT ... SELECT with new ids and times shifted
a little until there are N (Python would need ~25 minutes per million here), plus a few rare rows
(a body word and an answering model that appear in RARE exchanges only). On PostgreSQL all copies
go in at once with the indexes, keys and triggers set aside and rebuilt after (see _pg_copies),
which is what makes 10 million rows possible in about an hour here. With --dir and an already
seeded file or database, seeding is skipped (new migrations are applied to it), so each database is
seeded once: `--seed-only` seeds and stops, later runs with the same --dir (and --pg-name) time.
Then every page is fetched through Django's test Client as a logged-in superuser: one warm-up,
then --runs timed fetches; the table shows the median in milliseconds. Each database runs in its own process (settings are read once).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE = 20000
RARE = 5
RARE_WORD = "quetzalcoatl"
NO_MATCH_WORD = "xylophonist"
RARE_MODEL = "gpt-4o-rare-snapshot"
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def _pages(session: str, exchange: str, day) -> list[tuple[str, str]]:
    """(name, URL) of everything timed."""
    lst = "/admin/logs/request/"
    date = f"created_at__year={day.year}&created_at__month={day.month}&created_at__day={day.day}"
    return [
        ("list, default page", lst),
        ("list, page 50", f"{lst}?p=50"),
        ("filter status=error", f"{lst}?status=error"),
        ("filter status=5xx", f"{lst}?status=5xx"),
        ("filter status=interrupted (rare)", f"{lst}?status=interrupted"),
        ("filter status=pending (rare)", f"{lst}?status=pending"),
        ("filter model=gpt-4.1", f"{lst}?model=gpt-4.1"),
        ("filter model=a,b", f"{lst}?model=gpt-4.1,o4-mini"),
        ("filter provider=openai", f"{lst}?provider=openai"),
        ("filter answered_by=gpt-4o", f"{lst}?answered_by=gpt-4o"),
        (f"filter answered_by (rare, {RARE} rows)", f"{lst}?answered_by={RARE_MODEL}"),
        ("filter user", f"{lst}?user=alice@example.com"),
        ("filter session", f"{lst}?session={session}"),
        ("filter meta=feature=search", f"{lst}?meta=feature=search"),
        ("filter cost=known", f"{lst}?cost=known"),
        ("filter cost=unknown", f"{lst}?cost=unknown"),
        ("filter streamed=yes", f"{lst}?streamed=yes"),
        ("filter streamed=no", f"{lst}?streamed=no"),
        ("filter files=no", f"{lst}?files=no"),
        ("filter key", f"{lst}?key=000000000003"),
        ("filter gateway_key", f"{lst}?gateway_key=team-a%20(fp%205f1d0c3e9a21)"),
        ("time range 15m", f"{lst}?since=15m"),
        ("time range 1h", f"{lst}?since=1h"),
        ("time range 24h", f"{lst}?since=24h"),
        ("time range 7d", f"{lst}?since=7d"),
        ("date drill-down (a day)", f"{lst}?{date}"),
        ("status=error & model & 24h", f"{lst}?status=error&model=gpt-4.1&since=24h"),
        (f"search, no match ({NO_MATCH_WORD})", f"{lst}?q={NO_MATCH_WORD}"),
        (f"search, rare word ({RARE} rows)", f"{lst}?q={RARE_WORD}"),
        ("search, common word (paris)", f"{lst}?q=paris"),
        ("search, model name (gpt-4.1)", f"{lst}?q=gpt-4.1"),
        ("search, no match + 24h", f"{lst}?q={NO_MATCH_WORD}&since=24h"),
        ("exchange page", f"{lst}{exchange}/change/"),
        ("session page", f"{lst}session/?id={session}"),
        ("dashboard (24h)", f"{lst}dashboard/"),
        ("dashboard (7d)", f"{lst}dashboard/?window=7d"),
        ("spend (7d)", f"{lst}spend/"),
        ("spend (30d)", f"{lst}spend/?range=30d"),
    ]


# --- the child process: one database


def _copy_sql(vendor: str, table: str, columns: list[str], k: int, shift_ms: int) -> str:
    """INSERT ... SELECT copying the base rows as copy number k: new ids (hex digits 21-24 hold k), times shifted."""
    def new_id(col: str) -> str:
        if vendor == "sqlite":  # UUIDs are 32 hex digits
            return f"substr({col}, 1, 20) || printf('%04x', {k}) || substr({col}, 25, 8)"
        return _copy_id(col, str(k))

    def shifted(col: str) -> str:
        if vendor == "sqlite":
            return f"strftime('%Y-%m-%d %H:%M:%f', {col}, '-{shift_ms / 1000:.3f} seconds')"
        return f"{col} - interval '{shift_ms} milliseconds'"

    exprs = [new_id(c) if c in ("id", "request_id") else shifted(c) if c == "created_at" else c for c in columns]
    cols = ", ".join(columns)
    return f"INSERT INTO {table} ({cols}) SELECT {', '.join(exprs)} FROM {table} WHERE {_base_where(vendor)}"


def _copy_id(col: str, k: str) -> str:
    """PostgreSQL: the UUID in `col` with hex digits 21-24 set to copy number `k` (an SQL expression)."""
    hexed = f"replace({col}::text, '-', '')"
    return f"(substr({hexed}, 1, 20) || lpad(to_hex({k}), 4, '0') || substr({hexed}, 25, 8))::uuid"


def _base_where(vendor: str) -> str:
    """The base rows: _seed marks them with digits 21-24 of their id set to bbbb."""
    return "substr(id, 21, 4) = 'bbbb'" if vendor == "sqlite" else "substr(replace(id::text, '-', ''), 21, 4) = 'bbbb'"


def _seed(n: int, progress) -> float:
    """Fill the log with n exchanges (see the module's docstring); returns seconds."""
    from django.db import connection, transaction

    from logs.models import Request, Response
    from logs.seed import exchanges_seed

    started = time.monotonic()
    base = min(n, BASE)
    exchanges_seed(base, days=30.0, batch=5000, files=False, seed=1)
    vendor = connection.vendor
    with connection.cursor() as cur, transaction.atomic():
        # Mark the base rows' ids (digits 21-24 := bbbb) so copies can select them and never collide.
        for table, cols in (("requests", ["id"]), ("responses", ["id", "request_id"])):
            for col in cols:
                if vendor == "sqlite":
                    cur.execute(f"UPDATE {table} SET {col} = substr({col}, 1, 20) || 'bbbb' || substr({col}, 25, 8)")
                else:
                    cur.execute(f"UPDATE {table} SET {col} = (substr(replace({col}::text, '-', ''), 1, 20) || 'bbbb' "
                                f"|| substr(replace({col}::text, '-', ''), 25, 8))::uuid")
    progress(base)
    req_cols = [f.column for f in Request._meta.concrete_fields]
    resp_cols = [f.column for f in Response._meta.concrete_fields]
    span_ms = int(30 * 86400 * 1000 / base)  # time between two base rows
    copies = -(-n // base) - 1
    if vendor == "postgresql" and copies:
        _pg_copies({"requests": req_cols, "responses": resp_cols}, copies, span_ms)
        progress(base * (copies + 1))
    for k in range(1, copies + 1) if vendor == "sqlite" else ():
        shift = span_ms * k // (copies + 1)
        with connection.cursor() as cur, transaction.atomic():
            cur.execute(_copy_sql(vendor, "requests", req_cols, k, shift))
            cur.execute(_copy_sql(vendor, "responses", resp_cols, k, shift))
        progress(base * (k + 1))
    _rare_rows()
    if vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")  # what autovacuum would have done on a log this size
    return time.monotonic() - started


def _pg_copies(columns: dict[str, list[str]], copies: int, span_ms: int) -> None:
    """PostgreSQL: all copies in one INSERT ... SELECT per table, in time order, with the tables' indexes,
    constraints and triggers set aside and rebuilt afterwards (sorted index builds instead of a dozen
    indexes kept row by row), then the trigger-kept tables (requests_pending, spend_days, the hour rollups)
    filled by their migrations' own backfills. The result is what the copy loop gives, built some times faster."""
    import importlib

    from django.db import connection

    pending = importlib.import_module("logs.migrations.0009_requests_pending").BACKFILL
    spend = importlib.import_module("logs.migrations.0010_spend_days")._backfill("postgresql")
    hours = importlib.import_module("logs.migrations.0012_hour_rollups")._backfill("postgresql")
    tables = "'requests'::regclass, 'responses'::regclass"
    with connection.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("SET synchronous_commit = off")
        # Foreign keys first (they need the keys they point to), then primary and unique keys.
        cur.execute(f"SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    f"WHERE contype IN ('f', 'p', 'u') AND (conrelid IN ({tables}) OR confrelid IN ({tables})) "
                    f"ORDER BY contype = 'f' DESC")
        constraints = cur.fetchall()
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('requests', 'responses') "
                    "AND indexname NOT IN (SELECT conname FROM pg_constraint)")
        indexes = cur.fetchall()
        for table, name, _ in constraints:
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in indexes:
            cur.execute(f'DROP INDEX "{name}"')
        cur.execute("SET session_replication_role = replica")  # no triggers: their tables are refilled below
        for table, cols in columns.items():
            t0 = time.monotonic()
            # Meant to lay the heap out in time order (each base row followed by its copies), but
            # PostgreSQL plans it as one pass over the base rows per copy (created_at's correlation
            # came out ~0 at 10M): the heap holds the month once per copy, as the copy loop lays it
            # out. A live log's heap is in time order.
            exprs = [_copy_id(c, "k") if c in ("id", "request_id") else
                     f"b.{c} - (k * {span_ms} / {copies + 1}) * interval '1 millisecond'" if c == "created_at"
                     else f"b.{c}" for c in cols]
            cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} "
                        f"FROM (SELECT * FROM {table} WHERE {_base_where('postgresql')} ORDER BY created_at) b "
                        f"CROSS JOIN LATERAL generate_series(1, %s) AS k", [copies])
            print(f"  {table}: {cur.rowcount} rows copied in {time.monotonic() - t0:.0f} s", file=sys.stderr,
                  flush=True)
        cur.execute("SET session_replication_role = DEFAULT")
    # The indexes two at a time (one per core; a GIN build is single-threaded), then the rest in order.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_pg_timed, [d for _, d in indexes]))
    for statement in ([f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in reversed(constraints)]
                      + ["TRUNCATE requests_pending, spend_days, spend_hours, answer_hours, latency_hours", pending,
                         spend, *hours]):
        _pg_timed(statement)


def _pg_timed(statement: str) -> None:
    """Run one statement on this thread's connection, printing its time."""
    from django.db import connection

    t0 = time.monotonic()
    with connection.cursor() as cur:
        cur.execute("SET maintenance_work_mem = '2GB'")  # each of the two builds at a time may use it all
        cur.execute(statement)
    print(f"  {statement[:70]}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)


def _rare_rows() -> None:
    """RARE exchanges holding RARE_WORD in their request body, answered by RARE_MODEL, spread over the month."""
    from datetime import datetime, timedelta, timezone

    from logs.ids import uuid7
    from logs.models import Request, Response

    now = datetime.now(timezone.utc)
    for i in range(RARE):
        when = now - timedelta(days=1 + 6 * i, minutes=7)
        body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": f"draw a {RARE_WORD} please"}]})
        req = Request.objects.create(id=uuid7(when.timestamp()), provider="openai", endpoint="/v1/chat/completions",
                                     method="POST", headers=[], body=body, body_size=len(body), model="gpt-4o",
                                     created_at=when)
        Response.objects.create(request=req, status_code=200, outcome="completed", body="{}", model=RARE_MODEL,
                                created_at=when + timedelta(milliseconds=300), duration_ms=300.0)


def child(n: int, runs: int, skip: list[str], seed_only: bool) -> None:
    """Migrate, seed when empty, time every page; print one JSON line."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from logs.models import Request

    call_command("migrate", verbosity=0)
    seed_s, rows = None, Request.objects.order_by().values("pk")[:1].exists()
    if not rows:
        seed_s = _seed(n, lambda done: print(f"  seeded {done}", file=sys.stderr, flush=True))
    if seed_only:
        print(json.dumps({"seed_s": seed_s, "rows": Request.objects.count(), "times": {}}))
        return
    user = get_user_model().objects.filter(username="bench").first() or \
        get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-volume")
    client = Client()
    client.force_login(user)
    session = Request.objects.filter(session_id__isnull=False).order_by("-created_at").values_list(
        "session_id", flat=True).first()
    mid = Request.objects.order_by("-created_at").values_list("pk", "created_at")[n // 2: n // 2 + 1].get()
    times: dict[str, list[float]] = {}
    for name, url in _pages(session, mid[0].hex, mid[1]):
        if any(word in name for word in skip):
            continue
        got = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            r = client.get(url)
            ms = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise SystemExit(f"{name}: {url} answered {r.status_code}")
            if i:
                got.append(ms)
        times[name] = got
        print(f"  {name}: {statistics.median(got):.0f} ms", file=sys.stderr, flush=True)
    from logs.selectors import answer_model_q, exchange_list, search_q

    # The same questions without the page around them: the filter or search query alone (its 101 rows).
    for name, make in ((f"query only: search {NO_MATCH_WORD}", lambda: search_q(NO_MATCH_WORD)),
                       (f"query only: search {RARE_WORD}", lambda: search_q(RARE_WORD)),
                       ("query only: answered_by rare", lambda: answer_model_q(RARE_MODEL)),
                       ("query only: answered_by gpt-4o", lambda: answer_model_q("gpt-4o"))):
        got = []
        for i in range(runs + 1):
            t0 = time.perf_counter()
            list(exchange_list(Request.objects.filter(make())).order_by("-created_at")[:101])
            if i:
                got.append((time.perf_counter() - t0) * 1000)
        times[name] = got
        print(f"  {name}: {statistics.median(got):.1f} ms", file=sys.stderr, flush=True)
    print(json.dumps({"seed_s": seed_s, "rows": Request.objects.count(), "times": times}))


# --- the parent: fresh databases, one child each, the table


def _pg_fresh(name: str, keep: bool) -> None:
    """Create the PostgreSQL database (drop it first unless it is kept for reuse)."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and keep:
            return
        if exists:
            conn.execute(f'DROP DATABASE "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="keep the SQLite file here and the PostgreSQL database, and reuse them")
    parser.add_argument("--pg-name", default=None, help="the PostgreSQL database's name (default gw_volume_<n>)")
    parser.add_argument("--seed-only", action="store_true", help="seed (when empty) and stop; time nothing")
    parser.add_argument("--skip", default="", help="leave out pages whose name holds one of these (comma-separated)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.runs, [w for w in args.skip.split(",") if w], args.seed_only)
    work = Path(args.dir or tempfile.mkdtemp(prefix="admin_volume_"))
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for db in args.db.split(","):
        if db == "sqlite":
            url = f"sqlite:///{work / f'volume_{args.n}.db'}"
        else:
            name = args.pg_name or f"gw_volume_{args.n}"
            _pg_fresh(name, keep=args.dir is not None)
            url = f"postgres://postgres@127.0.0.1:5432/{name}"
        print(f"{db}: {url}", file=sys.stderr, flush=True)
        env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(work / "data")}
        out = subprocess.run([sys.executable, "-m", "bench.admin_volume", "--child", "--n", str(args.n),
                              "--runs", str(args.runs), "--skip", args.skip] + ["--seed-only"] * args.seed_only,
                             env=env, stdout=subprocess.PIPE, text=True, check=True)
        results[db] = json.loads(out.stdout.strip().splitlines()[-1])
    dbs = list(results)
    print(f"\n{args.n:,} exchanges requested; rows: " + ", ".join(f"{d} {results[d]['rows']:,}" for d in dbs)
          + "; seeding: " + ", ".join(f"{d} {results[d]['seed_s'] or 0:.0f} s" for d in dbs))
    print(f"median of {args.runs} runs after one warm-up, ms\n")
    print("| page | " + " | ".join(dbs) + " |")
    print("| --- | " + " | ".join("---:" for _ in dbs) + " |")
    for name in results[dbs[0]]["times"]:
        cells = [results[d]["times"].get(name) for d in dbs]
        print(f"| {name} | " + " | ".join(f"{statistics.median(c):.1f}" if c else "-" for c in cells) + " |")


if __name__ == "__main__":
    main()
