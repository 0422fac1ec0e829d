"""Test settings: the real settings, with data under a temporary folder."""

import os
import tempfile

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="gateway-test-"))
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
# respx intercepts only httpx's own transport; live-gateway tests switch to the default
# (aiohttp) transport in the `gateway` fixture.
os.environ.setdefault("UPSTREAM_TRANSPORT", "httpx")
# In-process gateways log through a thread: only this process knows the test database and the
# per-test settings, so LOG_WRITER=process (the default) is tested with real gateway processes.
os.environ["LOG_WRITER"] = "thread"

from gateway_project.settings import *  # noqa: E402,F401,F403
