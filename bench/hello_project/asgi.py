"""ASGI entry: uvicorn bench.hello_project.asgi:application."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.hello_project.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
