"""CPU per relayed chunk of the idle timeout: python bench/chunk_wait.py [--chunks 50000] [--rounds 7] [--uvloop]

Awaits chunks from an async generator that suspends once per chunk (as a socket read does) in three
ways: bare `anext`, an `asyncio.timeout` around each wait (the relay before), and the relay's one
timer a stream (proxy/relay._IdleWatch); alternating rounds, process CPU time per chunk, medians.
Pin it to one core (taskset -c 1) on a busy machine.
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
from proxy.relay import _IdleWatch  # noqa: E402


async def _chunks(n: int):
    for _ in range(n):
        await asyncio.sleep(0)
        yield b"x"


async def _bare(n: int) -> float:
    start = time.process_time()
    async for _ in _chunks(n):
        pass
    return time.process_time() - start


async def _timeout_each(n: int) -> float:
    chunks, start = _chunks(n), time.process_time()
    while True:
        try:
            async with asyncio.timeout(300):
                await anext(chunks)
        except StopAsyncIteration:
            break
    return time.process_time() - start


async def _one_timer(n: int) -> float:
    chunks, watch, start = _chunks(n), _IdleWatch(300), time.process_time()
    while (await watch.chunk_next(chunks)) is not None:
        pass
    watch.close()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (uvicorn's loop when installed)")
    args = parser.parse_args()
    ways = {"bare anext": _bare, "asyncio.timeout per chunk": _timeout_each, "one timer a stream": _one_timer}
    got: dict[str, list[float]] = {name: [] for name in ways}

    async def run() -> None:
        for _ in range(args.rounds):
            for name, way in ways.items():
                got[name].append(await way(args.chunks) / args.chunks * 1e6)

    if args.uvloop:
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())
    medians_print(got, "chunk", places=2)


if __name__ == "__main__":
    main()
