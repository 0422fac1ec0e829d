"""The worker's end of the ingest process: idle priority, normal while a line has waited too long."""

import sys
import textwrap

import psutil
import pytest

import logs.pipeline.pipe
from logs.pipeline.pipe import BOOST_AGE, IngestPipe, ingest_priority
from tests.conftest import REAL_INGEST_SPAWN
from tests.e2e.faults import wait_until

# Stands in for `python -m logs.pipeline.ingest`: acks each line as it comes, as a real ingest
# process with CPU to spare does; notes each start and, once its input closes, every line it got.
ACKING_INGEST = textwrap.dedent("""
    import os, sys
    with open(sys.argv[1], "a") as f:
        f.write("start\\n")
    got = []
    for line in sys.stdin.buffer:
        got.append(line.decode())
        sys.stdout.write("A 1\\n")
        sys.stdout.flush()
    with open(sys.argv[1], "a") as f:
        f.write("".join(got))
""")


def _pipe_started(monkeypatch, script: str, notes, errors: list[str] | None = None,
                  raise_allowed: bool = True) -> tuple[IngestPipe, list[bool], list[tuple[int, bool]]]:
    """An IngestPipe running `script` as its ingest process, raised once a line waits 0.05 s.

    A real child process, started by the production spawner (tests otherwise run the ingest
    loop in a thread, see tests/conftest.py). Priority changes are recorded, not made (raising
    one needs CAP_SYS_NICE); with raise_allowed=False, raising is refused as without it.
    """
    monkeypatch.setattr(logs.pipeline.pipe, "ingest_spawn", REAL_INGEST_SPAWN)
    monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [sys.executable, "-c", script, str(notes)])
    monkeypatch.setattr(logs.pipeline.pipe, "BOOST_AGE", 0.05)
    changes: list[tuple[int, bool]] = []

    def priority_set(proc, *, idle: bool) -> bool:
        changes.append((proc.pid, idle))
        return idle or raise_allowed

    monkeypatch.setattr(logs.pipeline.pipe, "ingest_priority_set", priority_set)
    acked: list[bool] = []
    return IngestPipe(acked.extend, (errors if errors is not None else []).append), acked, changes


@pytest.mark.parametrize(("oldest_age", "idle", "expected"), [
    (None, False, True),   # everything written: idle priority
    (None, True, True),
    (0.1, True, True),     # a line waits a moment: still idle
    (0.6, True, False),    # a line has waited past BOOST_AGE: normal priority...
    (0.1, False, False),   # ...until everything is written, even if the oldest line is now recent
])
def test_ingest_priority_follows_the_age_of_the_oldest_unwritten_line(oldest_age, idle, expected):
    assert BOOST_AGE == 0.5
    assert ingest_priority(oldest_age, idle=idle) is expected


def test_a_starved_ingest_process_is_raised_to_normal_priority_until_it_catches_up(tmp_path, monkeypatch):
    notes = tmp_path / "ingest.txt"
    pipe, acked, changes = _pipe_started(monkeypatch, ACKING_INGEST, notes)
    try:
        pipe.send([(b'{"n": 1}\n', True), (b'{"n": 2}\n', True)])
        assert wait_until(lambda: len(acked) == 2 and pipe.idle, 10)  # started at normal, idle once caught up
        proc = psutil.Process(pipe._proc.pid)
        assert changes == [(proc.pid, True)]
        proc.suspend()  # starved: it gets no CPU at all
        pipe.send([(b'{"n": 3}\n', True), (b'{"n": 4}\n', False)])
        assert wait_until(lambda: not pipe.idle, 10)  # the oldest line waited BOOST_AGE: raised
        assert changes[-1] == (proc.pid, False)
        proc.resume()
        assert wait_until(lambda: len(acked) == 4 and pipe.idle, 10)  # caught up: idle again
    finally:
        pipe.close(abandon=False)
    # ...and raised again to exit: its last database connection closes at normal priority.
    assert changes == [(proc.pid, True), (proc.pid, False), (proc.pid, True), (proc.pid, False)]
    assert notes.read_text().splitlines() == ["start", '{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']


def test_a_burst_the_ingest_process_works_through_leaves_it_at_idle_priority(tmp_path, monkeypatch):
    notes = tmp_path / "ingest.txt"
    pipe, acked, changes = _pipe_started(monkeypatch, ACKING_INGEST, notes)
    monkeypatch.setattr(logs.pipeline.pipe, "BOOST_AGE", 60.0)
    try:
        pipe.send([(b'{"n": 0}\n', True)])
        assert wait_until(lambda: len(acked) == 1 and pipe.idle, 10)
        pipe.send([(b'{"n": %d}\n' % n, True) for n in range(1, 200)])
        assert wait_until(lambda: len(acked) == 200, 10)
    finally:
        pipe.close(abandon=False)
    assert [idle for _, idle in changes] == [True, False]  # never raised for the burst, only to exit
    assert notes.read_text().splitlines()[0] == "start" and notes.read_text().count("start") == 1


