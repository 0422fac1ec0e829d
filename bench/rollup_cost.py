"""What a migration's triggers cost the ingest: microseconds per exchange written, with and without them.

    python -m bench.rollup_cost [--migration 0012|0014] [--db sqlite,postgresql] [--rounds 10] [--batches 10]

0012 (the default): its hour rollups' triggers against none. 0014: the word index reading JSON
bodies decoded and stream results (its triggers; on PostgreSQL its index expressions) against
0008's raw-text ones.

For each database a fresh one (a temporary SQLite file; PostgreSQL `rollup_cost`, dropped after),
migrated to the latest migration. Then ROUNDS rounds, each writing BATCHES batches of 256
exchanges (realistic rows from logs/seed.py: models, keys, users, tokens, costs, timings) twice:
once with 0012's triggers and once with them dropped (the migration's own statements, without its
backfill), the order alternating from round to round, in one process, so both sides write to the
same database of the same size. A batch is what the ingest writes: the requests, then the
responses, with rows_insert in one transaction. Prints µs per exchange for every round, the
medians and the median of the rounds' with/without ratios.
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 256
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
MIGRATIONS = {"0012": "logs.migrations.0012_hour_rollups", "0014": "logs.migrations.0014_search_decoded_text"}


def _switches(name: str, vendor: str) -> tuple[list[str], list[str]]:
    """The statements that put a migration's triggers in place, and those that take them out (no backfill)."""
    migration = importlib.import_module(MIGRATIONS[name])
    if name == "0012":
        backfill = set(migration._backfill(vendor))
        forward = {"sqlite": migration._sqlite_forward, "postgresql": migration._postgres_forward}[vendor]()
        return ([s for s in forward if s not in backfill],
                {"sqlite": migration.SQLITE_BACKWARD, "postgresql": migration.POSTGRES_BACKWARD}[vendor])
    if vendor == "sqlite":  # the triggers each way, without rebuilding the index
        def keep(statements: list[str]) -> list[str]:
            return [s for s in statements if not s.lstrip().startswith(("DELETE FROM", "INSERT INTO"))]
        return keep(migration.SQLITE_FORWARD), keep(migration.SQLITE_BACKWARD)
    return migration.POSTGRES_FORWARD, [s for s in migration.POSTGRES_BACKWARD if "DROP FUNCTION" not in s]


def child(name: str, rounds: int, batches: int) -> None:
    """Migrate, then write the rounds, printing each and the summary."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    import random
    from datetime import datetime, timedelta, timezone

    from django.core.management import call_command
    from django.db import connection, transaction

    from logs.models import Request, Response
    from logs.pipeline.bulk import rows_insert
    from logs.seed import _Seeder

    call_command("migrate", verbosity=0)
    vendor = connection.vendor
    triggers_on, triggers_off = _switches(name, vendor)

    def execute(statements: list[str]) -> None:
        with connection.cursor() as cur:
            for sql in statements:
                cur.execute(sql)

    seeder = _Seeder(random.Random(1), files=False)
    got: dict[str, list[float]] = {"with": [], "without": []}
    on = True
    for r in range(rounds):
        for side in ("with", "without") if r % 2 == 0 else ("without", "with"):
            if (side == "with") != on:
                execute(triggers_on if side == "with" else triggers_off)
                on = side == "with"
            now = datetime.now(timezone.utc)
            made = []
            for b in range(batches):
                rows = [seeder.exchange(now - timedelta(seconds=(batches - b) * 0.5 - i / 1000)) for i in range(BATCH)]
                made.append(([q for q, _, _ in rows], [p for _, p, _ in rows if p is not None]))
            elapsed = 0.0
            for requests, responses in made:
                t0 = time.perf_counter()
                with transaction.atomic():
                    rows_insert(Request, requests)
                    rows_insert(Response, responses)
                elapsed += time.perf_counter() - t0
            got[side].append(elapsed / (batches * BATCH) * 1e6)
            print(f"{vendor} round {r + 1} {side} triggers: {got[side][-1]:.1f} µs/exchange", file=sys.stderr, flush=True)
    if not on:
        execute(triggers_on)
    ratios = [w / o for w, o in zip(got["with"], got["without"])]
    print(f"{vendor}: with {name}'s triggers " + ", ".join(f"{v:.0f}" for v in got["with"])
          + f" (median {statistics.median(got['with']):.0f}); without " + ", ".join(f"{v:.0f}" for v in got["without"])
          + f" (median {statistics.median(got['without']):.0f}) µs per exchange; with/without per round "
          + ", ".join(f"{x:.2f}" for x in ratios) + f" (median {statistics.median(ratios):.2f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--migration", choices=sorted(MIGRATIONS), default="0012")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.migration, args.rounds, args.batches)
    import psycopg

    work = Path(tempfile.mkdtemp(prefix="rollup_cost_"))
    for db in args.db.split(","):
        if db == "sqlite":
            url = f"sqlite:///{work / 'rollup_cost.db'}"
        else:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "rollup_cost"')
                conn.execute('CREATE DATABASE "rollup_cost"')
            url = "postgres://postgres@127.0.0.1:5432/rollup_cost"
        env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(work / "data")}
        subprocess.run([sys.executable, "-m", "bench.rollup_cost", "--child", "--migration", args.migration,
                        "--rounds", str(args.rounds), "--batches", str(args.batches)], env=env, check=True)
        if db != "sqlite":
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "rollup_cost"')


if __name__ == "__main__":
    main()
