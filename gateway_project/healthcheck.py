"""The container's health probe (the Dockerfile's HEALTHCHECK): `GET /health` as a client the gateway accepts.

With the production settings (ALLOWED_HOSTS set), a request naming 127.0.0.1 is refused with a
400, so the probe names the first allowed host, as a load balancer's check must
(docs/operations.md). It reads only the environment: no Django, so it costs little every 10 s.
"""

import os
import sys
import urllib.request


def probe_host(allowed: str) -> str:
    """The first host an ALLOWED_HOSTS value names outright (".example.com" allows example.com), else 127.0.0.1."""
    for host in allowed.split(","):
        host = host.strip().lstrip(".")
        if host and "*" not in host:
            return host
    return "127.0.0.1"


def main() -> int:
    port = os.environ.get("UVICORN_PORT", "8000")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Host": probe_host(os.environ.get("ALLOWED_HOSTS", ""))})
    try:
        with urllib.request.urlopen(request, timeout=4) as answer:
            return 0 if answer.status == 200 else 1
    except OSError as exc:  # refused, timed out, or an HTTP error status (HTTPError is one)
        print(f"health probe failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