def test_an_ingest_process_retiring_at_idle_priority_is_raised_to_exit(tmp_path, monkeypatch):
    # Its last database connection may be the file's last: closing it takes an exclusive lock
    # that readers wait for, so it must not be starved then.
    notes = tmp_path / "ingest.txt"
    pipe, acked, changes = _pipe_started(monkeypatch, ACKING_INGEST, notes)
    try:
        pipe.send([(b'{"n": 1}\n', True)])
        assert wait_until(lambda: len(acked) == 1 and pipe.idle, 10)
        proc = pipe._proc
        pipe.retire_if_idle()
        assert proc.wait(10) == 0
    finally:
        pipe.close(abandon=False)
    assert changes == [(proc.pid, True), (proc.pid, False)]


def test_without_the_right_to_raise_it_a_starved_ingest_process_is_restarted_at_normal_priority(
        tmp_path, monkeypatch):
    notes = tmp_path / "ingest.txt"
    pipe, acked, changes = _pipe_started(monkeypatch, ACKING_INGEST, notes, raise_allowed=False)
    try:
        pipe.send([(b'{"n": 1}\n', True)])
        assert wait_until(lambda: len(acked) == 1 and pipe.idle, 10)
        first = psutil.Process(pipe._proc.pid)
        first.suspend()
        pipe.send([(b'{"n": 2}\n', True), (b'{"n": 3}\n', True)])
        assert wait_until(lambda: len(acked) == 3, 10)  # a new process, at normal priority, wrote them
        assert pipe._proc.pid != first.pid and not pipe.idle
        pipe.send([(b'{"n": 4}\n', True)])
        assert wait_until(lambda: len(acked) == 4, 10)
    finally:
        pipe.close(abandon=False)
    # Lowered once, refused once, then left at normal priority (a restart per quiet line costs more).
    assert changes == [(first.pid, True), (first.pid, False)]
    lines = notes.read_text().splitlines()
    assert lines.count("start") == 2 and lines[-3:] == ['{"n": 2}', '{"n": 3}', '{"n": 4}']


def test_an_ingest_process_that_cannot_start_loses_nothing_once_one_can(tmp_path, monkeypatch):
    notes, errors = tmp_path / "ingest.txt", []
    pipe, acked, _ = _pipe_started(monkeypatch, ACKING_INGEST, notes, errors)
    monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [str(tmp_path / "no-such-python")])
    try:
        pipe.send([(b'{"n": 1}\n', True), (b'{"n": 2}\n', True)])  # no process: kept, reported, no exception
        assert errors and "could not start" in errors[0] and acked == []
        monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [sys.executable, "-c", ACKING_INGEST, str(notes)])
        pipe.send([(b'{"n": 3}\n', True)])  # the next lines start one, which gets all three
        assert wait_until(lambda: len(acked) == 3, 10)
    finally:
        pipe.close(abandon=False)
    assert notes.read_text().splitlines() == ["start", '{"n": 1}', '{"n": 2}', '{"n": 3}']


# Stands in for an ingest process that cannot write (its database locked for minutes): it reads nothing,
# so the pipe fills and a send blocks, holding the pipe's lock.
STUCK_INGEST = "import time\ntime.sleep(600)\n"


def test_shutdown_does_not_wait_for_a_send_blocked_on_a_stuck_ingest_process(tmp_path, monkeypatch):
    import threading

    pipe, _, _ = _pipe_started(monkeypatch, STUCK_INGEST, tmp_path / "notes")
    line = b'{"n": "' + b"x" * 4000 + b'"}\n'
    sender = threading.Thread(target=pipe.send, args=([(line, True)] * 100,), daemon=True)  # 400 KB: blocks
    sender.start()
    assert wait_until(lambda: pipe._pipe_lock.locked(), 10)
    sender.join(0.5)
    assert sender.is_alive()  # blocked on the full pipe, holding the lock
    closing = threading.Thread(target=pipe.close, kwargs={"abandon": True}, daemon=True)
    closing.start()
    closing.join(15)  # it waited as long as the process stayed stuck
    assert not closing.is_alive() and not sender.is_alive()
