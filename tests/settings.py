"""Test settings: the real settings, with data under a temporary folder."""

import os
import tempfile

os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="gateway-test-"))
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")

from gateway_project.settings import *  # noqa: E402,F401,F403

# Django's SQLite test database is in memory, one cache shared by the process's connections: there
# a read in a thread (the gateway's key reads, keys/refresh.py) holds a table lock that makes a
# write in the test's thread fail at once with "database table is locked", where the gateway's
# real database (a file in WAL mode) lets readers and a writer run together. read_uncommitted
# gives the test database that behaviour back: its readers take no table locks.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["OPTIONS"]["init_command"] += " PRAGMA read_uncommitted=1;"  # noqa: F405
