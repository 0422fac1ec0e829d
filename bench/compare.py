"""Two checkouts of the gateway side by side: python bench/compare.py OTHER_CHECKOUT ["chat c1" ...]

Starts the mock upstream, this checkout's gateway and the other one's (each on a fresh SQLite
database, 1 worker), and drives them with wrk in alternating 3 s rounds, so that whatever else
the machine does hits both alike. Prints each round and the median of the paired ratios
(this checkout over the other), and each gateway's CPU time per request (from /proc, Linux), which
a busy machine disturbs far less than throughput. Use it to measure a change: a `git worktree` of the commit
before it is the other checkout. `--this-env NAME=VALUE` (repeatable) sets a variable for this
checkout's gateway only: with `.` as the other checkout it measures a setting, e.g. one no-op
request hook: `python bench/compare.py . "chat c1" --this-env GATEWAY_HOOKS=bench.noop_hook.Noop`.
"""

import argparse
import dataclasses
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.load import SCENARIOS, wrk_require, wrk_run  # noqa: E402

ROUNDS = 5


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: a cost that the machine's other load barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Parse, start both gateways, alternate rounds, print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("scenarios", nargs="*", default=["chat c1", "chat c64", "stream c16"])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"paired rounds per scenario ({ROUNDS})")
    parser.add_argument("--this-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for this checkout's gateway only (repeatable)")
    parser.add_argument("--controls", action="store_true",
                        help="both gateways run the request path of issue 20: every request presents a gateway key"
                             " with rpm, tpm and a budget, one no-op hook, the cache asked to store each answer")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.this_env)
    wrk_require()
    split = servers.cores_split()  # wrk and the mock on one core, the gateways on the other(s)
    mock = servers.mock_start()
    running, dirs = [mock], []
    try:
        gateways, headers = {}, {}
        for label, root in (("other", args.other.resolve()), ("this", servers.ROOT)):
            data_dir, env = servers.gateway_prepare(mock.url, root=root)
            dirs.append((data_dir, env))
            headers[label] = ()
            if args.controls:
                from bench.keys import key_create

                env["GATEWAY_HOOKS"] = "bench.noop_hook.Noop"
                headers[label] = (f"X-Gateway-Key: {key_create(env)}", "X-Gateway-Cache: refresh=60")
            gateways[label] = servers.gateway_start({**env, **extra} if label == "this" else env, root=root,
                                                    cpus=split[1] if split else None)
            running.append(gateways[label])
        for name in args.scenarios:
            base = next(s for s in SCENARIOS if s.name == name)
            scs = {label: dataclasses.replace(base, headers=(*base.headers, *headers[label])) for label in gateways}
            for label, gw in gateways.items():
                wrk_run(gw.url, scs[label], 1)  # warm-up
            other, this = [], []
            cpu: dict[str, list[float]] = {"other": [], "this": []}
            for n in range(args.rounds):
                # Which goes first alternates; and each round waits for both ingest processes to be
                # quiet, so the last records of one round are not written during the next one.
                for label, runs in (("other", other), ("this", this))[::1 if n % 2 == 0 else -1]:
                    gw = gateways[label]
                    servers.ingest_settle([g.pid for g in gateways.values()])
                    before = cpu_seconds(gw.pid)
                    result = wrk_run(gw.url, scs[label], args.duration)
                    runs.append(result["rps"])
                    cpu[label].append((cpu_seconds(gw.pid) - before) / max(1, result["requests"]) * 1e6)
            ratios = [t / o for o, t in zip(other, this)]
            print(f"{name}: other {[round(x) for x in other]} req/s, this {[round(x) for x in this]} req/s; "
                  f"this/other median {statistics.median(ratios):.2f}x (rounds {[round(r, 2) for r in ratios]})")
            cpu_o, cpu_t = statistics.median(cpu["other"]), statistics.median(cpu["this"])
            print(f"{name}: gateway CPU per request, median: other {cpu_o:.0f} us, this {cpu_t:.0f} us; "
                  f"this/other {cpu_t / cpu_o:.2f}x")
    finally:
        servers.all_stop(running, dirs)


if __name__ == "__main__":
    main()
