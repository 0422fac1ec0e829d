"""ASGI entry point: one router in front of two apps, plus the lifespan events Django lacks.

  lifespan                   -> lifespan_run (shared upstream client, log writer, shutdown grace)
  websocket on a proxy path  -> proxy/websocket.py: the session relayed to the provider and logged
  websocket elsewhere        -> websocket_refuse: the handshake answered 403
  /admin, /static, /health   -> Django's ASGI handler, with the stock middleware in MIDDLEWARE (a post declared
                                larger than any admin page sends: 413, unread)
  everything else            -> the proxy's ASGI adapter (proxy/asgi.py), which calls the Django
                                async view proxy_view and sends its StreamingHttpResponse

Shutdown (SIGTERM/SIGINT under uvicorn): the server stops accepting connections and waits for
in-flight exchanges; SHUTDOWN_GRACE_SECONDS after the signal, exchanges still running are
cancelled and logged `interrupted`; then the lifespan shutdown flushes every pending log write.
"""

import asyncio
import gc
import json
import logging
import os
import signal
import sys
import threading

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from gateway_project.log_format import ConsoleFormatter  # noqa: E402

# uvicorn's exit code for a worker that failed before serving: its --workers supervisor then stops, where any
# other code makes it start a new worker, which fails the same way, forever (uvicorn/config.py STARTUP_FAILURE).
STARTUP_FAILURE = 3

try:
    django_app = get_asgi_application()
except ImproperlyConfigured as exc:
    # A setting that cannot be used, named by settings.py: that line, not a 60-line import traceback. The settings
    # never loaded, so neither did LOGGING: the line is dated and levelled as the console's others are.
    sys.stderr.write(ConsoleFormatter().format(logging.makeLogRecord({
        "name": __name__, "levelno": logging.CRITICAL, "levelname": "CRITICAL",
        "msg": "ImproperlyConfigured: %s", "args": (exc,)})) + "\n")
    sys.exit(STARTUP_FAILURE)

from keys.store import store_probe  # noqa: E402
from logs.pipeline.writer import writer_get, writer_stop  # noqa: E402
from logs.pricing import price_table  # noqa: E402
from proxy.asgi import proxy_app  # noqa: E402
from proxy.websocket import websocket_app  # noqa: E402
from proxy.exchange import exchanges_inflight, exchanges_interrupt  # noqa: E402
from proxy.hold import watch_stop  # noqa: E402
from proxy.upstream import client_close, client_get  # noqa: E402

log = logging.getLogger(__name__)
DJANGO_PREFIXES = ("/admin/", "/static/")
DJANGO_PATHS = frozenset({"/admin", "/static", "/health"})
_grace: dict[str, asyncio.TimerHandle | None] = {"timer": None}


def serves_django(path: str) -> bool:
    """Whether Django serves this path (its own pages) rather than the proxy."""
    return path in DJANGO_PATHS or path.startswith(DJANGO_PREFIXES)


def _grace_over() -> None:
    """The shutdown grace period ran out: end what is still in flight (each logs itself)."""
    count = exchanges_interrupt()
    if count:
        log.warning("shutdown grace of %g s over: %d exchange(s) interrupted", settings.SHUTDOWN_GRACE_SECONDS,
                    count)


def _grace_start(loop: asyncio.AbstractEventLoop) -> None:
    """Start the grace clock once, at the first stop signal."""
    if _grace["timer"] is None:
        log.warning("shutting down: %d exchange(s) in flight get %g s to finish", exchanges_inflight(),
                    settings.SHUTDOWN_GRACE_SECONDS)
        _grace["timer"] = loop.call_later(settings.SHUTDOWN_GRACE_SECONDS, _grace_over)


def shutdown_signals_watch(loop: asyncio.AbstractEventLoop) -> None:
    """Chain onto the server's own SIGTERM/SIGINT handlers to learn when shutdown begins.

    The ASGI lifespan only hears of shutdown after every connection has closed, too late to
    bound in-flight exchanges; uvicorn restores its handlers (dropping ours) when it exits.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):  # not under a server that handles the signal itself
            continue

        def handler(signum, frame, previous=previous) -> None:
            loop.call_soon_threadsafe(_grace_start, loop)
            previous(signum, frame)

        signal.signal(sig, handler)


async def lifespan_run(receive, send) -> None:
    """Open the upstream client and log writer at startup; drain and close them at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            client_get()
            writer_get()
            # Said on the console now, not first when an answer is priced or a limited key is refused.
            await asyncio.to_thread(store_probe)
            await asyncio.to_thread(price_table)
            shutdown_signals_watch(asyncio.get_running_loop())
            # Everything loaded so far lives for the whole process: keep it out of the cyclic
            # GC's full collections, which otherwise stall requests (docs/benchmark.md).
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await watch_stop()
            await client_close()
            await asyncio.to_thread(writer_stop, settings.SHUTDOWN_GRACE_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket_refuse(receive, send) -> None:
    """Refuse a WebSocket handshake on Django's own pages (the server answers 403).

    Django does not serve WebSockets: it would raise on the scope, and the server would answer
    500 with a traceback on its console.
    """
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008, "reason": "WebSocket is not supported"})


# Room for a multipart post's framing and small fields beside its file.
ADMIN_POST_FRAMING = 64 * 1024


async def django_serve(scope, receive, send) -> None:
    """Django's pages; a post declared larger than any admin page sends is answered 413 unread. Django's ASGI
    handler spools a whole body to a temporary file before any view or upload handler sees it: a script's 1 GB
    post to the hold queue's decide/ was written to disk whole, to be refused after. The largest a page sends is a
    held request's edited body (MAX_REQUEST_BODY_BYTES, as a file) beside form fields (DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    largest = settings.MAX_REQUEST_BODY_BYTES + settings.DATA_UPLOAD_MAX_MEMORY_SIZE + ADMIN_POST_FRAMING
    declared = next((v for k, v in scope.get("headers", ()) if k.lower() == b"content-length"), b"")
    if declared.isdigit() and int(declared) > largest:
        body = json.dumps({"error": f"the post ({int(declared)} bytes) is larger than any admin page sends "
                                    f"({largest} bytes: MAX_REQUEST_BODY_BYTES for a held request's edited body, "
                                    "DATA_UPLOAD_MAX_MEMORY_SIZE for form fields)"}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return
    await django_app(scope, receive, send)


async def application(scope, receive, send) -> None:
    """Route by scope: lifespan, WebSocket upgrades, Django's own pages, or the proxy."""
    if scope["type"] == "lifespan":
        await lifespan_run(receive, send)
    elif scope["type"] == "websocket":
        if serves_django(scope["path"]):
            await websocket_refuse(receive, send)
        else:
            await websocket_app(scope, receive, send)
    elif serves_django(scope["path"]):
        await django_serve(scope, receive, send)
    else:
        await proxy_app(scope, receive, send)
