"""replay_journal DATA_DIR: an instance's leftover journal (and spooled bodies) written into the log, once."""

import hashlib
import time

import pytest
from django.core.management import CommandError, call_command

from logs.ids import exchange_id_new
from logs.models import BinaryFile, Request, Response
from logs.pipeline.journal import Journal
from logs.records import FileRef, RequestRecord, ResponseRecord, record_line
from tests.logs.factory import stored as payload

pytestmark = pytest.mark.django_db(transaction=True)


def _left_behind(data_dir, body: bytes) -> tuple[str, str]:
    """A journal of a dead instance: one finished exchange with a spooled answer, one unfinished."""
    (data_dir / "journal").mkdir(parents=True)
    (data_dir / "spool").mkdir()
    done, cut = exchange_id_new(), exchange_id_new()
    (data_dir / "spool" / f"{done}.resp").write_bytes(body)
    ref = FileRef(spool=f"{done}.resp", size=len(body), sha256=hashlib.sha256(body).hexdigest(),
                  content_type="audio/mpeg")
    now = time.time()
    j = Journal(data_dir / "journal", "gone-host-1")
    for rec in (RequestRecord(id=done, provider="openai", endpoint="/v1/audio/speech", method="POST", body="{}",
                              created=now, instance="gone-host-1"),
                ResponseRecord(id=exchange_id_new(), request_id=done, provider="openai", status=200,
                               content_type="audio/mpeg", body_size=len(body), body_file=ref, created=now),
                RequestRecord(id=cut, provider="openai", endpoint="/v1/chat/completions", method="POST", body="{}",
                              created=now, instance="gone-host-1")):
        j.append(record_line(rec))
    j.close(remove=False)  # the process died: its journal stays, unlocked
    return done, cut


def test_a_dead_instances_journal_is_written_once(tmp_path, capsys):
    body = b"ID3" + b"\x01" * 5000
    done, cut = _left_behind(tmp_path / "host-a", body)
    call_command("replay_journal", str(tmp_path / "host-a"))
    assert "replayed 3 records" in capsys.readouterr().out
    assert Response.objects.get(request_id=done).outcome == "completed"
    assert Response.objects.get(request_id=cut).outcome == "interrupted"
    (stored,) = BinaryFile.objects.filter(request_id=done)
    assert stored.sha256 == hashlib.sha256(body).hexdigest() and payload(stored.file.name) == body
    call_command("replay_journal", str(tmp_path / "host-a"))  # again: nothing twice
    assert "replayed 0 records" in capsys.readouterr().out
    assert Request.objects.count() == 2 and Response.objects.count() == 2 and BinaryFile.objects.count() == 1


def test_a_folder_without_a_journal_is_refused(tmp_path):
    with pytest.raises(CommandError, match="no journal folder"):
        call_command("replay_journal", str(tmp_path))


def test_lines_that_cannot_be_written_are_kept_aside_byte_for_byte(tmp_path, caplog):
    # A good record, a line this version cannot read (a newer version's, a corrupted block) and an
    # answer the database refuses (its request is in no journal): the good one is written, the other
    # two wait in journal/unreadable/ exactly as they were journaled, and the console says where.
    journal = tmp_path / "host-b" / "journal"
    journal.mkdir(parents=True)
    (tmp_path / "host-b" / "spool").mkdir()
    good = exchange_id_new()
    now = time.time()
    corrupt = b'{"t": "req", "id": "\xff\xfe torn by a bad disk block\n'
    refused = record_line(ResponseRecord(id=exchange_id_new(), request_id=exchange_id_new(), provider="openai",
                                         status=200, created=now))
    j = Journal(journal, "gone-host-2")
    for line in (record_line(RequestRecord(id=good, provider="openai", endpoint="/v1/chat/completions",
                                           method="POST", body="{}", created=now, instance="gone-host-2")),
                 corrupt, refused):
        j.append(line)
    j.close(remove=False)
    call_command("replay_journal", str(tmp_path / "host-b"))
    assert Request.objects.filter(id=good).exists()
    kept = journal / "unreadable" / "gone-host-2.jsonl"
    assert kept.read_bytes() == corrupt + refused
    assert kept.stat().st_mode & 0o777 == 0o600
    assert any(str(kept) in r.getMessage() and "2 log journal line(s)" in r.getMessage() for r in caplog.records)
