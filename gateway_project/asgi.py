"""ASGI entry point: Django plus the lifespan events Django lacks (shared client, log flush)."""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from gateway_project.limits import RequestGuard  # noqa: E402
from logs.writer import writer_get, writer_stop  # noqa: E402
from proxy.upstream import client_close, client_get  # noqa: E402


async def lifespan_run(receive, send) -> None:
    """Open the upstream client and log writer at startup; drain and close them at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            client_get()
            writer_get()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await client_close()
            await asyncio.to_thread(writer_stop, settings.SHUTDOWN_GRACE_SECONDS)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    """Route lifespan events here and HTTP to Django."""
    if scope["type"] == "lifespan":
        await lifespan_run(receive, send)
    elif scope["type"] == "http":
        # Size and idle limits apply while the body is read, before Django spools it to disk.
        await django_app(scope, RequestGuard(scope, receive).receive, send)
    else:
        await django_app(scope, receive, send)
