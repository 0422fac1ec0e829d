"""Starts and stops the processes the benchmark measures: mock, references, gateway."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def port_free() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_wait(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on the port (or proc, the process that should, ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class Server:
    """One started process and the URL it answers on."""

    name: str
    port: int
    proc: subprocess.Popen
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Process id (the uvicorn worker itself when run with one worker)."""
        return self.proc.pid

    def stop(self) -> float:
        """SIGINT (graceful: lifespan shutdown drains the log), then kill if it hangs; seconds taken."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return time.monotonic() - started

    def stderr_tail(self, size: int = 2000) -> str:
        """The end of what the process wrote to stderr."""
        err = self.extra.get("stderr")
        if err is None:
            return ""
        err.seek(0)
        return err.read().decode(errors="replace")[-size:]


def _spawn(name: str, args: list[str], env: dict[str, str], port: int, cwd: Path = ROOT,
           timeout: float = 30.0, cpus: set[int] | None = None) -> Server:
    """Start a process in the project root and wait for its port (stderr kept in a temp file); with cpus, on
    those cores only (and so every thread and process it starts)."""
    err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty server must never block on it
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pin)
    try:
        port_wait(port, timeout, proc)
    except RuntimeError:
        proc.kill()
        proc.wait(5)
        err.seek(0)
        raise RuntimeError(f"{name} did not start:\n{err.read().decode(errors='replace')[-2000:]}")
    return Server(name, port, proc, {"stderr": err})


def _uvicorn(app: str, port: int, workers: int = 1) -> list[str]:
    """uvicorn command line as the README runs the gateway (no access log: the audit log is the record;
    no server or date header of uvicorn's own), for the references too, so they do the same work."""
    return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--no-access-log", "--no-server-header", "--no-date-header", "--log-level", "warning", "--lifespan", "on"]


def mock_start() -> Server:
    """The raw-asyncio mock upstream."""
    port = port_free()
    return _spawn("mock", [PYTHON, "-m", "testing.mock_upstream", "--port", str(port)], dict(os.environ), port)


def passthrough_start(upstream: str, transport: str = "httpx", cpus: set[int] | None = None) -> Server:
    """The no-logging raw-ASGI httpx pass-through (on `cpus` only)."""
    port = port_free()
    return _spawn(f"passthrough ({transport})", _uvicorn("bench.passthrough:app", port),
                  {**os.environ, "BENCH_UPSTREAM": upstream, "BENCH_TRANSPORT": transport}, port, cpus=cpus)


def hello_start(cpus: set[int] | None = None) -> Server:
    """The Django async hello-world view (on `cpus` only)."""
    port = port_free()
    args = _uvicorn("bench.hello_project.asgi:application", port)
    args[args.index("--lifespan") + 1] = "off"
    return _spawn("django-hello", args, {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.hello_project.settings"}, port,
                  cpus=cpus)


def litellm_start(binary: str, upstream: str, config_dir: Path, master_key: str, cpus: set[int] | None = None) -> Server:
    """LiteLLM's proxy (installed in a venv of its own) with one OpenAI-compatible model on the mock (on `cpus`).

    No DATABASE_URL (no spend tracking database) and the model cost map read from the package, not
    fetched: nothing leaves the machine. Its master key is the benchmark's fake client key, so the
    requests wrk sends are let in (LiteLLM refuses to start without one).
    """
    config = config_dir / "litellm.yaml"
    config.write_text("model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
                      f"      model: openai/gpt-4o-mini\n      api_base: {upstream}/v1\n      api_key: sk-mock\n")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update({"LITELLM_MASTER_KEY": master_key, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"})
    port = port_free()
    return _spawn("litellm", [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                              "--num_workers", "1"], env, port, cwd=config_dir, timeout=180.0, cpus=cpus)


def gateway_env(data_dir: Path, upstream: str) -> dict[str, str]:
    """Environment of a gateway on a fresh SQLite database under data_dir."""
    return {"DATA_DIR": str(data_dir), "OPENAI_UPSTREAM_URL": upstream,
            "DJANGO_SETTINGS_MODULE": "gateway_project.settings", "DATABASE_URL": "", "DB_PATH": "",
            "FILE_STORAGE_PATH": "", "LOG_LEVEL": "WARNING"}


def pg_database_create(base_url: str) -> str:
    """A new empty PostgreSQL database next to base_url's; returns its URL."""
    import psycopg

    head, _, _name = base_url.rpartition("/")
    name = f"gw_bench_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{head}/{name}"


def pg_database_drop(url: str) -> None:
    """Drop a database made by pg_database_create."""
    import psycopg

    head, _, name = url.rpartition("/")
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def gateway_prepare(upstream: str, database_url: str | None = None, root: Path = ROOT) -> tuple[Path, dict[str, str]]:
    """A temp DATA_DIR with a migrated database: SQLite in it, or a new PostgreSQL database."""
    data_dir = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    env = gateway_env(data_dir, upstream)
    if database_url:
        env["DATABASE_URL"] = pg_database_create(database_url)
    full = {k: v for k, v in {**os.environ, **env}.items() if v != ""}
    for k in ("DATABASE_URL", "DB_PATH", "FILE_STORAGE_PATH"):
        if not env.get(k):
            full.pop(k, None)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v", "0"], cwd=root, env=full, check=True)
    return data_dir, full


def gateway_start(env: dict[str, str], workers: int = 1, root: Path = ROOT, cpus: set[int] | None = None) -> Server:
    """The gateway with full logging (env from gateway_prepare), from this checkout or another (on `cpus` only)."""
    port = port_free()
    return _spawn(f"gateway x{workers}", _uvicorn("gateway_project.asgi:application", port, workers), env, port,
                  cwd=root, cpus=cpus)


def workers_serving(server: Server, workers: int, load: Callable[[], object], timeout: float = 60.0) -> None:
    """Run `load` until each of a multi-worker gateway's `workers` worker processes has served a call.

    The port answers as soon as the first worker listens; on a loaded machine the second can still
    be starting a round later, and a round measured then counts one worker (or none: run 1 of the
    sixteenth session, docs/benchmark.md). A worker starts its ingest process with its first
    logged exchange, so a worker with an ingest child has served one.
    """
    deadline = time.monotonic() + timeout
    supervisor = psutil.Process(server.pid)
    while True:
        load()
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with status {server.proc.returncode}")
        serving = [w for w in supervisor.children() if "spawn_main" in " ".join(w.cmdline()) and w.children()]
        if len(serving) >= workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name}: {len(serving)} of {workers} workers served a call in {timeout}s")


def cores_split() -> tuple[set[int], set[int]] | None:
    """(the load side's cores, the servers' cores): the first core for this process and what it starts (the load
    generator, the mock), the others for the servers under test; None on one core.

    Left to the scheduler, a gateway's worker shares a core with the mock or wrk in some runs and
    not in others, and two gateways of identical code differ by 10-20% in CPU per request for the
    whole run (docs/benchmark.md): a comparison of two gateways then measures where they landed.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None
    load = {cores[0]}
    os.sched_setaffinity(0, load)
    return load, set(cores[1:])


def gateway_cpu(pid: int) -> tuple[float, float]:
    """User + system CPU seconds so far of a gateway's worker (pid) and of its children (the ingest process)."""
    proc = psutil.Process(pid)
    worker = ingest = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        if p is proc:
            worker = t.user + t.system
        else:
            ingest += t.user + t.system
    return worker, ingest


def ingest_settle(pids: list[int], quiet: float = 0.2, limit: float = 5.0) -> None:
    """Wait until the gateways' ingest processes (the children of `pids`) have used no CPU for `quiet` seconds.

    A loaded round leaves the last half second or so of records for its ingest process to write
    after wrk stops (it runs at idle priority until records wait, issue 13): without waiting, that
    work lands in the next round, another gateway's on a shared core, or this one's other side.
    """
    def used() -> float:
        return sum(gateway_cpu(pid)[1] for pid in pids)

    deadline = time.monotonic() + limit
    last = used()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = used()
        if now == last:
            return
        last = now


def log_rows(env: dict[str, str]) -> tuple[int, int]:
    """(requests, responses) rows in a gateway's log database."""
    code = ("import django; django.setup(); from logs.models import Request, Response; "
            "print(Request.objects.count(), Response.objects.count())")
    out = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    req, resp = out.stdout.split()
    return int(req), int(resp)


def all_stop(running: list, data_dirs: list[tuple[Path, dict[str, str]]]) -> None:
    """Stop the started servers, last first, then delete each gateway's temp DATA_DIR (and database)."""
    for server in reversed(running):
        server.stop()
    for data_dir, env in data_dirs:
        gateway_cleanup(data_dir, env)


def gateway_cleanup(data_dir: Path, env: dict[str, str]) -> None:
    """Delete a temp DATA_DIR (and the PostgreSQL database made for it)."""
    shutil.rmtree(data_dir, ignore_errors=True)
    if env.get("DATABASE_URL", "").startswith("postgres"):
        pg_database_drop(env["DATABASE_URL"])
