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

from logs.pipeline.ingest import CPU_IDLE_SUPPORTED, DB_NAME_ENV, cpu_priority_set

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESTART_DELAY = 0.5
# Seconds the oldest line sent and not yet written may wait while the process runs at idle
# priority; past that it runs at normal priority until it has written everything it was sent.
# The age, not the backlog: on a machine whose cores are busy all the time an idle-priority
# process never runs, so a quiet gateway's few lines would never reach any backlog threshold
# and wait for minutes (docs/operations.md). A burst written in time never leaves idle priority.
BOOST_AGE = 0.5
COMMAND = [sys.executable, "-m", "logs.pipeline.ingest"]


def ingest_priority(oldest_age: float | None, *, idle: bool) -> bool:
    """Whether the ingest process should run at idle priority, given its current one.

    oldest_age: seconds the oldest line sent to it and not yet written has waited (None when
    everything is written). Idle until a line has waited BOOST_AGE; normal until caught up.
    """
    if oldest_age is None:
        return True
    if oldest_age >= BOOST_AGE:
        return False
    return idle


def ingest_priority_set(proc: subprocess.Popen, *, idle: bool) -> bool:
    """Change a running ingest process's CPU priority; False if the OS refuses (tests replace this)."""
    return cpu_priority_set(proc.pid, idle=idle)


