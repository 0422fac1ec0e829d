"""Turning journal records into rows; replaying a dead process's journal."""

import json
import time
import uuid
from datetime import datetime, timezone

import pytest

from logs.ids import exchange_id_new
from logs.models import BinaryFile, Request, Response
from logs.pipeline.bulk import chunk_sizes, row_new, row_values
from logs.pipeline.journal import Journal, journal_orphans
from logs.pipeline.recovery import orphans_recover
from logs.pipeline.rows import records_write, request_row, response_row
from logs.records import RequestRecord, ResponseRecord, record_line
from providers import registry

pytestmark = pytest.mark.django_db(transaction=True)
OPENAI = registry().get("openai")


def _req(**extra) -> RequestRecord:
    fields = {"endpoint": "/v1/chat/completions", "method": "POST", "headers": [["Authorization", "Bearer sk-…abcd"]],
              "body": None, "body_size": 0, "content_type": "application/json", "created": time.time(), **extra}
    return RequestRecord(id=exchange_id_new(), provider="openai", **fields)


def _done(req: RequestRecord) -> ResponseRecord:
    """A plain 200 answer to a request."""
    return ResponseRecord(id=exchange_id_new(), request_id=req.id, provider="openai", status=200, body="{}",
                          content_type="application/json", created=time.time())


def test_request_model_and_stream_flag_read_from_body():
    rec = _req(body=json.dumps({"model": "gpt-4o", "stream": True}))
    records_write([rec])
    row = Request.objects.get(id=rec.id)
    assert row.model == "gpt-4o" and row.stream_requested


def test_replay_is_idempotent():
    rec = _req()
    resp = _done(rec)
    records_write([rec, resp])
    records_write([rec, resp])
    assert Request.objects.count() == 1 and Response.objects.count() == 1


@pytest.mark.parametrize("count,cap", [(1, 256), (77, 256), (256, 256), (600, 256), (1000, 999), (9, 3), (0, 256)])
def test_chunk_sizes_cover_every_row_in_few_distinct_statement_sizes(count, cap):
    sizes = chunk_sizes(count, cap)
    assert sum(sizes) == count
    assert all(size <= cap and size & (size - 1) == 0 for size in sizes)  # powers of two within the cap
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) <= cap.bit_length()


def test_a_batch_of_odd_size_is_written_whole_and_once():
    records = []
    for _ in range(301):  # 256 + 32 + 8 + 4 + 1 rows per table
        rec = _req()
        records += [rec, _done(rec)]
    records_write(records)
    records_write(records[:77])  # a replay of part of it adds nothing
    assert Request.objects.count() == 301 and Response.objects.count() == 301
    assert set(Response.objects.values_list("request_id", flat=True)) == set(Request.objects.values_list("id", flat=True))


def test_dead_process_journal_replayed_and_unfinished_marked_interrupted(tmp_path):
    journal = Journal(tmp_path, "deadproc")
    done, open_ = _req(instance="deadproc"), _req(instance="deadproc")
    journal.append(record_line(done))
    journal.append(record_line(_done(done)))
    journal.append(record_line(open_))
    with open(journal.path, "ab") as f:
        f.write(b'{"t": "req", "id": "torn')  # a crash mid-write leaves a partial line
    journal.close(remove=False)  # the lock goes with the process

    assert orphans_recover(tmp_path) == 3
    assert Response.objects.get(request_id=done.id).outcome == "completed"
    interrupted = Response.objects.get(request_id=open_.id)
    assert interrupted.outcome == "interrupted" and interrupted.is_error
    assert not journal.path.exists()


