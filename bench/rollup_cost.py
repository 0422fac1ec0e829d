"""What the log's trigger-kept rollups cost the ingest: microseconds per exchange written, with and without a migration.

    python -m bench.rollup_cost [--db sqlite,postgresql] [--before 0011] [--rounds 6] [--batches 40]

For each database: two fresh ones, `before` migrated to logs BEFORE and `after` to the latest
migration. Then ROUNDS rounds, each writing BATCHES batches of 256 exchanges (realistic rows from
logs/seed.py: models, keys, users, tokens, costs, timings) into each database in turn, in a child
process of its own, the order alternating from round to round. A batch is what the ingest writes:
the requests, then the responses, with rows_insert in one transaction. Prints µs per exchange
for every round and the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 256
PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"


def child(batches: int, migration: str | None, seed: int) -> None:
    """Migrate (first run only: to `migration`), write the batches, print µs per exchange."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    import random
    from datetime import datetime, timedelta, timezone

    from django.core.management import call_command
    from django.db import transaction

    from logs.models import Request, Response
    from logs.pipeline.bulk import rows_insert
    from logs.seed import _Seeder

    if migration is not None:
        call_command("migrate", *(["logs", migration] if migration != "latest" else []), verbosity=0)
        return
    seeder = _Seeder(random.Random(seed), files=False)
    now = datetime.now(timezone.utc)
    made = []
    for b in range(batches):
        rows = [seeder.exchange(now - timedelta(seconds=(batches - b) * 0.5 - i / 1000)) for i in range(BATCH)]
        made.append(([r for r, _, _ in rows], [p for _, p, _ in rows if p is not None]))
    elapsed = 0.0
    for requests, responses in made:
        t0 = time.perf_counter()
        with transaction.atomic():
            rows_insert(Request, requests)
            rows_insert(Response, responses)
        elapsed += time.perf_counter() - t0
    print(json.dumps({"us_per_exchange": elapsed / (batches * BATCH) * 1e6}))


def _run(url: str, work: Path, *args: str) -> dict | None:
    env = {**os.environ, "DATABASE_URL": url, "DATA_DIR": str(work / "data")}
    out = subprocess.run([sys.executable, "-m", "bench.rollup_cost", "--child", *args], env=env,
                         stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    return json.loads(out.splitlines()[-1]) if out else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--before", default="0011")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--migrate", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.batches, args.migrate, args.seed)
    import psycopg

    work = Path(tempfile.mkdtemp(prefix="rollup_cost_"))
    for db in args.db.split(","):
        urls = {}
        for side in ("before", "after"):
            if db == "sqlite":
                urls[side] = f"sqlite:///{work / f'{side}.db'}"
            else:
                name = f"rollup_cost_{side}"
                with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    conn.execute(f'CREATE DATABASE "{name}"')
                urls[side] = f"postgres://postgres@127.0.0.1:5432/{name}"
            _run(urls[side], work, "--migrate", args.before if side == "before" else "latest")
        got: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(args.rounds):
            for side in ("before", "after") if r % 2 == 0 else ("after", "before"):
                us = _run(urls[side], work, "--batches", str(args.batches), "--seed", str(r))["us_per_exchange"]
                got[side].append(us)
                print(f"{db} round {r + 1} {side}: {us:.1f} µs/exchange", file=sys.stderr, flush=True)
        med = {side: statistics.median(v) for side, v in got.items()}
        print(f"{db}: before (logs {args.before}) " + ", ".join(f"{v:.0f}" for v in got["before"])
              + f" (median {med['before']:.0f}); after " + ", ".join(f"{v:.0f}" for v in got["after"])
              + f" (median {med['after']:.0f}) µs per exchange; after/before {med['after'] / med['before']:.2f}")
        if db != "sqlite":
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                for side in ("before", "after"):
                    conn.execute(f'DROP DATABASE IF EXISTS "rollup_cost_{side}"')


if __name__ == "__main__":
    main()
