"""prune_logs at volume on PostgreSQL: seed a day of exchanges, time its removal, and check that log
writes go on meanwhile (the slowest insert while the prune runs).

Seeds `--base` realistic exchanges with logs.seed over the last day (they stay), then copies them
`--copies` times in SQL into the day before (the day the prune removes), in time order as a live
log is written. Run against an empty, migrated PostgreSQL database:

  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/gw_bench DATA_DIR=/tmp/gw-bench
  python manage.py migrate && python -m bench.prune_volume --base 20000 --copies 50

With `--seeded --older-than DAYS` it seeds nothing and prunes an already seeded log (e.g. one of
bench.admin_volume, whose N exchanges span 30 days) of everything older than DAYS days.

Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import threading
import time
from datetime import datetime, timedelta, timezone

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from django.db.models import Count  # noqa: E402

from logs.models import Request, Response  # noqa: E402
from logs.retention import prune  # noqa: E402
from logs.seed import exchanges_seed  # noqa: E402


def _columns(table: str) -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                    "ORDER BY ordinal_position", [table])
        return [row[0] for row in cur.fetchall()]


def _copy_day_before(table: str, copies: int, ids: tuple[str, ...]) -> None:
    """Copy the table's rows `copies` times one day earlier, ids derived per copy, in time order."""
    cols = _columns(table)
    shifted = "created_at - interval '1 day' - k * interval '1 microsecond'"
    exprs = [f"md5({c}::text || k)::uuid" if c in ids else shifted if c == "created_at" else c for c in cols]
    with connection.cursor() as cur:
        cur.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(exprs)} "
                    f"FROM {table} CROSS JOIN generate_series(1, %s) AS k ORDER BY {shifted}", [copies])


def _dsn() -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(dbname=db["NAME"], user=db["USER"], password=db["PASSWORD"] or None,
                                          host=db["HOST"], port=db["PORT"] or None)


class InsertProbe(threading.Thread):
    """Inserts one exchange row every 20 ms on its own connection, timing each (what the ingest does)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.times: list[float] = []
        self.stop = threading.Event()
        cols = _columns("requests")
        exprs = ["gen_random_uuid()" if c == "id" else "now()" if c == "created_at" else c for c in cols]
        self.sql = (f"INSERT INTO requests ({', '.join(cols)}) SELECT {', '.join(exprs)} FROM requests "
                    f"ORDER BY created_at DESC LIMIT 1")  # a copy of the newest row (one index step)

    def run(self) -> None:
        with psycopg.connect(_dsn(), autocommit=True) as conn:
            while not self.stop.is_set():
                started = time.perf_counter()
                conn.execute(self.sql)
                self.times.append(time.perf_counter() - started)
                time.sleep(0.02)


def _sizes() -> dict[str, str]:
    with connection.cursor() as cur:
        cur.execute("SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
                    "WHERE relname IN ('requests', 'responses', 'requests_created_at_f98e29a1')")
        return dict(cur.fetchall())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=int, default=20000, help="exchanges seeded with logs.seed (the day kept)")
    parser.add_argument("--copies", type=int, default=50, help="copies of them in the day before (the day pruned)")
    parser.add_argument("--batch", type=int, default=1000, help="prune_logs --batch")
    parser.add_argument("--seeded", action="store_true", help="seed nothing: prune the log as it is")
    parser.add_argument("--older-than", type=float, default=1.0, help="prune exchanges older than this many days")
    args = parser.parse_args()
    assert connection.vendor == "postgresql", "run with DATABASE_URL=postgres://..."

    started = time.monotonic()
    if not args.seeded:
        exchanges_seed(args.base, days=0.99, batch=5000, files=False, seed=1)
        _copy_day_before("requests", args.copies, ("id",))
        _copy_day_before("responses", args.copies, ("id", "request_id"))
    with connection.cursor() as cur:
        if not args.seeded:
            cur.execute("VACUUM ANALYZE requests")
            cur.execute("VACUUM ANALYZE responses")
        cur.execute("SELECT count(*) FROM requests")
        total = cur.fetchone()[0]
    seeded_s = time.monotonic() - started
    sizes_before = _sizes()
    # The plans of the queries that walk the log by time (the prune's batch, the admin's first page).
    cutoff = datetime.now(timezone.utc) - timedelta(days=args.older_than)
    plans = {
        "prune_batch": Request.objects.filter(created_at__lt=cutoff).order_by("created_at")
        .values_list("pk", flat=True)[:args.batch].explain(),
        "admin_newest_page": Request.objects.order_by("-created_at")[:100].explain(),
        "last_day_by_outcome": Response.objects.filter(created_at__gte=cutoff).values("outcome")
        .annotate(n=Count("pk")).explain(),
    }

    probe = InsertProbe()
    probe.start()
    batch_s: list[float] = []
    last = [time.perf_counter()]

    def progress(_result) -> None:
        now = time.perf_counter()
        batch_s.append(now - last[0])
        last[0] = now

    started = time.perf_counter()
    result = prune(timedelta(days=args.older_than), batch=args.batch, progress=progress)
    prune_s = time.perf_counter() - started
    probe.stop.set()
    probe.join()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM requests")
        kept = cur.fetchone()[0]
    print(json.dumps({
        "exchanges_before": total, "seed_s": round(seeded_s, 1), "pruned": result.exchanges, "kept": kept,
        "prune_s": round(prune_s, 1), "exchanges_per_s": round(result.exchanges / prune_s),
        "batches": len(batch_s), "batch_ms_median": round(statistics.median(batch_s) * 1000, 1),
        "batch_ms_max": round(max(batch_s) * 1000, 1), "probe_inserts": len(probe.times),
        "probe_ms_median": round(statistics.median(probe.times) * 1000, 2),
        "probe_ms_max": round(max(probe.times) * 1000, 1), "sizes_before": sizes_before,
        "plans": {name: " | ".join(line.strip() for line in plan.splitlines()) for name, plan in plans.items()},
    }))


if __name__ == "__main__":
    main()