def test_a_record_the_database_rejects_does_not_hold_back_a_dead_journals_others(tmp_path):
    # An answer whose request line is gone (corrupted by hand, a disk error): its FOREIGN KEY failure
    # was retried every 2 s for ever, none of the journal's other exchanges ever written.
    journal = Journal(tmp_path, "deadproc")
    good, lost = _req(instance="deadproc"), _req(instance="deadproc")
    journal.append(record_line(good))
    journal.append(b'\xff\xfe{garbage\n')  # lost's request line, as found
    journal.append(record_line(_done(lost)))
    journal.append(record_line(_done(good)))
    journal.close(remove=False)

    orphans_recover(tmp_path)
    assert Response.objects.get(request_id=good.id).outcome == "completed"
    assert not Request.objects.filter(id=lost.id).exists() and not journal.path.exists()


def test_live_journal_is_not_taken_as_orphan(tmp_path):
    live = Journal(tmp_path, "alive")
    assert list(journal_orphans(tmp_path)) == []
    live.close(remove=True)


def test_gateway_key_label_and_key_fingerprint_stored():
    rec = _req(key_fp="1a2b3c4d5e6f", gateway_key="team-a (fp 0123456789ab)")
    records_write([rec, _req()])
    row = Request.objects.get(id=rec.id)
    assert (row.key_fingerprint, row.gateway_key) == ("1a2b3c4d5e6f", "team-a (fp 0123456789ab)")
    assert Request.objects.exclude(id=rec.id).get().gateway_key == ""  # no gateway key presented


def _resp(req: RequestRecord, **extra) -> ResponseRecord:
    fields = {"status": 200, "headers": [["content-type", "application/json"]], "content_type": "application/json",
              "is_stream": False, "duration_ms": 12.5, "ttfb_ms": 3.25, "outcome": "completed", "error": "",
              "created": time.time(), **extra}
    return ResponseRecord(id=exchange_id_new(), request_id=req.id, provider="openai", **fields)


