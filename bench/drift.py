"""Does one gateway's cost move from round to round with nothing changing? python bench/drift.py [--key] [--rounds 14]

Starts the mock and one gateway of this checkout (pinned as the other benchmarks place them: the
load and the mock on the first core, the gateway on the others) and runs the same wrk scenario
round after round, printing each round's requests per second and the CPU per request of the
worker and of its ingest process. On a machine whose speed holds, the rounds agree within a few
per cent; rounds where both CPU figures jump together are the host, not the gateway
(docs/benchmark.md, "The machine's speed drifts").
"""

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.keys import key_create, measured  # noqa: E402
from bench.load import SCENARIOS, wrk_require  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--key", action="store_true", help="every request presents a gateway key with all three limits")
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--scenario", default="chat c64")
    args = parser.parse_args()
    wrk_require()
    split = servers.cores_split()
    mock = servers.mock_start()
    data_dir, env = servers.gateway_prepare(mock.url)
    running = [mock]
    try:
        sc = next(s for s in SCENARIOS if s.name == args.scenario)
        if args.key:
            sc = dataclasses.replace(sc, headers=(*sc.headers, f"X-Gateway-Key: {key_create(env)}"))
        gateway = servers.gateway_start(env, cpus=split[1] if split else None)
        running.append(gateway)
        for n in range(args.rounds):
            run, worker, ingest = measured(gateway, sc, args.duration)
            print(f"round {n + 1}: {run['rps']:.0f} req/s; CPU per request: worker {worker * 1e6:.0f} us, "
                  f"ingest {ingest * 1e6:.0f} us", flush=True)
    finally:
        servers.all_stop(running, [(data_dir, env)])


if __name__ == "__main__":
    main()