def ingest_spawn() -> subprocess.Popen:
    """Start an ingest process writing to this worker's database (at normal CPU priority).

    Tests replace this with a runner that keeps the ingest loop in the test process, where the
    test database and per-test settings live; everything else in the pipe stays the same.
    """
    env = {**os.environ, DB_NAME_ENV: str(settings.DATABASES["default"]["NAME"])}
    return subprocess.Popen(COMMAND, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


class IngestPipe:
    """Owns the ingest process; every line sent stays here until the process acks it.

    The process runs only while there is something to write: it starts with the first lines
    (or at once, to replay journals a dead worker left), and retires after
    LOG_INGEST_IDLE_SECONDS without any, so an idle worker costs no second process.

    It starts at normal CPU priority (its start-up is most of its work for the first lines)
    and drops to idle priority once it has written everything sent to it; a line that then
    waits BOOST_AGE raises it to normal until it has caught up again.
    """

    def __init__(self, on_acked: Callable[[list[bool]], None], on_error: Callable[[str], None], *,
                 start: bool = False) -> None:
        self._on_acked = on_acked
        self._on_error = on_error
        # (line, journaled, monotonic time sent), oldest first
        self._inflight: deque[tuple[bytes, bool, float]] = deque()
        self._inflight_lock = threading.Lock()
        self._inflight_changed = threading.Condition(self._inflight_lock)  # wakes the priority watch
        self._pipe_lock = threading.Lock()  # one writer at a time, and no write during a restart
        self._closing = False
        self._boosting = False
        self.idle = False  # the process runs at idle CPU priority
        # The OS refused to raise the process's priority in place (no CAP_SYS_NICE): it was
        # restarted at normal priority instead and stays there until it retires.
        self._pinned_normal = False
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        if start:
            with self._pipe_lock:
                self._start()
        self._watch = threading.Thread(target=self._priority_watch, name="log-ingest-priority", daemon=True)
        self._watch.start()

    def _start(self) -> None:
        """Start a process and its ack reader, and send it every line in flight (caller holds the pipe).

        If it cannot start, the lines stay in flight (and in the journal) for the next try.
        """
        try:
            self.idle = False
            proc = ingest_spawn()
        except OSError as exc:
            log.error("log ingest process could not start, records wait in the journal: %s", exc)
            self._on_error(f"log ingest process could not start: {exc}")
            return
        self._proc = proc
        self._reader = threading.Thread(target=self._acks_read, args=(proc,), name="log-ingest-acks", daemon=True)
        self._reader.start()
        with self._inflight_lock:
            pending = b"".join(line for line, _, _ in self._inflight)
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

    def start_if_stopped(self) -> None:
        """Start a process now if none runs: a first line came, and it starts while its batch gathers."""
        with self._pipe_lock:
            if self._proc is None:
                self._start()

    def send(self, items: list[tuple[bytes, bool]]) -> None:
        """Pass lines on; blocks while the process is busy (never called on the event loop)."""
        with self._pipe_lock:
            sent = time.monotonic()
            with self._inflight_lock:
                if items and not self._inflight:
                    self._inflight_changed.notify()  # the priority watch times the oldest line
                self._inflight.extend((line, journaled, sent) for line, journaled in items)
            if self._proc is None:
                self._start()  # sends these lines with any still in flight
                return
            self._write(b"".join(line for line, _ in items))

    def _priority_watch(self) -> None:
        """Thread body: move the process between idle and normal priority by its oldest line's age.

        This thread runs in the worker, at normal priority: a starved ingest process cannot be
        relied on to notice its own starvation. It never takes the pipe lock, which a send
        blocked on the full pipe of a starved process can hold.
        """
        if not CPU_IDLE_SUPPORTED:
            return  # the process always runs at normal priority
        refused = False  # the last change did not take: wait for the next change of the lines
        while True:
            with self._inflight_changed:
                while True:
                    if self._closing:
                        return
                    age = time.monotonic() - self._inflight[0][2] if self._inflight else None
                    idle = ingest_priority(age, idle=self.idle)
                    if idle != self.idle and not refused:
                        break
                    # At idle priority with lines waiting: until the oldest is BOOST_AGE old.
                    # Otherwise, or after a change that did not take: until the first line
                    # comes or the last one is written.
                    timed = age is not None and self.idle and not refused
                    refused = False
                    self._inflight_changed.wait(BOOST_AGE - age if timed else None)
            refused = not self._priority_apply(idle, age)

    def _priority_apply(self, idle: bool, age: float | None) -> bool:
        """Set the running process's priority; False if it did not take.

        Without the right to raise a process's priority in place, it is restarted at normal
        priority instead, and kept there until it retires (a restart per quiet request would cost
        more than the idle priority saves).
        """
        proc = self._proc
        if proc is None or proc.poll() is not None or (idle and self._pinned_normal):
            return False  # none running (the next one starts at normal priority), or pinned
        if ingest_priority_set(proc, idle=idle):
            self.idle = idle
            log.debug("log ingest process at %s priority (oldest unwritten record: %s)",
                      "idle" if idle else "normal", "none" if age is None else f"{age:.2f}s old")
            return True
        if idle:
            return False
        log.warning("a log record has waited %.1fs for the ingest process at idle priority, which may not be "
                    "raised in place (no CAP_SYS_NICE); restarting it at normal priority", age or 0.0)
        self.idle, self._pinned_normal, self._boosting = False, True, True
        proc.kill()  # the ack reader starts the new one and resends what was not written
        return True

    def retire_if_idle(self) -> None:
        """Let the process exit if everything sent to it is written."""
        with self._pipe_lock:
            proc = self._proc
            if proc is None or self._inflight:
                return
            self._proc = None  # from here on its reader only waits for it to exit
            self._pinned_normal = False
            self._exit_let(proc)

    def _exit_let(self, proc: subprocess.Popen) -> None:
        """Close the process's input, at normal priority: it exits once it has written everything.

        Closing its database connection may be the last one to the file: SQLite then checkpoints
        the WAL and removes it under an exclusive lock, which every reader (the admin, the
        sqlite3 shell, export) must wait for. At idle priority on a busy machine the process
        could hold that lock for seconds, and a reader without a busy timeout fails with
        "database is locked". Raising it fails quietly without CAP_SYS_NICE.
        """
        if self.idle and ingest_priority_set(proc, idle=False):
            self.idle = False
        try:
            proc.stdin.close()
        except (OSError, ValueError):
            pass

    def _acks_read(self, proc: subprocess.Popen) -> None:
        """Thread body: count acks; if the process dies, start a new one and resend what it lost."""
        for line in proc.stdout:
            if line.startswith(b"A "):
                count = int(line[2:])
                with self._inflight_lock:
                    done = [self._inflight.popleft()[1] for _ in range(min(count, len(self._inflight)))]
                    if not self._inflight and not self.idle:
                        self._inflight_changed.notify()  # caught up: back to idle priority
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
        with self._inflight_changed:
            self._inflight_changed.notify()
        # A send blocked on the full pipe of a process that cannot write (a database locked for
        # minutes) holds the pipe lock: killing the process first makes that send fail and let go, or
        # shutdown waited as long as the database stayed locked.
        if abandon and (running := self._proc) is not None:
            running.kill()
        if not self._pipe_lock.acquire(timeout=timeout):
            if (running := self._proc) is not None:
                running.kill()
            self._pipe_lock.acquire()
        try:
            proc = self._proc
            if proc is None:
                return
            if not abandon:
                self._exit_let(proc)
        finally:
            self._pipe_lock.release()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(2.0)
