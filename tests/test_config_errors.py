"""A bad setting stops the start with a message naming it and the values it takes."""

import os
import subprocess
import sys

import pytest

from tests.procs import ROOT


@pytest.mark.parametrize("name,value,message", [
    ("LOG_WRITER", "disk", "LOG_WRITER must be 'process' or 'thread', not 'disk'"),
    ("LOG_INGEST_IDLE_SECONDS", "0", "LOG_INGEST_IDLE_SECONDS must be above 0, not 0.0"),
    ("STREAM_USAGE", "always", "STREAM_USAGE must be 'off' or 'inject', not 'always'"),
])
def test_bad_setting_is_refused_by_name(tmp_path, name, value, message):
    env = {**os.environ, "DATA_DIR": str(tmp_path), name: value}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "-c", "import gateway_project.settings"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"ImproperlyConfigured: {message}" in done.stderr
