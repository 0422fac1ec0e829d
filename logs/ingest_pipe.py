"""A worker's end of its log-ingest process (logs/ingest.py): send lines, read acks, restart it."""

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

from logs.ingest import DB_NAME_ENV, IDLE_ENV

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RESTART_DELAY = 0.5
# Lines sent and not yet written past which the idle-priority process counts as starved (a
# machine busy all the time): it is replaced by one at normal priority, for good.
BACKLOG_BOOST = 5000
COMMAND = [sys.executable, "-m", "logs.ingest"]


class IngestPipe:
    """Owns the ingest process; every line sent stays here until the process acks it."""

    def __init__(self, on_acked: Callable[[list[bool]], None], on_error: Callable[[str], None]) -> None:
        self._on_acked = on_acked
        self._on_error = on_error
        self._inflight: deque[tuple[bytes, bool]] = deque()  # (line, journaled), oldest first
        self._inflight_lock = threading.Lock()
        self._pipe_lock = threading.Lock()  # one writer at a time, and no write during a restart
        self._closing = False
        self._boosting = False
        self.idle = True  # the process runs at idle CPU priority (until it falls behind)
        self._proc = self._spawn()
        self._reader = threading.Thread(target=self._acks_read, name="log-ingest-acks", daemon=True)
        self._reader.start()

    def _spawn(self) -> subprocess.Popen:
        """Start `python -m logs.ingest` with this process's settings and database."""
        env = {**os.environ, DB_NAME_ENV: str(settings.DATABASES["default"]["NAME"]),
               IDLE_ENV: "1" if self.idle else "0"}
        return subprocess.Popen(COMMAND, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(self, items: list[tuple[bytes, bool]]) -> None:
        """Pass lines on; blocks while the process is busy (never called on the event loop)."""
        with self._pipe_lock:
            with self._inflight_lock:
                self._inflight.extend(items)
                backlog = len(self._inflight)
            if self.idle and backlog > BACKLOG_BOOST:
                self._boost(backlog)
            try:
                self._proc.stdin.write(b"".join(line for line, _ in items))
                self._proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the process is gone: the ack reader restarts it and sends everything again

    def _boost(self, backlog: int) -> None:
        """Replace the starved idle-priority process by one at normal priority (caller holds the pipe)."""
        log.warning("log ingest at idle priority is %d records behind; restarting it at normal priority", backlog)
        self.idle = False
        self._boosting = True
        self._proc.kill()  # the ack reader starts the new one and resends what was not written

    def _acks_read(self) -> None:
        """Thread body: count acks; if the process dies, start a new one and resend what it lost."""
        while True:
            proc = self._proc
            for line in proc.stdout:
                if line.startswith(b"A "):
                    count = int(line[2:])
                    with self._inflight_lock:
                        done = [self._inflight.popleft()[1] for _ in range(min(count, len(self._inflight)))]
                    self._on_acked(done)
                elif line.startswith(b"E "):
                    self._on_error(line[2:].decode("utf-8", "replace").strip())
            proc.wait()
            if self._closing:
                return
            if not self._boosting:
                log.error("log ingest process exited with code %s; starting a new one", proc.returncode)
            self._boosting = False
            time.sleep(RESTART_DELAY)
            with self._pipe_lock:
                if self._closing:
                    return
                self._proc = self._spawn()
                with self._inflight_lock:
                    lost = b"".join(line for line, _ in self._inflight)
                try:  # written again: the database ignores rows it already has
                    self._proc.stdin.write(lost)
                    self._proc.stdin.flush()
                except (OSError, ValueError):
                    pass

    def close(self, *, abandon: bool, timeout: float = 10.0) -> None:
        """Let the process write what it has and exit; with abandon, stop it at once."""
        self._closing = True
        with self._pipe_lock:
            if abandon:
                self._proc.kill()
            else:
                try:
                    self._proc.stdin.close()
                except (OSError, ValueError):
                    pass
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(2.0)
