"""What gateway keys with limits cost: python bench/keys.py [--cache-url redis://127.0.0.1:6379/0] ["chat c1" ...]

Starts the mock upstream and two gateways of this checkout (each on a fresh SQLite database, 1
worker): one without keys, one where every request presents a gateway key with all three limits
on (requests and tokens per minute, a monthly budget), set high enough never to refuse, so each
request pays the whole check: key lookup, budget and tokens read from the log (cached), a
sliding-window take in the limit store, the RateLimit fields. Drives them with wrk in
alternating rounds (open first in odd rounds, keyed first in even ones) and prints the median of
the paired ratios (keyed over open), with the issue's targets: chat c64 at least 0.9x, chat c1
at least 0.85x.

The load generator and the mock run on the first core, each gateway (its worker and ingest
process) on the others (servers.cores_split). On a machine shared with other work, throughput moves a lot from round to round; the CPU time
each gateway (its worker and ingest process) spends per request moves much less, so it is
printed too, as open over keyed (the throughput ratio a CPU-bound gateway would have).
"""

import argparse
import dataclasses
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.load import SCENARIOS, wrk_require, wrk_run  # noqa: E402

ROUNDS = 5
TARGETS = {"chat c64": 0.9, "chat c1": 0.85}


LIMITS = {"rpm": ["--rpm", "100000000"], "tpm": ["--tpm", "2000000000"], "budget": ["--budget-usd", "1000000"]}


def key_create(env: dict[str, str], limits: tuple[str, ...] = tuple(LIMITS)) -> str:
    """A key with the given limits on (all by default), far above what the benchmark reaches; its secret."""
    args = [a for name in limits for a in LIMITS[name]]
    out = subprocess.run([servers.PYTHON, "manage.py", "gateway_key", "create", "bench", *args], cwd=servers.ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"gateway_key create failed: {out.stderr}")
    out = out.stdout
    return out.strip().splitlines()[-1]


def measured(server, sc, duration: float) -> tuple[dict, float, float]:
    """One wrk round and the gateway's CPU seconds per request in it: its worker's, its ingest process's.

    Each round starts and ends with the ingest process quiet (servers.ingest_settle), so the
    records of one round are written in it, not during the next one (the other gateway's).
    """
    servers.ingest_settle([server.pid])
    worker, ingest = servers.gateway_cpu(server.pid)
    run = wrk_run(server.url, sc, duration)
    servers.ingest_settle([server.pid])  # its records written: counted in this round, not the next one
    worker_after, ingest_after = servers.gateway_cpu(server.pid)
    n = max(run["requests"], 1)
    return run, (worker_after - worker) / n, (ingest_after - ingest) / n


def main() -> None:
    """Parse, start both gateways, alternate rounds, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=["chat c1", "chat c64"])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--cache-url", default="", help="the limit store (default: the database)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--limits", default="rpm,tpm,budget", help="which limits the key has (default: all)")
    args = parser.parse_args()
    wrk_require()
    split = servers.cores_split()  # wrk and the mock on one core, the gateways on the other(s)
    mock = servers.mock_start()
    running, dirs = [mock], []
    try:
        gateways, secret = {}, ""
        for label in ("open", "keyed"):
            data_dir, env = servers.gateway_prepare(mock.url)
            if args.cache_url:
                env["CACHE_URL"] = args.cache_url
            dirs.append((data_dir, env))
            if label == "keyed":
                secret = key_create(env, tuple(n for n in args.limits.split(",") if n))
            gateways[label] = servers.gateway_start(env, cpus=split[1] if split else None)
            running.append(gateways[label])
        met = []
        for name in args.scenarios:
            sc = next(s for s in SCENARIOS if s.name == name)
            keyed = dataclasses.replace(sc, headers=(*sc.headers, f"X-Gateway-Key: {secret}"))
            wrk_run(gateways["open"].url, sc, 1)  # warm-up
            wrk_run(gateways["keyed"].url, keyed, 1)
            open_rps, keyed_rps, open_cpu, keyed_cpu = [], [], [], []
            split_cpu = {"open": [0.0, 0.0, 0], "keyed": [0.0, 0.0, 0]}  # worker s, ingest s, requests
            for n in range(args.rounds):
                # Which goes first alternates: the first one's log rows are still being written
                # while the second runs, and that should not weigh on the same side every round.
                for label in ("open", "keyed") if n % 2 == 0 else ("keyed", "open"):
                    run, worker, ingest = measured(gateways[label], keyed if label == "keyed" else sc, args.duration)
                    cpu = worker + ingest
                    total = split_cpu[label]
                    total[0] += worker * run["requests"]
                    total[1] += ingest * run["requests"]
                    total[2] += run["requests"]
                    if run["errors"] and label == "keyed":
                        raise SystemExit(f"{name}: the keyed gateway answered {run['errors']} errors (a limit hit?)")
                    (keyed_rps if label == "keyed" else open_rps).append(run["rps"])
                    (keyed_cpu if label == "keyed" else open_cpu).append(cpu)
            ratio = statistics.median(k / o for o, k in zip(open_rps, keyed_rps))
            cpu_ratio = statistics.median(open_cpu) / statistics.median(keyed_cpu)
            target = TARGETS.get(name)
            verdict = "" if target is None else (" met" if ratio >= target else " NOT met") + f" (target {target}x)"
            met.append(verdict)
            print(f"{name}: open {[round(x) for x in open_rps]} req/s, keyed {[round(x) for x in keyed_rps]} req/s; "
                  f"keyed/open median {ratio:.2f}x{verdict}; CPU per request open "
                  f"{statistics.median(open_cpu) * 1e6:.0f} us, keyed {statistics.median(keyed_cpu) * 1e6:.0f} us: "
                  f"open/keyed {cpu_ratio:.2f}x; over all rounds, worker + ingest: "
                  + ", ".join(f"{label} {w / max(n, 1) * 1e6:.0f} + {i / max(n, 1) * 1e6:.0f} us"
                              for label, (w, i, n) in split_cpu.items()))
    finally:
        servers.all_stop(running, dirs)


if __name__ == "__main__":
    main()