USAGE_BODY = json.dumps({"model": "gpt-4o-mini-2024-07-18", "choices": [{"message": {"content": "hé"}}],
                         "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}})


@pytest.mark.parametrize("req_extra, resp_extra", [
    ({"body": json.dumps({"model": "gpt-4o-mini"}), "query": "a=1"}, {"body": USAGE_BODY}),
    ({"body": None, "gateway_key": "ci (fp 1a2b3c4d5e6f)"},
     {"status": None, "outcome": "client_aborted", "error": "client disconnected", "body": None}),
    ({"body": "plain text é"}, {"is_stream": True, "event_offsets_ms": [1.5, 2.0], "duration_ms": 7,  # an int
                                "body": "data: {}\n\n", "content_type": "text/event-stream"}),
    ({"body": json.dumps({"model": "gpt-4o-mini"})},  # a cache hit: a source id, decisions, a saved cost
     {"body": USAGE_BODY, "cache_hit": True, "cache_source": exchange_id_new(),
      "steps": [{"step": "cache", "decision": "hit", "source": "x"}]}),
])
def test_row_values_are_what_django_itself_would_send(req_extra, resp_extra):
    """The fast conversion gives the database exactly what get_db_prep_save gives (this backend)."""
    from django.db import connection

    req = _req(**req_extra)
    rows = [request_row(req, OPENAI, []), response_row(_resp(req, **resp_extra), OPENAI, [])]
    for row in rows:
        fields = type(row)._meta.concrete_fields
        expected = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
        # Same values of the same types (psycopg's Int4 equals an int); Jsonb wrappers compared by content.
        typed = lambda values: [(type(v), getattr(v, "obj", v)) for v in values]  # noqa: E731
        assert typed(row_values([row], connection)) == typed(expected)
    records_write([req, _resp(req, **resp_extra)])
    assert Response.objects.get(request_id=req.id).duration_ms == resp_extra.get("duration_ms", 12.5)


def test_row_new_equals_keyword_construction():
    values = {"id": uuid.uuid4().hex, "provider": "openai", "endpoint": "/v1/x", "method": "GET",
              "created_at": Request._meta.get_field("created_at").to_python("2026-01-02T03:04:05Z")}
    fast, slow = row_new(Request, values), Request(**values)
    assert {k: v for k, v in vars(fast).items() if k != "_state"} == \
           {k: v for k, v in vars(slow).items() if k != "_state"}
    assert fast.headers == {} and fast.headers is not row_new(Request, values).headers  # fresh defaults
    answer = {"id": uuid.uuid4().hex, "request_id": values["id"], "status_code": 200, "created_at": values["created_at"]}
    fast, slow = row_new(Response, answer), Response(**answer)
    assert {k: v for k, v in vars(fast).items() if k != "_state"} == \
           {k: v for k, v in vars(slow).items() if k != "_state"}
    assert fast._state.adding and fast._state.db is None  # unsaved, as Model() leaves it


@pytest.mark.parametrize(("provider", "body", "said"), [
    ("openai", {"error": {"message": "The server had an error", "type": "server_error"}}, "The server had an error"),
    ("anthropic", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "Overloaded"),
    ("gemini", {"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}, "API key not valid"),
    ("replicate", {"title": "Invalid version", "detail": "The specified version does not exist", "status": 422},
     "The specified version does not exist"),
    # vLLM's ErrorResponse (releases before {"error": ...}), through OPENAI_UPSTREAM_URL or as a compatible server
    ("openai", {"object": "error", "message": "maximum context length is 2048 tokens", "type": "BadRequestError",
                "code": 400}, "maximum context length is 2048 tokens"),
    # Servers built on FastAPI (vLLM's routes, Infinity, many others) for a path they lack or a body they refuse
    ("openai", {"detail": "Not Found"}, "Not Found"),
    ("openai", {"detail": [{"type": "missing", "loc": ["body", "messages"], "msg": "Field required", "input": {}}]},
     "body.messages: Field required"),
])
def test_upstream_error_message_is_kept_for_the_list(provider, body, said):
    req = _req()
    resp = response_row(_resp(req, status=500, body=json.dumps(body)), registry().get(provider), [])
    assert resp.is_error and resp.error_message == said


@pytest.mark.parametrize(("content_type", "body", "said"), [
    ("text/html", "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center>"
                  "<hr><center>nginx</center></body></html>", "502 Bad Gateway"),
    ("text/html", "<html><body><h1>Service &amp; API Unavailable</h1></body></html>", "Service & API Unavailable"),
    ("text/plain", "upstream connect error or disconnect/reset before headers.\nreset reason: overflow",
     "upstream connect error or disconnect/reset before headers. reset reason: overflow"),
])
def test_a_text_error_page_says_what_failed_in_the_list(content_type, body, said):
    """A proxy before an OpenAI-compatible server (nginx before Ollama, a balancer) answers its failures in HTML or
    plain text: the exchange was an error with an empty message, its reason only inside the body."""
    resp = response_row(_resp(_req(), status=502, body=body, content_type=content_type,
                              headers=[["content-type", content_type]]), registry().get("openai"), [])
    assert resp.is_error and resp.error_message == said


def test_a_stream_that_reports_an_error_after_its_200_is_an_error_with_the_message():
    req = _req()
    events = ('data: {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
              'data: {"object": "chat.completion.chunk", "error": {"message": "Provider returned error"}, '
              '"choices": [{"index": 0, "delta": {}, "finish_reason": "error"}]}\n\ndata: [DONE]\n\n')
    sse = {"is_stream": True, "content_type": "text/event-stream", "headers": [["content-type", "text/event-stream"]]}
    failed = response_row(_resp(req, body=events, **sse), OPENAI, [])
    assert failed.outcome == "completed" and failed.is_error and failed.error_message == "Provider returned error"
    whole = events.split("data: {\"object\": \"chat.completion.chunk\", \"error")[0] + "data: [DONE]\n\n"
    fine = response_row(_resp(req, body=whole, **sse), OPENAI, [])
    assert not fine.is_error and fine.error_message == ""


def test_tag_headers_sent_as_utf8_are_read_as_written():
    """HTTP header bytes arrive read as latin-1: a UTF-8 name is read back as its sender wrote it."""
    wire = "Jürgen".encode("utf-8").decode("latin-1")  # what the server hands over: "JÃ¼rgen"
    odd = "caf\xe9"  # a latin-1 byte that is not UTF-8: kept as read
    req = _req(headers=[["x-gateway-user", wire], ["x-gateway-session-id", odd], ["x-gateway-meta-team", "ops"]])
    row = request_row(req, OPENAI, [])
    assert (row.end_user, row.session_id, row.metadata) == ("Jürgen", "café", {"team": "ops"})


def test_tags_from_headers_win_over_the_body_and_are_not_in_a_success():
    req = _req(headers=[["x-gateway-user", "carol"], ["X-Gateway-Meta-Env", "prod"]],
               body=json.dumps({"model": "m", "user": "bob", "metadata": {"env": "dev", "ticket": "T-1"}}))
    row = request_row(req, OPENAI, [])
    assert (row.end_user, row.session_id, row.metadata) == ("carol", None, {"env": "prod", "ticket": "T-1"})
    ok = response_row(_resp(req, body=json.dumps({"error": {"message": "not an error: status 200"}})), OPENAI, [])
    assert ok.error_message == ""


def test_an_answer_naming_no_model_is_priced_by_the_model_asked_for():
    """OpenAI's images answer with usage and no model: the request's model prices it, whether its row came in
    an earlier batch (read from the database) or in the same one; reprice_logs does the same."""
    from logs.models import Response
    from logs.pricing.reprice import reprice

    answer = json.dumps({"created": 1, "data": [], "usage": {"input_tokens": 5, "output_tokens": 10,
                                                             "total_tokens": 15}})
    body = json.dumps({"model": "gpt-image-1", "prompt": "a red square"})
    first = _req(endpoint="/v1/images/generations", body=body, body_size=len(body))
    records_write([first])  # the request's row, then its answer in a later batch
    records_write([_resp(first, body=answer)])
    second = _req(endpoint="/v1/images/generations", body=body, body_size=len(body))
    records_write([second, _resp(second, body=answer)])
    rows = Response.objects.order_by("created_at")
    assert [(r.model, r.total_tokens) for r in rows] == [("gpt-image-1", 15)] * 2
    assert all(r.cost_usd > 0 for r in rows)
    priced = rows[0].cost_usd
    Response.objects.update(cost_usd=None, price_source="")
    reprice()
    assert [r.cost_usd for r in Response.objects.order_by("created_at")] == [priced] * 2
    # A cache hit of it is priced the same way, as what it saved: it costs nothing (it was charged in full).
    hit = _req(endpoint="/v1/images/generations", body=body, body_size=len(body))
    records_write([hit, _resp(hit, body=answer, cache_hit=True, cache_source=first.id)])
    row = Response.objects.get(request_id=hit.id)
    assert (row.cost_usd, row.cost_saved_usd) == (0, priced)


@pytest.fixture
def store_wait_fresh(monkeypatch):
    """This process's memory of payload store outages, empty, and forgotten after the test (the next tests'
    exchanges would carry its note)."""
    from logs.pipeline import payloads

    monkeypatch.setattr(payloads, "_store_wait", {"since": None, "error": "", "last": None})


def test_a_store_outage_note_keeps_its_first_cause_and_names_no_spool_file(settings, store_wait_fresh):
    # Every row the waiting batch wrote got it: a spool file named there was another exchange's.
    from logs.pipeline.payloads import store_wait_begin, store_wait_end, store_wait_note

    from datetime import datetime, timezone

    store_wait_begin(f"S3UploadFailedError: Failed to upload {settings.SPOOL_DIR}/0a1b.response to b/k: refused")
    store_wait_begin("NoSuchBucket: the bucket is gone")
    note = store_wait_note(datetime.now(timezone.utc))
    store_wait_end()
    assert note.startswith("S3UploadFailedError: Failed to upload a spool file to b/k: refused (since ")
    assert "0a1b" not in note and "NoSuchBucket" not in note
    assert store_wait_note(datetime.now(timezone.utc)) == ""  # an exchange that ended once the store was back


def test_exchanges_queued_behind_the_batch_that_waited_for_the_store_say_so_too(store_wait_fresh):
    """Only the batch being retried while the store was down got the note: the exchanges queued behind it,
    written in the next batches, had waited as long (seen: 5 of 386 exchanges noted after an S3 outage)."""
    import base64

    from logs.pipeline.payloads import store_wait_begin, store_wait_end
    from tests.logs.factory import PNG

    def image_exchange(ago: float):
        """An image exchange that ended `ago` seconds ago (its answer took duration_ms)."""
        started = time.time() - ago - 0.0125
        rec = _req(endpoint="/v1/images/generations", body=json.dumps({"model": "gpt-image-1", "prompt": "a cat"}),
                   created=started)
        answer = _resp(rec, body=json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}),
                       created=started, duration_ms=12.5)
        return rec, answer

    store_wait_begin("EndpointConnectionError: Could not connect to the endpoint URL")
    retried, queued = image_exchange(2), image_exchange(1)  # ended while the store was down
    records_write(list(retried))  # the batch retried until the store answered
    store_wait_end()
    records_write(list(queued))  # the next batch: it was queued behind the first
    later = image_exchange(-1)  # ends a second after the store was back: it waited for nothing
    records_write(list(later))
    note = "EndpointConnectionError: Could not connect to the endpoint URL (since "
    for rec, waited in ((retried[0], True), (queued[0], True), (later[0], False)):
        resp = Response.objects.get(request_id=rec.id)
        assert BinaryFile.objects.filter(request_id=rec.id).exists()  # positive control: it has a file
        assert (note in resp.error_message) == waited, resp.error_message
        assert ("files stored when it answered again" in resp.error_message) == waited


def test_a_value_no_column_takes_is_replaced_not_the_body_dropped():
    # "\ud800" is valid JSON: read as a model name it failed the row, and the exchange was kept
    # without its body or model (on PostgreSQL a NUL did the same).
    from logs.pipeline.ingest import batch_write

    rec = _req(body='{"model": "gpt\\ud800", "messages": []}')
    answer = _done(rec)
    answer.body = '{"model": "\\u0000m\\ud800", "choices": []}'
    batch_write(records_write, [rec, answer])
    row = Request.objects.get(id=rec.id)
    assert row.body == rec.body and row.model == "gpt\ufffd"
    resp = Response.objects.get(request_id=rec.id)
    assert resp.body == answer.body and resp.model == "\ufffdm\ufffd"


def test_a_key_a_stream_spells_out_across_its_events_is_masked_in_the_reassembled_answer():
    # The worker's scrub never saw it whole: only the ingest's reassembly does, which holds no secret.
    from logs.redaction.echoes import echo_prints

    key = "sk-proj-" + "SPLITkey0123456789abcdefXYZ"
    rec = _req()
    pieces = [key[i:i + 5] for i in range(0, len(key), 5)]
    events = [{"object": "chat.completion.chunk", "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": p}}]} for p in ["your key: ", *pieces, " ok"]]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    answer = ResponseRecord(id=exchange_id_new(), request_id=rec.id, provider="openai", status=200, body=body,
                            content_type="text/event-stream", is_stream=True, created=time.time(),
                            echo_prints=echo_prints([key, f"Bearer {key}"]))
    assert key not in json.dumps(answer.echo_prints)  # the record carries no secret
    records_write([rec, answer])
    content = Response.objects.get(request_id=rec.id).stream_result["result"]["choices"][0]["message"]["content"]
    assert key not in content and content.startswith("your key: sk-") and content.endswith("XYZ ok")


