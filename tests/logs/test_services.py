"""Turning journal records into rows; replaying a dead process's journal."""

import json
import time
import uuid

import pytest

from logs.journal import Journal, journal_orphans, journal_records
from logs.models import Request, Response
from logs.services import exchange_records_write, orphans_recover

pytestmark = pytest.mark.django_db(transaction=True)


def _req(**extra) -> dict:
    return {"t": "req", "id": uuid.uuid4().hex, "provider": "openai", "endpoint": "/v1/chat/completions",
            "method": "POST", "headers": [["Authorization", "Bearer sk-…abcd"]], "body": None, "body_size": 0,
            "content_type": "application/json", "created": time.time(), **extra}


def test_request_model_and_stream_flag_read_from_body():
    rec = _req(body=json.dumps({"model": "gpt-4o", "stream": True}))
    exchange_records_write([rec])
    row = Request.objects.get(id=rec["id"])
    assert row.model == "gpt-4o" and row.stream_requested


def test_replay_is_idempotent():
    rec = _req()
    resp = {"t": "resp", "id": uuid.uuid4().hex, "request_id": rec["id"], "provider": "openai", "status": 200, "body": "{}",
            "content_type": "application/json", "created": time.time()}
    exchange_records_write([rec, resp])
    exchange_records_write([rec, resp])
    assert Request.objects.count() == 1 and Response.objects.count() == 1


def test_dead_process_journal_replayed_and_unfinished_marked_interrupted(tmp_path):
    journal = Journal(tmp_path, "deadproc")
    done, open_ = _req(instance="deadproc"), _req(instance="deadproc")
    journal.append(done)
    journal.append({"t": "resp", "id": uuid.uuid4().hex, "request_id": done["id"], "provider": "openai", "status": 200,
                    "body": "{}", "content_type": "application/json", "created": time.time()})
    journal.append(open_)
    with open(journal.path, "ab") as f:
        f.write(b'{"t": "req", "id": "torn')  # a crash mid-write leaves a partial line
    journal.close(remove=False)  # the lock goes with the process

    assert orphans_recover(tmp_path, journal_orphans, journal_records) == 3
    assert Response.objects.get(request_id=done["id"]).outcome == "completed"
    interrupted = Response.objects.get(request_id=open_["id"])
    assert interrupted.outcome == "interrupted" and interrupted.is_error
    assert not journal.path.exists()


def test_live_journal_is_not_taken_as_orphan(tmp_path):
    live = Journal(tmp_path, "alive")
    assert list(journal_orphans(tmp_path)) == []
    live.close(remove=True)


def test_gateway_key_label_and_key_fingerprint_stored():
    rec = _req(key_fp="1a2b3c4d5e6f", gateway_key="team-a (fp 0123456789ab)")
    exchange_records_write([rec, _req()])
    row = Request.objects.get(id=rec["id"])
    assert (row.key_fingerprint, row.gateway_key) == ("1a2b3c4d5e6f", "team-a (fp 0123456789ab)")
    assert Request.objects.exclude(id=rec["id"]).get().gateway_key == ""  # no gateway key presented
