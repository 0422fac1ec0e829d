"""The worker's end of the ingest process: idle priority first, normal priority once it falls behind."""

import sys
import textwrap
import time

import logs.pipeline.pipe
from logs.pipeline.pipe import IngestPipe
from tests.conftest import REAL_INGEST_SPAWN
from tests.e2e.faults import wait_until

# Stands in for `python -m logs.pipeline.ingest`: never acks (as if starved of CPU), notes its priority
# setting at start and, once its input closes, every line it received.
FAKE_INGEST = textwrap.dedent("""
    import os, sys
    out = sys.argv[1]
    with open(out, "a") as f:
        f.write("start idle=" + os.environ["GATEWAY_INGEST_IDLE"] + "\\n")
    data = sys.stdin.buffer.read()
    with open(out, "a") as f:
        f.write(data.decode())
""")


def _pipe_started(monkeypatch, script: str, notes, errors: list[str] | None = None) -> tuple[IngestPipe, list[bool]]:
    """An IngestPipe running `script` as its ingest process: starved past 3 lines for 0.2 s.

    A real child process, started by the production spawner (tests otherwise run the ingest
    loop in a thread, see tests/conftest.py).
    """
    monkeypatch.setattr(logs.pipeline.pipe, "ingest_spawn", REAL_INGEST_SPAWN)
    monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [sys.executable, "-c", script, str(notes)])
    monkeypatch.setattr(logs.pipeline.pipe, "BACKLOG_BOOST", 3)
    monkeypatch.setattr(logs.pipeline.pipe, "STARVED_SECONDS", 0.2)
    acked: list[bool] = []
    return IngestPipe(acked.extend, (errors if errors is not None else []).append), acked


def test_a_starved_idle_ingest_process_is_replaced_at_normal_priority_and_loses_nothing(tmp_path, monkeypatch):
    notes = tmp_path / "ingest.txt"
    pipe, acked = _pipe_started(monkeypatch, FAKE_INGEST, notes)
    try:
        pipe.send([(b'{"n": 1}\n', True), (b'{"n": 2}\n', True)])
        assert wait_until(lambda: notes.exists() and "start" in notes.read_text(), 10)
        assert pipe.idle
        pipe.send([(b'{"n": 3}\n', True), (b'{"n": 4}\n', False)])  # 4 waiting > 3...
        assert pipe.idle
        time.sleep(0.3)
        pipe.send([])  # ...and still more than 3 after STARVED_SECONDS: replaced
        assert not pipe.idle
        assert wait_until(lambda: notes.exists() and notes.read_text().count("start") == 2, 10)
    finally:
        pipe.close(abandon=False)
    lines = notes.read_text().splitlines()
    assert lines[0] == "start idle=1" and "start idle=0" in lines
    # The replacement received every line the first one never acked, in order.
    assert lines[-4:] == ['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}']
    assert acked == []


# Acks each line as it comes, as a real ingest process with CPU to spare does.
ACKING_INGEST = textwrap.dedent("""
    import os, sys
    with open(sys.argv[1], "a") as f:
        f.write("start\\n")
    for line in sys.stdin.buffer:
        sys.stdout.write("A 1\\n")
        sys.stdout.flush()
""")


def test_a_burst_the_ingest_process_works_through_does_not_replace_it(tmp_path, monkeypatch):
    notes = tmp_path / "ingest.txt"
    pipe, acked = _pipe_started(monkeypatch, ACKING_INGEST, notes)
    try:
        pipe.send([(b'{"n": %d}\n' % n, True) for n in range(10)])  # 10 waiting > 3, for a moment
        assert wait_until(lambda: len(acked) == 10, 10)
        time.sleep(0.3)
        pipe.send([(b'{"n": 10}\n', True)])
        assert wait_until(lambda: len(acked) == 11, 10)
        assert pipe.idle  # still the idle-priority process
    finally:
        pipe.close(abandon=False)
    assert notes.read_text().splitlines() == ["start"]


def test_an_ingest_process_that_cannot_start_loses_nothing_once_one_can(tmp_path, monkeypatch):
    notes, errors = tmp_path / "ingest.txt", []
    pipe, acked = _pipe_started(monkeypatch, ACKING_INGEST, notes, errors)
    monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [str(tmp_path / "no-such-python")])
    try:
        pipe.send([(b'{"n": 1}\n', True), (b'{"n": 2}\n', True)])  # no process: kept, reported, no exception
        assert errors and "could not start" in errors[0] and acked == []
        monkeypatch.setattr(logs.pipeline.pipe, "COMMAND", [sys.executable, "-c", ACKING_INGEST, str(notes)])
        pipe.send([(b'{"n": 3}\n', True)])  # the next lines start one, which gets all three
        assert wait_until(lambda: len(acked) == 3, 10)
    finally:
        pipe.close(abandon=False)
    assert notes.read_text().splitlines() == ["start"]
