"""Does one busy provider hold up another? python bench/pool_isolation.py [OTHER_CHECKOUT] [--slots N]

Starts the mock upstream (as every provider's upstream) and a gateway (1 worker, fresh SQLite)
with UPSTREAM_MAX_CONNECTIONS=N, holds N OpenAI calls whose upstream stays silent (as N slow
streams would), then times Anthropic calls and one more OpenAI call through the same gateway.
Prints each call's status, seconds and error message. With OTHER_CHECKOUT (e.g. a `git archive`
of an older commit), runs the same against that checkout's gateway first.
"""

import argparse
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from bench import servers  # noqa: E402
from testing.mock_upstream import MockUpstreamThread  # noqa: E402

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


def _stalled_stream(port: int) -> socket.socket:
    """A streamed OpenAI chat whose upstream stays silent until this socket closes."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                 b"x-mock-fault: stall\r\nx-mock-stall-s: 600\r\nContent-Length: %d\r\n\r\n%s" % (len(CHAT), CHAT))
    return sock


def _timed(method: str, url: str, body: dict) -> str:
    """One call: its status, seconds and (for an error) message."""
    started = time.monotonic()
    r = httpx.request(method, url, json=body, timeout=120)
    took = time.monotonic() - started
    message = r.json().get("error", {}).get("message", "") if r.status_code >= 400 else ""
    return f"{r.status_code} in {took:.3f} s {message}".rstrip()


def run(label: str, root: Path, mock: MockUpstreamThread, slots: int, calls: int) -> None:
    """One gateway: fill OpenAI's slots, then time the calls."""
    data_dir, env = servers.gateway_prepare(mock.url, root=root)
    env.update({"ANTHROPIC_UPSTREAM_URL": mock.url, "UPSTREAM_MAX_CONNECTIONS": str(slots)})
    gateway = servers.gateway_start(env, root=root)
    mock.mock.received.clear()
    held = [_stalled_stream(gateway.port) for _ in range(slots)]
    try:
        deadline = time.monotonic() + 30
        while len(mock.mock.received) < slots and time.monotonic() < deadline:
            time.sleep(0.05)
        print(f"{label} ({root}): UPSTREAM_MAX_CONNECTIONS={slots}, {len(mock.mock.received)} OpenAI streams held")
        for i in range(calls):
            print(f"  anthropic call {i + 1}: " + _timed("POST", f"{gateway.url}/anthropic/v1/messages", {
                "model": "claude-sonnet-4", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        print("  one more openai call: " + _timed("POST", f"{gateway.url}/v1/chat/completions",
                                                  {"model": "gpt-4o-mini", "messages": []}))
    finally:
        for sock in held:
            sock.close()
        gateway.stop()
        servers.gateway_cleanup(data_dir, env)


def main() -> None:
    """Parse, start the mock, run each checkout."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("other", type=Path, nargs="?", help="another checkout to measure first")
    parser.add_argument("--slots", type=int, default=10, help="UPSTREAM_MAX_CONNECTIONS (default 10)")
    parser.add_argument("--calls", type=int, default=3, help="Anthropic calls to time (default 3)")
    args = parser.parse_args()
    mock = MockUpstreamThread()
    try:
        if args.other:
            run("other", args.other.resolve(), mock, args.slots, args.calls)
        run("this", servers.ROOT, mock, args.slots, args.calls)
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
