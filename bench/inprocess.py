"""What a control costs the worker, in process: python bench/inprocess.py key|hook [--rounds 11] [--requests 400]

Starts the mock upstream (on the first core) and, in this process (on the second), the gateway's
own ASGI application on a fresh SQLite log, and sends chat calls to it one at a time, straight
through the ASGI interface (no server, no load generator), in alternating rounds of two or three
kinds, printing the worker's CPU time per request of each (process time: the event loop and its
threads; the ingest process is not counted) and the paired differences:

- `key`: requests presenting a key with all three limits (as bench/keys.py) against unkeyed ones,
  one worker serving both (GATEWAY_ALLOW_UNKEYED=true);
- `hook`: no hook, the no-op sync hook (bench.noop_hook.Noop, run in a thread) and the same hook
  declared non-blocking (NoopInline, on the event loop), GATEWAY_HOOKS switched between rounds;
- `cache`: the pass-through (no X-Gateway-Cache) against cache hits (X-Gateway-Cache: 3600, the
  answer stored by the warm-up), as bench/cache.py drives them.

With no wrk and no uvicorn in the figures, the differences keep still on a machine whose speed
drifts, where bench/keys.py's and bench/compare.py's throughput ratios move by 10% between runs.
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
from bench.rounds import medians_print  # noqa: E402

NOOP = "bench.noop_hook.Noop"


def _scope(body: bytes, secret: str | None, cache: str | None = None) -> dict:
    name, value = AUTH.split(": ", 1)
    headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), (name.lower().encode(), value.encode())]
    if secret:
        headers.append((b"x-gateway-key", secret.encode()))
    if cache:
        headers.append((b"x-gateway-cache", cache.encode()))
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


async def _run(app, variants: dict, body: bytes, rounds: int, requests: int) -> dict[str, list[float]]:
    """Each variant (its ASGI scope, its GATEWAY_HOOKS) in alternating rounds; CPU us per request of each."""
    from django.conf import settings

    startup: asyncio.Queue = asyncio.Queue()
    started = asyncio.Event()

    async def lifespan_send(message: dict) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    startup.put_nowait({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan"}, startup.get, lifespan_send))
    await started.wait()
    got: dict[str, list[float]] = {name: [] for name in variants}
    for name, (scope, hooks) in variants.items():  # warm: connections, caches, the key read, the hook's thread
        settings.GATEWAY_HOOKS = hooks
        for _ in range(100):
            status = await _call(app, scope, body)
        if status != 200:
            raise SystemExit(f"{name} request answered {status}")
    for n in range(rounds):
        for name in list(variants)[:: 1 if n % 2 == 0 else -1]:
            scope, settings.GATEWAY_HOOKS = variants[name]
            start = time.process_time()
            for _ in range(requests):
                await _call(app, scope, body)
            got[name].append((time.process_time() - start) / requests * 1e6)
    startup.put_nowait({"type": "lifespan.shutdown"})
    await lifespan
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("control", choices=("key", "hook", "cache"))
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
        env.pop("GATEWAY_HOOKS", None)
        body = CHAT_BODY
        if args.control == "key":
            env["GATEWAY_ALLOW_UNKEYED"] = "true"
            secret = key_create(env)
            variants = {"unkeyed": (_scope(body, None), []), "keyed": (_scope(body, secret), [])}
        elif args.control == "cache":
            variants = {"pass-through": (_scope(body, None), []), "hit": (_scope(body, None, "3600"), [])}
        else:
            variants = {"no hook": (_scope(body, None), []), "sync hook": (_scope(body, None), [NOOP]),
                        "inline hook": (_scope(body, None), [NOOP + "Inline"])}
        os.environ.update(env)
        from gateway_project.asgi import application

        try:
            import uvloop  # what uvicorn runs on when it is installed
            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        got = runner(_run(application, variants, body, args.rounds, args.requests))
    finally:
        mock.stop()
    medians_print(got, "request", places=0)
    base, *others = got
    for name in others:
        diffs = [k - u for u, k in zip(got[base], got[name])]
        ratios = [u / k for u, k in zip(got[base], got[name])]
        print(f"{name} - {base}, paired rounds: median {statistics.median(diffs):.0f} us "
              f"({', '.join(f'{d:.0f}' for d in diffs)}); {base}/{name} CPU median {statistics.median(ratios):.3f}x")


if __name__ == "__main__":
    main()