def test_an_image_answer_whose_store_is_full_keeps_its_usage_and_cost(monkeypatch):
    # A full payload store made the whole record fail: the row lost its body, tokens and cost (a key's spend).
    import base64

    from tests.logs.factory import PNG

    def full(name, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("logs.pipeline.payloads.payload_save_bytes", full)
    rec = _req(endpoint="/v1/images/generations", body=json.dumps({"model": "gpt-image-1", "prompt": "a cat"}))
    answer = _done(rec)
    answer.body = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}],
                              "usage": {"input_tokens": 10, "output_tokens": 4160, "total_tokens": 4170}})
    records_write([rec, answer])
    resp = Response.objects.get(request_id=rec.id)
    assert resp.body == answer.body and (resp.input_tokens, resp.output_tokens) == (10, 4160)
    assert resp.cost_usd is not None and resp.cost_usd > 0
    assert "embedded files not stored ([Errno 28] No space left on device)" in resp.error_message
    assert not BinaryFile.objects.filter(request_id=rec.id).exists()


def test_a_record_that_cannot_be_processed_is_kept_and_its_traceback_shown_once(monkeypatch, caplog):
    # A batch retried every 2 s (a locked or full database) printed the same traceback at every try.
    import logs.pipeline.rows as rows

    def broken(rec, provider, files):
        raise ValueError("a reader failed")

    monkeypatch.setattr(rows, "request_row", broken)
    rec = _req(body="{}")
    with caplog.at_level("ERROR", logger="logs.pipeline.rows"):
        for _ in range(3):  # the same batch, tried again
            records_write([rec])
    assert Request.objects.filter(id=rec.id).count() == 1  # kept with its plain fields
    assert sum("could not be processed" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("created", [253402300800.0, -1e18, float("nan"), float("inf"), "yesterday"])
def test_a_start_no_datetime_holds_is_logged_at_the_time_of_writing_with_the_rest_of_its_batch(created):
    """A journal line gone wrong (year 10000, NaN): its row, plain or full, raised, and the ingest's one-by-one
    retry stopped there, so the exchange and every later record of its batch were missing from the log."""
    from logs.pipeline.ingest import batch_write

    before = datetime.now(timezone.utc)
    bad, good = _req(body="{}", created=created), _req(body="{}", created=1_700_000_000.0)
    answers = [_done(bad), _done(good)]
    answers[0].created = created
    batch_write(records_write, [bad, answers[0], good, answers[1]])
    assert Response.objects.filter(request_id__in=[bad.id, good.id]).count() == 2
    assert Request.objects.get(id=good.id).created_at == datetime.fromtimestamp(1_700_000_000, timezone.utc)
    assert Request.objects.get(id=bad.id).created_at >= before and Response.objects.get(
        request_id=bad.id).created_at >= before
    assert "log record could not be processed" in Response.objects.get(request_id=bad.id).error_message


def test_the_answer_of_an_exchange_deleted_in_flight_leaves_no_file_in_the_store(payload_dir):
    # The admin deletes any exchange, one still waiting for its answer too: the answer's row fails its foreign
    # key and is skipped, and the image it carried, stored before the rows, stayed in the store with no row.
    import base64
    from logs.pipeline.ingest import batch_write
    from logs.retention import queryset_delete
    from tests.logs.factory import PNG

    def image_exchange():
        rec = _req(endpoint="/v1/images/generations", body=json.dumps({"model": "gpt-image-1", "prompt": "a cat"}))
        records_write([rec])
        return rec, _resp(rec, body=json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}))

    (deleted, lost), (kept, answer) = image_exchange(), image_exchange()
    queryset_delete(Request.objects.filter(pk=deleted.id))
    batch_write(records_write, [lost, answer])
    stored = [p for p in payload_dir.rglob("*") if p.is_file()]
    assert BinaryFile.objects.get(request_id=kept.id).file.name in {str(p.relative_to(payload_dir)) for p in stored}
    assert len(stored) == 1  # the kept exchange's image alone (the positive control above)
    assert list(Response.objects.values_list("request_id", flat=True)) == [uuid.UUID(kept.id)]
