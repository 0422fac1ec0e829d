"""CPU time of one hop to a thread and back, as a sync request hook makes it (no gateway involved).

`python bench/hook_hop.py [--calls 20000] [--rounds 5]`: awaits a no-op function N times, one
at a time, through asyncio.to_thread and through proxy/threads.ParkedThreads, alternating rounds;
prints the process CPU time per call of each (all threads), and the median over rounds.
"""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

import django  # noqa: E402

django.setup()

from bench.rounds import medians_print  # noqa: E402
from proxy.threads import ParkedThreads  # noqa: E402


def noop(_arg: object) -> None:
    return None


async def _round(hop, calls: int) -> float:
    for _ in range(200):  # warm: threads started, caches filled
        await hop(noop, None)
    start = time.process_time()
    for _ in range(calls):
        await hop(noop, None)
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = ParkedThreads("bench")
    hops = {"asyncio.to_thread": asyncio.to_thread, "ParkedThreads.run": threads.run}
    got: dict[str, list[float]] = {name: [] for name in hops}

    async def run() -> None:
        for _ in range(args.rounds):
            for name, hop in hops.items():
                got[name].append(await _round(hop, args.calls))

    asyncio.run(run())
    medians_print(got, "call")


if __name__ == "__main__":
    main()
