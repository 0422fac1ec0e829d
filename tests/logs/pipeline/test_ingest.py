"""The ingest process writes what its worker pipes it, and survives its faults."""

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from logs.ids import exchange_id_new
from logs.models import Request, Response
from logs.pipeline.ingest import ingest_run
from logs.pipeline.pipe import COMMAND
from logs.records import RequestRecord, ResponseRecord, record_line
from tests.e2e.faults import AUTH, CHAT, wait_until
from tests.procs import ROOT, GatewayProcess, db_rows, exchanges_read, migrated_copy, proc_env, sqlite_only


def _pair(n: int) -> list[bytes]:
    """A request record's line and its response record's."""
    rid = exchange_id_new()
    return [record_line(RequestRecord(id=rid, provider="openai", endpoint=f"/v1/n{n}", method="POST", body="{}",
                                      created=time.time(), instance="test")),
            record_line(ResponseRecord(id=exchange_id_new(), request_id=rid, provider="openai", status=200,
                                       body="{}", outcome="completed", created=time.time()))]


@pytest.mark.django_db(transaction=True)
def test_ingest_run_writes_every_line_and_acks_each_one_once(settings):
    read_fd, write_fd = os.pipe()
    acks = io.BytesIO()
    worker = threading.Thread(target=ingest_run, args=(read_fd, acks))
    worker.start()
    lines = [line for n in range(3) for line in _pair(n)]
    refused = _pair(3)[1]  # an answer whose request the database never got
    os.write(write_fd, b"".join(lines[:4]))
    os.write(write_fd, b"not a record\n" + refused + lines[4][:-1])  # the last line comes in two writes
    time.sleep(0.1)
    os.write(write_fd, b"\n" + lines[5])
    os.close(write_fd)  # the worker closed its end: write everything, then return
    worker.join(10)
    os.close(read_fd)
    assert not worker.is_alive()
    answers = acks.getvalue().decode().splitlines()
    assert answers[0] == "R"
    assert sum(int(a[2:]) for a in answers if a.startswith("A ")) == 8  # 6 records + the two kept aside
    assert Request.objects.count() == 3 and Response.objects.count() == 3
    # Acknowledged, so gone from the worker's journal: the lines the database could not take are kept.
    (kept,) = (settings.JOURNAL_DIR / "unreadable").iterdir()
    assert kept.read_bytes() == b"not a record\n" + refused


