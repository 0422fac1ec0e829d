"""A worker's end of its log-ingest process (logs/pipeline/ingest.py): send lines, read acks, restart it."""

import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from logs.pipeline.ingest import DB_NAME_ENV, IDLE_ENV

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESTART_DELAY = 0.5
# Lines sent and not yet written past which, for STARVED_SECONDS on end, the idle-priority
# process counts as starved (a machine busy all the time): it is replaced by one at normal
# priority, for good. A burst it works through in time is not starvation: replacing it then
# cost a second of restart (the log-write probe's throughput halved, docs/benchmark.md).
BACKLOG_BOOST = 5000
STARVED_SECONDS = 2.0
COMMAND = [sys.executable, "-m", "logs.pipeline.ingest"]


def ingest_spawn(idle: bool) -> subprocess.Popen:
    """Start an ingest process writing to this worker's database (at idle CPU priority if `idle`).

    Tests replace this with a runner that keeps the ingest loop in the test process, where the
    test database and per-test settings live; everything else in the pipe stays the same.
    """
    env = {**os.environ, DB_NAME_ENV: str(settings.DATABASES["default"]["NAME"]), IDLE_ENV: "1" if idle else "0"}
    return subprocess.Popen(COMMAND, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


class IngestPipe:
    """Owns the ingest process; every line sent stays here until the process acks it.

    The process runs only while there is something to write: it starts with the first lines
    (or at once, to replay journals a dead worker left), and retires after
    LOG_INGEST_IDLE_SECONDS without any, so an idle worker costs no second process.
    """

    def __init__(self, on_acked: Callable[[list[bool]], None], on_error: Callable[[str], None], *,
                 start: bool = False) -> None:
        self._on_acked = on_acked
        self._on_error = on_error
        self._inflight: deque[tuple[bytes, bool]] = deque()  # (line, journaled), oldest first
        self._inflight_lock = threading.Lock()
        self._pipe_lock = threading.Lock()  # one writer at a time, and no write during a restart
        self._closing = False
        self._boosting = False
        self.idle = True  # the process runs at idle CPU priority (until it falls behind)
        self._behind_since = 0.0  # monotonic time the backlog went over BACKLOG_BOOST (0: it is not)
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        if start:
            with self._pipe_lock:
                self._start()

    def _start(self) -> None:
        """Start a process and its ack reader, and send it every line in flight (caller holds the pipe).

        If it cannot start, the lines stay in flight (and in the journal) for the next try.
        """
        try:
            proc = ingest_spawn(self.idle)
        except OSError as exc:
            log.error("log ingest process could not start, records wait in the journal: %s", exc)
            self._on_error(f"log ingest process could not start: {exc}")
            return
        self._proc = proc
        self._reader = threading.Thread(target=self._acks_read, args=(proc,), name="log-ingest-acks", daemon=True)
        self._reader.start()
        with self._inflight_lock:
            pending = b"".join(line for line, _ in self._inflight)
        self._write(pending)

    def _write(self, data: bytes) -> None:
        """Write to the process's input (caller holds the pipe)."""
        if not data:
            return
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the process is gone: the ack reader starts another and sends everything again

    def send(self, items: list[tuple[bytes, bool]]) -> None:
        """Pass lines on; blocks while the process is busy (never called on the event loop)."""
        with self._pipe_lock:
            with self._inflight_lock:
                self._inflight.extend(items)
                backlog = len(self._inflight)
            if self._proc is None:
                self._start()  # sends these lines with any still in flight
                return
            if self.idle and backlog > BACKLOG_BOOST:
                now = time.monotonic()
                self._behind_since = self._behind_since or now
                if now - self._behind_since >= STARVED_SECONDS:
                    self._boost(backlog)
            else:
                self._behind_since = 0.0
            self._write(b"".join(line for line, _ in items))

    def _boost(self, backlog: int) -> None:
        """Replace the starved idle-priority process by one at normal priority (caller holds the pipe)."""
        log.warning("log ingest at idle priority is %d records behind; restarting it at normal priority", backlog)
        self.idle = False
        self._boosting = True
        self._proc.kill()  # the ack reader starts the new one and resends what was not written

    def retire_if_idle(self) -> None:
        """Let the process exit if everything sent to it is written."""
        with self._pipe_lock:
            proc = self._proc
            if proc is None or self._inflight:
                return
            self._proc = None  # from here on its reader only waits for it to exit
            try:
                proc.stdin.close()  # it has nothing left to write: it exits at once
            except (OSError, ValueError):
                pass

    def _acks_read(self, proc: subprocess.Popen) -> None:
        """Thread body: count acks; if the process dies, start a new one and resend what it lost."""
        for line in proc.stdout:
            if line.startswith(b"A "):
                count = int(line[2:])
                with self._inflight_lock:
                    done = [self._inflight.popleft()[1] for _ in range(min(count, len(self._inflight)))]
                self._on_acked(done)
            elif line.startswith(b"E "):
                self._on_error(line[2:].decode("utf-8", "replace").strip())
        proc.wait()
        if self._closing or proc is not self._proc:  # closed, or retired while idle
            return
        if not self._boosting:
            log.error("log ingest process exited with code %s; starting a new one", proc.returncode)
        self._boosting = False
        time.sleep(RESTART_DELAY)
        with self._pipe_lock:
            if self._closing or proc is not self._proc:
                return
            self._proc = None
            self._start()  # rows already written are skipped by the database

    def close(self, *, abandon: bool, timeout: float = 10.0) -> None:
        """Let the process write what it has and exit; with abandon, stop it at once."""
        self._closing = True
        with self._pipe_lock:
            proc = self._proc
            if proc is None:
                return
            if abandon:
                proc.kill()
            else:
                try:
                    proc.stdin.close()
                except (OSError, ValueError):
                    pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(2.0)
