"""Test settings: the real settings, with data under a temporary folder."""

import os
import tempfile

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="gateway-test-"))
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from gateway_project.settings import *  # noqa: E402,F401,F403
