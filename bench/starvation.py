"""Does the log keep up on a busy machine? python bench/starvation.py [OTHER_CHECKOUT] [--requests N] ...

Starts the mock upstream and a gateway as the README runs it (uvicorn, 1 worker, fresh SQLite),
saturates every core with busy-loop processes, then sends chat requests at a quiet rate (one
every --interval seconds) and measures, for each, how long after its answer its response row
is in the database (polled by a separate reader), over all requests and over those answered
after the first row was written (the ingest process, started by the first record, was up). Meanwhile the `sqlite3` command-line shell,
with its default settings (no busy timeout), counts the requests table in a loop, and every
`database is locked` it prints is counted. Prints p50/p99/max of the delay and the failures.
With OTHER_CHECKOUT (e.g. a `git worktree` of main), runs the same against that checkout first.
"""

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench import servers  # noqa: E402

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
BUSY_LOOP = "while True: pass"
GIVE_UP = 120.0  # seconds a row may take before it is counted as missing


def busy_start() -> list[subprocess.Popen]:
    """One busy-loop process per CPU, at normal priority (the 'other processes')."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(os.cpu_count() or 1)]


def _cli_reader(db: Path, stop: threading.Event, counts: dict[str, int]) -> None:
    """Loop the sqlite3 shell with its defaults on the gateway's database; count its refusals."""
    while not stop.is_set():
        out = subprocess.run(["sqlite3", str(db), "select count(*) from requests"], capture_output=True, text=True)
        counts["runs"] += 1
        if "database is locked" in out.stderr:
            counts["locked"] += 1
        elif out.returncode != 0:
            counts["other"] += 1
            counts["last_error"] = out.stderr.strip()[:200]
        time.sleep(0.05)


def _row_wait(db: Path, request_id: str, answered: float) -> float | None:
    """Seconds from the answer until the exchange's response row can be read (None: gave up)."""
    conn = sqlite3.connect(db, timeout=5.0)
    try:
        while time.monotonic() - answered < GIVE_UP:
            try:
                if conn.execute("select 1 from responses where request_id = ?", (request_id,)).fetchone():
                    return time.monotonic() - answered
            except sqlite3.OperationalError:
                pass  # the poller is not what is measured: the CLI reader counts refusals
            time.sleep(0.01)
        return None
    finally:
        conn.close()


def run(root: Path, label: str, requests: int, interval: float, idle_seconds: float) -> dict:
    """Measure one checkout's gateway on a saturated machine."""
    mock = servers.mock_start()
    data_dir, env = servers.gateway_prepare(mock.url, root=root)
    env["LOG_INGEST_IDLE_SECONDS"] = str(idle_seconds)
    gateway = servers.gateway_start(env, root=root)
    db = data_dir / "gateway.db"
    busy = busy_start()
    stop, counts = threading.Event(), {"runs": 0, "locked": 0, "other": 0}
    reader = threading.Thread(target=_cli_reader, args=(db, stop, counts), daemon=True)
    delays: list[float | None] = []
    answers: list[float] = []  # monotonic time each answer came
    waiters: list[threading.Thread] = []
    try:
        time.sleep(1.0)  # let the busy loops take the cores
        reader.start()
        with httpx.Client(timeout=60) as client:
            for _ in range(requests):
                started = time.monotonic()
                r = client.post(f"{gateway.url}/v1/chat/completions", json=CHAT,
                                headers={"Authorization": "Bearer sk-bench"})
                answered = time.monotonic()
                rid = r.headers["x-gateway-request-id"].replace("-", "")
                slot = len(delays)
                delays.append(None)
                answers.append(answered)

                def wait(slot: int = slot, rid: str = rid, answered: float = answered) -> None:
                    delays[slot] = _row_wait(db, rid, answered)

                t = threading.Thread(target=wait, daemon=True)
                t.start()
                waiters.append(t)
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
        for t in waiters:
            t.join(GIVE_UP + 5)
        time.sleep(idle_seconds + 3)  # the reader goes on while the ingest process retires
    finally:
        stop.set()
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
        reader.join(10)
        gateway.stop()
        mock.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    result = {"label": label, "requests": requests, "missing": delays.count(None), **_figures(delays)}
    # The first rows wait for the ingest process to start (it starts with the first record);
    # requests answered after the first row was in the database found it running.
    if delays[0] is not None:
        up = answers[0] + delays[0]
        result["after_start"] = _figures([d for d, a in zip(delays, answers) if a > up])
    result.update({"cli_runs": counts["runs"], "cli_locked": counts["locked"], "cli_other_errors": counts["other"]})
    if counts.get("last_error"):
        result["cli_last_error"] = counts["last_error"]
    return result


def _figures(delays: list[float | None]) -> dict:
    """p50, p99 and max of the delays seen, the five slowest, and the first request's."""
    seen = sorted(d for d in delays if d is not None)
    if not seen:
        return {"count": 0}
    q = statistics.quantiles(seen, n=100, method="inclusive") if len(seen) > 1 else seen * 99
    return {"count": len(seen), "p50_s": round(statistics.median(seen), 3), "p99_s": round(q[98], 3),
            "max_s": round(seen[-1], 3), "slowest_s": [round(d, 2) for d in seen[-5:]],
            "first_s": round(delays[0], 2) if delays[0] is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", nargs="?", help="another checkout to measure first (e.g. a worktree of main)")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between requests (0.5)")
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="LOG_INGEST_IDLE_SECONDS of the gateway (60, its default); an interval above it "
                             "makes the ingest process retire and start again between requests")
    args = parser.parse_args()
    runs = []
    if args.other:
        runs.append((Path(args.other).resolve(), f"other ({args.other})"))
    runs.append((servers.ROOT, "this checkout"))
    print(f"{os.cpu_count()} busy-loop processes, {args.requests} requests, one every {args.interval}s, "
          f"LOG_INGEST_IDLE_SECONDS={args.idle_seconds}", flush=True)
    for root, label in runs:
        print(json.dumps(run(root, label, args.requests, args.interval, args.idle_seconds)), flush=True)


if __name__ == "__main__":
    main()
