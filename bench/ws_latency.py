"""Realtime relay latency: python bench/ws_latency.py [--frames 1000] [--checkout DIR]

An echo WebSocket upstream (testing/mock_realtime.py, /v1/echo), a gateway (this checkout, or
--checkout) on a fresh SQLite database, and a client that sends --frames small text frames one at
a time, each answered by the echo: the round trip is timed directly against the upstream and
through the gateway. Each round trip through the gateway is relayed twice (there and back), so
the added latency per relayed frame is half the difference of the medians.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from testing.mock_realtime import MockRealtimeThread  # noqa: E402


async def round_trips(url: str, frames: int) -> list[float]:
    """Milliseconds per echoed frame, one frame in flight at a time (after a short warm-up)."""
    times = []
    async with connect(url, additional_headers={"Authorization": "Bearer sk-bench"}, compression=None) as ws:
        for i in range(frames + 50):
            payload = json.dumps({"type": "input_text", "seq": i, "text": "hello"})
            started = time.perf_counter()
            await ws.send(payload)
            assert await ws.recv() == payload
            if i >= 50:
                times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checkout", type=Path, default=servers.ROOT)
    args = parser.parse_args()
    mock = MockRealtimeThread()
    data_dir, env = servers.gateway_prepare(mock.url, root=args.checkout.resolve())
    gw = servers.gateway_start(env, root=args.checkout.resolve())
    try:
        direct_url = f"ws://127.0.0.1:{mock.mock.port}/v1/echo"
        gw_url = f"ws://127.0.0.1:{gw.port}/v1/echo"
        added = []
        for n in range(args.rounds):  # alternating, so other load hits both alike
            direct = statistics.median(asyncio.run(round_trips(direct_url, args.frames)))
            through = statistics.median(asyncio.run(round_trips(gw_url, args.frames)))
            added.append((through - direct) / 2)
            print(f"round {n + 1}: {args.frames} frames each way; median round trip direct {direct:.3f} ms, "
                  f"through the gateway {through:.3f} ms: +{(through - direct) / 2:.3f} ms per relayed frame")
        print(f"added latency per relayed frame: median {statistics.median(added):.3f} ms "
              f"(rounds {', '.join(f'{a:.3f}' for a in added)})")
    finally:
        gw.stop()
        mock.stop()
        servers.gateway_cleanup(data_dir, env)


if __name__ == "__main__":
    main()
