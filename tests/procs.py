"""Real gateway processes for the fault tests: `manage.py migrate` + `uvicorn` as subprocesses.

Each process gets its own DATA_DIR (SQLite file, journal, payload store) and talks to the mock
upstream of the test process; tests read the SQLite file directly with the sqlite3 module.
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from gateway_project.healthcheck import probe_host

ROOT = Path(__file__).resolve().parent.parent
_DROP = ("DATABASE_URL", "DB_PATH", "FILE_STORAGE_PATH", "DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST")

sqlite_only = pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
    reason="real-process fault tests inspect the gateway's SQLite file directly; run them without "
           "DATABASE_URL (the code paths they cover do not depend on the database engine)",
)


def proc_env(data_dir: Path, upstream_url: str, **extra: str) -> dict[str, str]:
    """Environment for a gateway subprocess: its own data folder, SQLite, the mock upstream."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env.update({"DATA_DIR": str(data_dir), "OPENAI_UPSTREAM_URL": upstream_url,
                "SECRET_KEY": "fault-test-secret", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


_template: dict[str, Path] = {}


def migrated_copy(data_dir: Path, tmp_factory) -> Path:
    """A migrated SQLite database in data_dir (migrate runs once per session, then is copied)."""
    if "db" not in _template:
        base = tmp_factory.mktemp("migrated")
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT,
                       env=proc_env(base, "http://127.0.0.1:9"), check=True, timeout=120)
        _template["db"] = base / "gateway.db"
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(_template["db"], data_dir / "gateway.db")
    return data_dir / "gateway.db"


def free_port() -> int:
    """A free local port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """`uvicorn gateway_project.asgi:application` in a subprocess; stderr kept in a file.

    `command` runs a documented command line instead, with a free port so tests never collide
    with a gateway already running there: a `--port` in it is replaced; a command without one
    (compose.yaml's, which leaves host and port to uvicorn's environment variables) gets them
    as UVICORN_HOST and UVICORN_PORT.
    """

    def __init__(self, data_dir: Path, upstream_url: str, *, workers: int = 1, command: list[str] | None = None,
                 **extra: str) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = data_dir / f"uvicorn-{self.port}.stderr"
        self.host = probe_host(extra.get("ALLOWED_HOSTS", ""))  # a Host the gateway accepts (its own probe's)
        if command is not None:
            args = list(command)
            if "--port" in args:
                args[args.index("--port") + 1] = str(self.port)
            else:
                extra = {"UVICORN_HOST": "127.0.0.1", "UVICORN_PORT": str(self.port), **extra}
        else:
            args = [sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        if workers > 1 and "--workers" not in args:
            args += ["--workers", str(workers)]
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=proc_env(data_dir, upstream_url, **extra),
                                     stdout=subprocess.DEVNULL, stderr=self._stderr, start_new_session=True)
        self._ready_wait()

    def _ready_wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.stderr()}")
            try:
                # /health answers once one worker is up; every worker opens its journal at startup.
                if httpx.get(f"{self.url}/health", headers={"Host": self.host}, timeout=1).status_code == 200 and (
                        self.workers == 1 or len(list((self.data_dir / "journal").glob("*.jsonl"))) >= self.workers):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"gateway did not start:\n{self.stderr()}")

    def stderr(self) -> str:
        """Everything the server wrote to stderr so far."""
        if not self._stderr.closed:
            self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send a signal to the server (the uvicorn main process)."""
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its return code."""
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (workers included) and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._stderr.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._stderr.close()
        return self.proc.returncode


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run a read query on the gateway's SQLite file."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def exchanges_read(db: Path) -> dict[str, dict]:
    """Every logged exchange by request id: request fields plus its response (or None)."""
    rows = db_rows(db, """
        SELECT r.id, r.endpoint, r.rowid, resp.id, resp.status_code, resp.outcome, resp.is_error,
               resp.error_message, resp.body_size, resp.duration_ms
        FROM requests r LEFT JOIN responses resp ON resp.request_id = r.id""")
    out = {}
    for rid, endpoint, rowid, resp_id, status, outcome, is_error, error, size, duration in rows:
        out[rid] = {"endpoint": endpoint, "rowid": rowid, "response": None if resp_id is None else {
            "status": status, "outcome": outcome, "is_error": bool(is_error), "error": error,
            "body_size": size, "duration_ms": duration}}
    return out

