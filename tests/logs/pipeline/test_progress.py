"""A streamed answer's progress file (logs/pipeline/progress.py): written as it passes, read back after a crash."""

import asyncio
import logging

import logs.pipeline.progress
from logs.pipeline.capture import BodyCapture
from logs.pipeline.progress import AnswerProgress, progress_files, progress_read
from logs.records import ResponseRecord
from logs.redaction.scrub import Scrubber

EVENT = b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'


def _progress(directory, head=None, secret="sk-secret-0123456789abcdef"):
    capture = BodyCapture(spool_name="x.response", content_type="text/event-stream", stream=True)
    head = head or (lambda: ResponseRecord(id="r1", request_id="abc", status=200, is_stream=True,
                                           headers=[["content-type", "text/event-stream"]]))
    return capture, AnswerProgress(capture, Scrubber([secret]), head)


def test_events_are_written_whole_and_masked_and_read_back(tmp_path):
    async def run():
        capture, progress = _progress(tmp_path)
        progress.start(directory=tmp_path, instance="w1")
        capture.feed(EVENT + b'data: {"echo": "sk-secret-0123456789abcdef"}\n\n' + b"data: {\"half")
        progress.flush()
        return progress

    progress = asyncio.run(run())
    [(rid, path)] = list(progress_files(tmp_path, "w1"))
    got = progress_read(path)
    assert rid == "abc" and got.head.status == 200
    assert got.body.startswith(EVENT.decode()) and got.body.endswith("\n\n")  # the unfinished event waits
    assert "sk-secret-0123456789abcdef" not in path.read_text()  # masked before it is written
    assert len(got.event_offsets_ms) == 2
    progress.close()
    assert not path.exists()


def test_a_folder_that_cannot_be_written_warns_once_a_minute_not_per_stream(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(logs.pipeline.progress._warned, "at", -1e9)  # no warning of an earlier test pending
    blocker = tmp_path / "journal"
    blocker.write_text("a file where the folder should be")

    async def run():
        for _ in range(5):
            capture, progress = _progress(blocker)
            progress.start(directory=blocker, instance="w1")
            progress.flush()  # the stream went on past PROGRESS_EVERY: its file is due

    with caplog.at_level(logging.WARNING, logger="logs.pipeline.progress"):
        asyncio.run(run())
    warned = [r.getMessage() for r in caplog.records if r.name == "logs.pipeline.progress"]
    assert len(warned) == 1 and "not written" in warned[0]  # the first failure says so, the next four wait


def test_a_full_disk_mid_stream_keeps_what_was_written_until_the_answer_ends(tmp_path, monkeypatch):
    import os as os_module

    async def run():
        capture, progress = _progress(tmp_path)
        progress.start(directory=tmp_path, instance="w1")
        capture.feed(EVENT)
        progress.flush()
        monkeypatch.setattr(os_module, "write", lambda fd, data: len(data) // 2)  # ENOSPC after half
        capture.feed(EVENT)
        progress.flush()
        monkeypatch.undo()
        return progress

    progress = asyncio.run(run())
    [(_, path)] = list(progress_files(tmp_path, "w1"))
    got = progress_read(path)  # what a crash now would leave: the head and the first event
    assert got.head.status == 200 and got.body == EVENT.decode()
    progress.close()
    assert not path.exists()


def test_a_stream_that_ends_within_the_first_interval_writes_no_file(tmp_path):
    """Most streams end within PROGRESS_EVERY: they cost a timer, not a file (its record built, opened, written,
    removed cost a fifth more of the worker's CPU per short stream)."""
    built = []

    async def run():
        capture, progress = _progress(tmp_path, head=lambda: built.append(1) or ResponseRecord(id="r1",
                                                                                                request_id="abc",
                                                                                                status=200))
        progress.start(directory=tmp_path, instance="w1")
        capture.feed(EVENT)
        progress.tick()
        progress.close()  # the answer ended and its own record is journaled
        await asyncio.sleep(logs.pipeline.progress.PROGRESS_EVERY + 0.1)  # no timer left to fire

    asyncio.run(run())
    assert built == [] and list(progress_files(tmp_path, "w1")) == []
