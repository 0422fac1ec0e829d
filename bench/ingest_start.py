"""How long a log-ingest process takes to start: python bench/ingest_start.py [OTHER_CHECKOUT] [--runs N] [--busy]

Starts the ingest process as a worker does (`python -m logs.pipeline.ingest`, the worker's
environment, its database named in GATEWAY_INGEST_DB_NAME) with one chat exchange's two journal
lines on its input, as the first request after a quiet spell hands them over, and measures until
it acks them (both rows are in the database): the wall time, its CPU time (from /proc) and its
RSS then. With OTHER_CHECKOUT (e.g. a `git worktree` of main), that checkout's ingest process is
started in turn with this one's, on the same migrated SQLite database. With --busy, one busy-loop
process per core runs meanwhile, as in bench/starvation.py. Prints the median and range of each.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.logprobe import exchange_lines  # noqa: E402
from bench.starvation import busy_start  # noqa: E402
from logs.pipeline.ingest import DB_NAME_ENV  # noqa: E402
from logs.pipeline.pipe import COMMAND  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    """A running process's CPU seconds (user + system) and resident MiB."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open(f"/proc/{pid}/status") as f:
        rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return (int(fields[11]) + int(fields[12])) / TICK, rss_kib / 1024


def start_once(root: Path, env: dict[str, str]) -> tuple[float, float, float]:
    """Start one ingest process with an exchange's lines: (seconds to the ack, CPU seconds, RSS MiB)."""
    started = time.monotonic()
    proc = subprocess.Popen(COMMAND, cwd=root, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        proc.stdin.write(b"".join(exchange_lines("ingest-start")))
        proc.stdin.flush()
        for answer in proc.stdout:
            if answer.startswith(b"A "):
                break
        else:
            raise RuntimeError(f"the ingest process of {root} exited without writing the exchange")
        acked = time.monotonic() - started
        cpu, rss = _cpu_and_rss(proc.pid)
    finally:
        proc.stdin.close()  # it exits once everything is written
        proc.wait(60)
    return acked, cpu, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", nargs="?", help="another checkout, started in turn with this one")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--busy", action="store_true", help="a busy-loop process on every core meanwhile")
    args = parser.parse_args()
    roots = ([Path(args.other).resolve()] if args.other else []) + [servers.ROOT]
    data_dir, env = servers.gateway_prepare("http://127.0.0.1:9")
    env[DB_NAME_ENV] = str(data_dir / "gateway.db")
    busy = busy_start() if args.busy else []
    results: dict[Path, list[tuple[float, float, float]]] = {root: [] for root in roots}
    try:
        time.sleep(1.0 if busy else 0.0)  # let the busy loops take the cores
        for _ in range(args.runs):
            for root in roots:
                results[root].append(start_once(root, env))
    finally:
        for p in busy:
            p.kill()
            p.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{args.runs} starts each{', a busy loop on each of ' + str(os.cpu_count()) + ' cores' if busy else ''}")
    for root, runs in results.items():
        print(root)
        for i, name in enumerate(("seconds to the ack", "CPU seconds to the ack", "RSS MiB at the ack")):
            values = [run[i] for run in runs]
            print(f"  {name:24s} median {statistics.median(values):.3f}  ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