@sqlite_only
def test_an_ingest_whose_worker_was_killed_writes_what_it_got_and_exits_quietly(tmp_path, tmp_path_factory):
    """kill -9 of a worker closes the pipe its acks go to: no traceback, and the records it had sent
    are still written (the journal would recover them, but need not)."""
    db = migrated_copy(tmp_path / "data", tmp_path_factory)
    proc = subprocess.Popen(COMMAND, cwd=ROOT, env=proc_env(tmp_path / "data", "http://127.0.0.1:9"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"R\n"
    proc.stdout.close()  # the worker is gone: nobody reads the acks
    proc.stdin.write(b"".join(line for n in range(3) for line in _pair(n)))
    proc.stdin.close()
    assert proc.wait(60) == 0
    stderr = proc.stderr.read().decode()
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert db_rows(db, "SELECT count(*) FROM requests") == [(3,)]
    assert db_rows(db, "SELECT count(*) FROM responses") == [(3,)]


def test_the_start_up_imports_only_what_every_record_needs(tmp_path):
    """The first records after a quiet spell wait for this start-up: what only some records need
    (boto3 for an S3 store, httpx for Replicate's output files, other apps) waits for one."""
    probe = ("import gc, sys; from logs.pipeline.ingest import ingest_setup; ingest_setup(); "
             "print(*(m for m in ('logs.pipeline.rows', 'genai_prices', 'boto3', 'httpx', 'django.contrib.contenttypes',"
             " 'django.contrib.auth') if m in sys.modules), 'gc' if gc.isenabled() else 'no-gc')")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=proc_env(tmp_path, "http://127.0.0.1:9"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The row builders and pricing are loaded (what the probe looks for is there to be seen),
    # and garbage collection runs again.
    assert out.stdout.split() == ["logs.pipeline.rows", "genai_prices", "gc"]


@sqlite_only
def test_the_ingest_keeps_its_statement_journals_in_memory_and_only_it(tmp_path):
    """Its batch inserts would otherwise spill their undo pages to a temporary file per batch;
    the gateway's own connections (the admin's sorts) keep SQLite's default."""
    probe = ("from logs.pipeline.ingest import ingest_setup; {setup}; from django.db import connection; "
             "c = connection.cursor(); print(c.execute('PRAGMA temp_store').fetchone()[0], "
             "c.execute('PRAGMA journal_mode').fetchone()[0])")
    env = proc_env(tmp_path, "http://127.0.0.1:9")
    seen = []
    plain = "import os, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'gateway_project.settings'); django.setup()"
    for setup in ("ingest_setup()", plain):
        out = subprocess.run([sys.executable, "-c", probe.format(setup=setup)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        seen.append(out.stdout.split())
    assert seen == [["2", "wal"], ["0", "wal"]]  # 2: MEMORY; the settings' own pragmas still run


def _ingest_children(gw: GatewayProcess) -> list[psutil.Process]:
    """The live ingest processes under the gateway's uvicorn (python -m logs.pipeline.ingest)."""
    found = []
    for p in psutil.Process(gw.proc.pid).children(recursive=True):
        try:
            if p.cmdline()[-2:] == COMMAND[-2:]:
                found.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):  # exited, not reaped yet (or gone)
            pass
    return found


def _chat(url: str) -> str:
    """One chat exchange through the gateway; its request id."""
    r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    return r.headers["x-gateway-request-id"]


@sqlite_only
def test_logs_everything_through_an_ingest_crash_and_a_group_sigterm(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url)
    try:
        first = [_chat(gw.url) for _ in range(5)]
        assert wait_until(lambda: len(exchanges_read(db)) == 5, 10), "the ingest process wrote nothing"
        (ingest,) = _ingest_children(gw)
        # Caught up, it only takes CPU time nobody wants.
        assert wait_until(lambda: os.sched_getscheduler(ingest.pid) == os.SCHED_IDLE, 10)
        ingest.suspend()  # stuck: the next records reach its pipe but not the database...
        second = [_chat(gw.url) for _ in range(5)]
        time.sleep(0.2)
        assert len(exchanges_read(db)) == 5
        ingest.kill()  # ...then it dies: the worker starts a new one and sends it what was unwritten
        assert wait_until(lambda: sum(1 for row in exchanges_read(db).values() if row["response"]) == 10, 15)
        (restarted,) = _ingest_children(gw)
        assert restarted.pid != ingest.pid
        # A service manager stops the whole group: the ingest process ignores SIGTERM and exits
        # only once its worker has flushed.
        third = [_chat(gw.url) for _ in range(3)]
        os.killpg(gw.proc.pid, signal.SIGTERM)
        assert gw.wait(timeout=20) in (0, -signal.SIGTERM)
    finally:
        gw.stop()
    logged = exchanges_read(db)
    assert set(logged) == set(first + second + third)  # every exchange, once
    assert all(row["response"]["outcome"] == "completed" for row in logged.values())
    assert db_rows(db, "SELECT COUNT(*) FROM responses") == [(13,)]
    assert list((data / "journal").glob("*.jsonl")) == []
    assert wait_until(lambda: not psutil.pid_exists(restarted.pid) or restarted.status() == psutil.STATUS_ZOMBIE, 5)
    assert "Traceback" not in gw.stderr()


@sqlite_only
def test_an_ingest_process_runs_only_while_there_is_something_to_write(tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url, LOG_INGEST_IDLE_SECONDS="1")
    try:
        assert _ingest_children(gw) == []  # nothing to write yet: no second process
        first = _chat(gw.url)
        assert wait_until(lambda: first in exchanges_read(db) and exchanges_read(db)[first]["response"], 10)
        (ingest,) = _ingest_children(gw)
        assert wait_until(lambda: _ingest_children(gw) == [], 10), "the idle ingest process did not exit"
        second = _chat(gw.url)  # the next record starts a new one
        assert wait_until(lambda: second in exchanges_read(db) and exchanges_read(db)[second]["response"], 10)
        (again,) = _ingest_children(gw)
        assert again.pid != ingest.pid
    finally:
        assert gw.stop() in (0, -signal.SIGTERM)
    assert set(exchanges_read(db)) == {first, second}
    assert list((data / "journal").glob("*.jsonl")) == []
    assert "Traceback" not in gw.stderr() and "exited with code" not in gw.stderr()


def _reader_loop(db, stop: threading.Event, counts: list[int], errors: list[str]) -> None:
    """What `sqlite3 gateway.db 'select ...'` does with its defaults: open, read, close; no busy timeout."""
    while not stop.is_set():
        conn = sqlite3.connect(db, timeout=0)
        try:
            counts.append(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        except sqlite3.OperationalError as exc:
            errors.append(str(exc))
        finally:
            conn.close()


@sqlite_only
def test_a_reader_without_busy_timeout_is_never_locked_out_while_the_gateway_writes_a_burst(
        tmp_path, tmp_path_factory, mock_upstream):
    data = tmp_path / "data"
    db = migrated_copy(data, tmp_path_factory)
    gw = GatewayProcess(data, mock_upstream.url)
    stop, counts, errors = threading.Event(), [], []
    reader = threading.Thread(target=_reader_loop, args=(db, stop, counts, errors), daemon=True)
    try:
        _chat(gw.url)  # the ingest process is running and has the database open
        assert wait_until(lambda: len(exchanges_read(db)) == 1, 10)
        reader.start()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: _chat(gw.url), range(200)))
        assert wait_until(lambda: db_rows(db, "SELECT COUNT(*) FROM responses") == [(201,)], 30)
    finally:
        stop.set()
        reader.join(10)
        gw.stop()
    assert errors == []  # never "database is locked"
    assert len(set(ids)) == 200 and max(counts) > min(counts)  # it read while the rows were being written


@pytest.mark.django_db(transaction=True)
def test_a_store_that_stays_wrong_is_reported_once_per_error_and_reminded_every_few_minutes(monkeypatch, caplog):
    # A wrong bucket: the same error at each retry (every 2 s) for 6 minutes, then wrong credentials
    # for a few retries, then the store answers. The console hears each error once, the first one again
    # after 5 minutes, and that the store answers again; not a line per retry.
    from logs.pipeline import ingest
    from logs.storage import PayloadStoreUnavailable

    clock = [1000.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

        @staticmethod
        def sleep(seconds: float) -> None:
            clock[0] += seconds

    monkeypatch.setattr(ingest, "time", Clock)
    bucket = "payload store unavailable: ClientError: An error occurred (NoSuchBucket) when calling the PutObject"
    creds = "payload store unavailable: ClientError: An error occurred (InvalidAccessKeyId) when calling the PutObject"
    errors = [bucket] * 200 + [creds] * 3
    calls = []

    def work() -> None:
        calls.append(clock[0])
        if errors:
            raise PayloadStoreUnavailable(errors.pop(0))

    assert ingest.write_retry(work, lambda message: None)
    assert len(calls) == 204 and 300 < clock[0] - calls[0] < 600  # it did retry every 2 s for over 5 minutes
    said = [r.getMessage() for r in caplog.records if r.name == "logs.ingest"]
    assert len(said) == 4, said[:5]  # not one a retry
    first = "log store unavailable, retrying until it answers (said again if the error changes, else every 5 min): "
    assert said == [first + bucket, f"log store still unavailable after 301s, retrying: {bucket}", first + creds,
                    "log store answers again after 397s: the records that waited are written"]


@pytest.mark.django_db(transaction=True)
def test_an_ingest_that_cannot_keep_a_line_aside_goes_on_writing_the_rest(monkeypatch, caplog):
    # DATA_DIR full: the line is lost (said on the console), but the ingest neither dies nor stops acking,
    # which would only have it started again on the same line, for ever.
    from logs.pipeline import journal

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal, "lines_keep_aside", full)
    read_fd, write_fd = os.pipe()
    acks = io.BytesIO()
    os.write(write_fd, b"not a record\n" + b"".join(_pair(0)))
    os.close(write_fd)
    ingest_run(read_fd, acks)
    os.close(read_fd)
    assert sum(int(a[2:]) for a in acks.getvalue().decode().splitlines() if a.startswith("A ")) == 3
    assert Request.objects.count() == 1 and Response.objects.count() == 1
    assert any("not kept aside" in r.getMessage() for r in caplog.records)
