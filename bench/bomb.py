"""Decompression-bomb probe: what relaying gzip bombs costs a gateway worker, and its neighbours.

    python bench/bomb.py [--checkout DIR] [--bombs 3] [--gib 1]

Starts an upstream that answers every request with ~1 MB of gzip that inflates to --gib GiB of
zeros (Content-Encoding: gzip), a normal mock upstream for a second provider, and a gateway (this
checkout, or --checkout: another one, e.g. a worktree of an older commit) on a fresh SQLite
database. It measures the worker's resident memory idle, then sends --bombs bomb requests at
once while it times /health and a call to the other provider every 0.2 s; it prints the peak
RSS of the worker and its children, the slowest /health and neighbour call, and what the log
kept of each bomb (body size, files, note).
"""

import argparse
import asyncio
import gzip
import sqlite3
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.probes import MIB, RssSampler  # noqa: E402


def bomb_bytes(gib: float) -> bytes:
    """gzip of gib GiB of zeros, made in pieces (never holding the inflated data)."""
    comp = gzip.GzipFile(fileobj=(buf := __import__("io").BytesIO()), mode="wb", compresslevel=9)
    zeros = b"\0" * (16 << 20)
    for _ in range(int(gib * 1024 / 16)):
        comp.write(zeros)
    comp.close()
    return buf.getvalue()


def bomb_server_start(body: bytes) -> tuple[int, threading.Thread]:
    """A raw asyncio server answering every request with the bomb."""
    port = servers.port_free()
    head = (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()

    async def handle(reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # the probe's requests have no body
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def run():
        async def main():
            server = await asyncio.start_server(handle, "127.0.0.1", port)
            async with server:
                await server.serve_forever()
        asyncio.run(main())
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    servers.port_wait(port)
    return port, thread


def _bomb(url: str, out: list) -> None:
    started = time.monotonic()
    with httpx.stream("GET", url + "/v1/models", headers={"Authorization": "Bearer sk-bench"}, timeout=300) as r:
        size = sum(len(c) for c in r.iter_raw())
        out.append({"status": r.status_code, "relayed": size, "s": time.monotonic() - started,
                    "id": r.headers.get("x-gateway-request-id")})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=servers.ROOT)
    parser.add_argument("--bombs", type=int, default=3)
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    body = bomb_bytes(args.gib)
    port, _ = bomb_server_start(body)
    mock = servers.mock_start()
    data_dir, env = servers.gateway_prepare(f"http://127.0.0.1:{port}", root=args.checkout.resolve())
    env["GEMINI_UPSTREAM_URL"] = mock.url
    gw = servers.gateway_start(env, root=args.checkout.resolve())
    try:
        time.sleep(1.0)
        idle = RssSampler(gw.pid).rss() / MIB
        results: list = []
        slow_health = slow_neighbour = 0.0
        with RssSampler(gw.pid) as peak:
            callers = [threading.Thread(target=_bomb, args=(gw.url, results)) for _ in range(args.bombs)]
            for c in callers:
                c.start()
            while any(c.is_alive() for c in callers):
                t = time.monotonic()
                httpx.get(gw.url + "/health", timeout=120)
                slow_health = max(slow_health, time.monotonic() - t)
                t = time.monotonic()
                httpx.post(gw.url + "/gemini/v1beta/models/gemini-2.5-flash:generateContent", json={}, timeout=120,
                           headers={"x-goog-api-key": "AIza-bench"})
                slow_neighbour = max(slow_neighbour, time.monotonic() - t)
                time.sleep(0.2)
        time.sleep(3)  # let the log catch up
        print(f"bomb: {len(body) / MIB:.2f} MiB of gzip inflating to {args.gib:g} GiB, {args.bombs} at once, "
              f"checkout {args.checkout}")
        print(f"worker RSS idle {idle:.1f} MiB, peak {peak.peak / MIB:.1f} MiB (worker and children), "
              f"growth {peak.peak / MIB - idle:.1f} MiB")
        print(f"slowest /health {slow_health * 1000:.0f} ms, slowest neighbour call {slow_neighbour * 1000:.0f} ms")
        con = sqlite3.connect(f"file:{data_dir / 'gateway.db'}?mode=ro", uri=True, timeout=30)
        for r in results:
            row = con.execute("SELECT body_size, coalesce(length(body), 0), error_message, "
                              "(SELECT count(*) FROM binary_files b WHERE b.request_id = r.request_id), "
                              "(SELECT coalesce(sum(size), 0) FROM binary_files b WHERE b.request_id = r.request_id) "
                              "FROM responses r WHERE request_id = ?", (r["id"],)).fetchone()
            print(f"  relayed {r['relayed']} bytes in {r['s']:.1f} s; logged body_size {row[0] if row else None}, "
                  f"inline {row[1] if row else None}, files {row[3] if row else None} "
                  f"({(row[4] or 0) / MIB if row else 0:.1f} MiB), note {(row[2] or '')[:120] if row else None!r}")
        con.close()
    finally:
        gw.stop()
        mock.stop()
        servers.gateway_cleanup(data_dir, env)


if __name__ == "__main__":
    main()
