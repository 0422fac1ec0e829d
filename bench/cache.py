"""What a response cache hit costs against the pass-through: python bench/cache.py ["chat c1" ...]

Starts the mock upstream (answers at once) and one gateway of this checkout (fresh SQLite, 1
worker, full logging); wrk and the mock run on the first core, the gateway on the others
(servers.cores_split). Drives it with wrk in alternating rounds: the pass-through (no
X-Gateway-Cache: every request goes upstream) and hits (X-Gateway-Cache: 3600, the answer stored
by a warm-up request), and prints the median of the paired ratios (hit over pass-through) with
the issue's target (at least 2x for chat c1 and c64), and each one's CPU time per request. Then
the time to first byte of a streamed answer: straight from the mock, through the gateway, and
replayed from the cache (median of many sequential calls; target: a replay within 2 ms of the
direct call).
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.keys import measured  # noqa: E402
from bench.load import AUTH, SCENARIOS, STREAM_BODY, wrk_require, wrk_run  # noqa: E402

ROUNDS = 5
TARGETS = {"chat c1": 2.0, "chat c64": 2.0}
HIT = "X-Gateway-Cache: 3600"


def ttfb_ms(url: str, headers: dict[str, str], calls: int) -> float:
    """Median milliseconds from sending a streamed chat call to its first body byte, over sequential calls."""
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(calls):
            start = time.perf_counter()
            with client.stream("POST", f"{url}/v1/chat/completions", content=STREAM_BODY,
                               headers={"Content-Type": "application/json", **headers}) as r:
                for i, _ in enumerate(r.iter_raw()):
                    if i == 0:
                        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    """Parse, start the mock and the gateway, alternate rounds, print the ratios and the TTFBs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=["chat c1", "chat c64"])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--ttfb-calls", type=int, default=200)
    args = parser.parse_args()
    wrk_require()
    split = servers.cores_split()  # wrk and the mock on one core, the gateway on the other(s)
    mock = servers.mock_start()
    running = [mock]
    data_dir, env = servers.gateway_prepare(mock.url)
    try:
        gateway = servers.gateway_start(env, cpus=split[1] if split else None)
        running.append(gateway)
        for name in args.scenarios:
            sc = next(s for s in SCENARIOS if s.name == name)
            hit = dataclasses.replace(sc, headers=(*sc.headers, HIT))
            wrk_run(gateway.url, sc, 1)  # warm-up
            wrk_run(gateway.url, hit, 1)  # warm-up, and the stored answer
            pass_rps, hit_rps, pass_cpu, hit_cpu = [], [], [], []
            for _ in range(args.rounds):
                run, worker, ingest = measured(gateway, sc, args.duration)
                pass_rps.append(run["rps"])
                pass_cpu.append(worker + ingest)
                run, worker, ingest = measured(gateway, hit, args.duration)
                if run["errors"]:
                    raise SystemExit(f"{name}: {run['errors']} errors on hits")
                hit_rps.append(run["rps"])
                hit_cpu.append(worker + ingest)
            ratio = statistics.median(h / p for p, h in zip(pass_rps, hit_rps))
            target = TARGETS.get(name)
            verdict = "" if target is None else (" met" if ratio >= target else " NOT met") + f" (target {target}x)"
            print(f"{name}: pass-through {[round(x) for x in pass_rps]} req/s, hit {[round(x) for x in hit_rps]} "
                  f"req/s; hit/pass-through median {ratio:.2f}x{verdict}; CPU per request pass-through "
                  f"{statistics.median(pass_cpu) * 1e6:.0f} us, hit {statistics.median(hit_cpu) * 1e6:.0f} us")
        auth = dict([AUTH.split(": ", 1)])
        ttfb_ms(gateway.url, {**auth, HIT.split(": ")[0]: "3600"}, 3)  # stores the stream
        direct = ttfb_ms(mock.url, auth, args.ttfb_calls)
        through = ttfb_ms(gateway.url, auth, args.ttfb_calls)
        replay = ttfb_ms(gateway.url, {**auth, HIT.split(": ")[0]: "3600"}, args.ttfb_calls)
        verdict = "met" if replay - direct <= 2 else "NOT met"
        print(f"stream TTFB (median of {args.ttfb_calls}): direct {direct:.2f} ms, pass-through {through:.2f} ms, "
              f"replayed hit {replay:.2f} ms: hit - direct {replay - direct:+.2f} ms, {verdict} (target within 2 ms)")
    finally:
        servers.all_stop(running, [(data_dir, env)])


if __name__ == "__main__":
    main()
