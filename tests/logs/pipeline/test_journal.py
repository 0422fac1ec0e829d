"""The write-ahead journal: whole lines, truncation when committed, pending counts across processes."""

import json
import os

import pytest

from logs.pipeline.journal import (Journal, journal_counters_prune, journal_lines, journal_orphans,
                                   journal_pending_total)
from logs.records import RequestRecord, record_line, record_parse
from logs.redaction.scrub import text_forms
from wire.jsonutil import json_line


@pytest.fixture
def jdir(tmp_path):
    """An empty journal folder."""
    d = tmp_path / "j"
    d.mkdir()
    return d


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_on_disk_until_committed(jdir):
    j = Journal(jdir, "live")
    for i in range(3):
        j.append(json_line({"t": "req", "n": i}))
    assert [r["n"] for r in _lines(j.path)] == [0, 1, 2] and j.pending == 3
    assert journal_pending_total(jdir) == 3
    j.commit(2)
    assert j.pending == 1 and journal_pending_total(jdir) == 1
    assert j.path.stat().st_size > 0  # a record is still waiting: the file keeps everything
    j.commit(1)
    assert j.pending == 0 and j.path.stat().st_size == 0 and journal_pending_total(jdir) == 0
    j.append(json_line({"n": 3}))  # counting restarts with the emptied file
    assert journal_pending_total(jdir) == 1
    j.commit(1)
    j.close(remove=True)
    assert list(jdir.iterdir()) == []


def test_pending_total_sums_live_and_dead_journals(jdir):
    live = Journal(jdir, "live")
    live.append(json_line({"n": 1}))
    live.append(json_line({"n": 2}))
    live.commit(1)
    (jdir / "dead.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": 3}\n')  # a crashed process's file
    assert journal_pending_total(jdir) == 1 + 3
    live.close(remove=False)


def test_orphans_are_only_journals_without_a_live_owner(jdir):
    live = Journal(jdir, "live")
    (jdir / "dead.jsonl").write_text('{"n": 1}\n')
    found = list(journal_orphans(jdir))
    assert [name for name, _, _ in found] == ["dead"]
    for _, _, fd in found:
        os.close(fd)
    live.close(remove=True)


def test_torn_last_line_is_skipped_and_the_console_says_so(jdir, caplog):
    path = jdir / "x.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "par')  # killed mid-write
    with caplog.at_level("WARNING", logger="logs.pipeline.journal"):
        assert journal_lines(path) == [b'{"n": 1}\n', b'{"n": 2}\n']
    assert [r.getMessage() for r in caplog.records] == [
        "log journal x.jsonl ends on an unfinished record (13 bytes, cut off by a crash): left out"]


def test_counters_of_replayed_journals_are_pruned(jdir):
    j = Journal(jdir, "gone")
    j.close(remove=False)
    j.path.unlink()  # replayed and removed by the recovery
    assert journal_counters_prune(jdir) == 1
    assert list(jdir.iterdir()) == []


def test_any_text_survives_the_journal_and_its_forms_are_found(jdir):
    texts = ["héllo “quoted” \\ back", "emoji 🙂 and \u2028 separator", "ctrl \x01\x1f tab\t", "lone \ud800 surrogate"]
    j = Journal(jdir, "live")
    for text in texts:
        j.append(record_line(RequestRecord(id="r", body=text, body_size=2**70)))  # orjson refuses both: json does
    records = [record_parse(line) for line in journal_lines(j.path)]
    assert [r.body for r in records] == texts and {r.body_size for r in records} == {2**70}
    for text in texts:  # how line_scrub spots a secret in a line without walking the record
        assert any(form in record_line(RequestRecord(id="r", body=f"x{text}y")) for form in text_forms(text))
    j.close(remove=False)
