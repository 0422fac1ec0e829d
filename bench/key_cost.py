"""What a limited gateway key costs the worker, in process: python bench/key_cost.py [--rounds 11] [--requests 400]

Starts the mock upstream (on the first core) and, in this process (on the second), the gateway's
own ASGI application on a fresh SQLite log, with a key that has all three limits (as bench/keys.py)
and GATEWAY_ALLOW_UNKEYED=true, so that one worker serves both kinds of request. Sends chat calls
to it one at a time, straight through the ASGI interface (no server, no load generator), in
alternating rounds of keyed and unkeyed requests, and prints the worker's CPU time per request
(process time: the event loop and its threads; the ingest process is not counted) of each, and
the paired differences. With no wrk and no uvicorn in the figures, the difference keeps still on
a machine whose speed drifts, where bench/keys.py's throughput ratios move by 10% between runs.
"""

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.keys import key_create  # noqa: E402
from bench.load import AUTH, CHAT_BODY  # noqa: E402


def _scope(body: bytes, secret: str | None) -> dict:
    name, value = AUTH.split(": ", 1)
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (name.lower().encode(), value.encode())]
    if secret:
        headers.append((b"x-gateway-key", secret.encode()))
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8080)}


async def _call(app, scope: dict, body: bytes) -> int:
    """One request through the ASGI application; its status."""
    done, sent, status = asyncio.Event(), [False], []

    async def receive() -> dict:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(dict(scope), receive, send)
    done.set()
    return status[0]


async def _run(app, scopes: dict, body: bytes, rounds: int, requests: int) -> dict[str, list[float]]:
    startup: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    startup.put_nowait({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan"}, startup.get, lifespan_send))
    await started.wait()
    for name, scope in scopes.items():  # warm: connections, caches, the key read
        for _ in range(100):
            status = await _call(app, scope, body)
        if status != 200:
            raise SystemExit(f"{name} request answered {status}")
    got: dict[str, list[float]] = {name: [] for name in scopes}
    for n in range(rounds):
        for name in list(scopes)[:: 1 if n % 2 == 0 else -1]:
            start = time.process_time()
            for _ in range(requests):
                await _call(app, scopes[name], body)
            got[name].append((time.process_time() - start) / requests * 1e6)
    startup.put_nowait({"type": "lifespan.shutdown"})
    await lifespan
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--requests", type=int, default=400, help="requests per round and kind")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) > 1:
        os.sched_setaffinity(0, {cores[0]})  # the mock inherits the first core
    mock = servers.mock_start()
    try:
        if len(cores) > 1:
            os.sched_setaffinity(0, {cores[1]})
        _, env = servers.gateway_prepare(mock.url)
        env["GATEWAY_ALLOW_UNKEYED"] = "true"
        secret = key_create(env)
        os.environ.update(env)
        from gateway_project.asgi import application

        body = CHAT_BODY
        scopes = {"unkeyed": _scope(body, None), "keyed": _scope(body, secret)}
        try:
            import uvloop  # what uvicorn runs on when it is installed
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        got = runner(_run(application, scopes, body, args.rounds, args.requests))
    finally:
        mock.stop()
    for name, values in got.items():
        print(f"{name:8} CPU per request: median {statistics.median(values):.0f} us "
              f"(rounds: {', '.join(f'{v:.0f}' for v in values)})")
    diffs = [k - u for u, k in zip(got["unkeyed"], got["keyed"])]
    ratios = [k / u for u, k in zip(got["unkeyed"], got["keyed"])]
    print(f"keyed - unkeyed, paired rounds: median {statistics.median(diffs):.0f} us "
          f"({', '.join(f'{d:.0f}' for d in diffs)}); keyed/unkeyed CPU median {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
