"""A distinctive key sent through every path and feature must not be stored anywhere in clear."""

import base64
import json
import logging
import secrets
import socket
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from django.conf import settings as dj_settings
from django.core.management import call_command
from django.db import connection

from testing.media import PNG
from logs.pipeline.journal import Journal
from logs.models import Request, Response
from logs.redaction.redact import token_mask
from tests.conftest import LiveGateway

pytestmark = pytest.mark.django_db(transaction=True)

# Built at runtime so no key-like literal is committed; hex keeps it identical in every encoding.
KEY = "sk-" + "scan" + secrets.token_hex(15)
# Credentials that are not the request's own key: found by the name of what holds them.
OTHER = {kind: "sk-" + kind + secrets.token_hex(12) for kind in ("header", "field", "nested", "form", "param", "shape", "path")}
# What masking must hide of each: everything but the kind prefix and the last 4 characters.
NEEDLES = tuple(n for s in (KEY, *OTHER.values()) for n in (s.encode(), s[3:-4].encode()))


@pytest.fixture
def journal_lines(monkeypatch):
    """Every journal line written (the journal is truncated once in the DB, so spy on writes)."""
    lines: list[str] = []
    real = Journal.append

    def spy(self, line: bytes):
        lines.append(line.decode("utf-8", "surrogateescape"))
        return real(self, line)
    monkeypatch.setattr(Journal, "append", spy)
    return lines


@pytest.fixture
def verbose_gateway(upstream, transactional_db, log_flush, monkeypatch, caplog):
    """A live gateway with uvicorn's access log and INFO logging on (httpx logs URLs at INFO)."""
    real = uvicorn.Config
    monkeypatch.setattr(uvicorn, "Config", lambda app, **kw: real(app, **{**kw, "log_level": "info"}))
    live = LiveGateway()
    caplog.set_level(logging.INFO)  # after uvicorn has configured logging, which resets the root level
    yield live
    log_flush()
    live.stop()


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(data)
        s.settimeout(5)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except socket.timeout:
            pass
        return out


def _traffic(gw: LiveGateway, settings) -> None:
    """Send KEY through every provider path and feature the gateway has."""
    base = f"{gw.url}/v1"
    sdk = openai.OpenAI(api_key=KEY, base_url=base, max_retries=0,
                        default_headers={"x-api-key": KEY, "Cookie": f"session={KEY}"})
    sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    list(sdk.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True,
                                     stream_options={"include_usage": True}))
    with sdk.responses.stream(model="gpt-4o-mini", input="hello") as stream:
        stream.get_final_response()
    sdk.images.edit(model="gpt-image-1", image=("in.png", PNG, "image/png"), prompt="bluer")
    sdk.images.generate(model="gpt-image-1", prompt="red", response_format="b64_json")
    sdk.audio.speech.create(model="tts-1", voice="alloy", input="hello").read()
    auth = {"Authorization": f"Bearer {KEY}"}
    # Query-string credentials (Gemini style), percent-encoded or not.
    httpx.post(f"{base}/embeddings?key={KEY}&alt=json", json={"model": "e", "input": "x"}, headers=auth)
    # Upstream errors: a plain 401, a careless upstream echoing the key in body and headers,
    # a stream cut in the middle.
    httpx.get(f"{base}/models", headers={**auth, "x-mock-status": "401"})
    echoed = httpx.get(f"{base}/models", headers={**auth, "x-mock-fault": "echo-auth"})
    assert KEY in echoed.text  # the client still gets the upstream's answer unchanged
    httpx.post(f"{base}/chat/completions", json={"model": "m", "stream": True},
               headers={**auth, "x-mock-fault": "close-mid-stream"})
    # The key inside the path (and the mock's 404 echoing that path).
    httpx.get(f"{base}/files/{KEY}/content", headers=auth)
    # Gateway errors: wrong gateway key, bad method, refused path, 413, upstream down.
    settings.GATEWAY_API_KEYS = ["ops:gk-" + secrets.token_hex(16)]
    httpx.get(f"{base}/models", headers={**auth, "X-Gateway-Key": KEY})
    settings.GATEWAY_API_KEYS = []
    _raw(gw.port, f"TRACE /v1/models?key={KEY} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                  f"Connection: close\r\n\r\n".encode())
    _raw(gw.port, f"GET /v1/%2e%2e/{KEY} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    settings.MAX_REQUEST_BODY_BYTES = 10
    httpx.post(f"{base}/chat/completions?api_key={KEY}", content=b"x" * 100, headers=auth)
    settings.MAX_REQUEST_BODY_BYTES = 100 * 1024 * 1024
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    live_url = settings.UPSTREAM_URLS["openai"]
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": f"http://127.0.0.1:{dead}"}
    httpx.get(f"{base}/models?key={KEY}", headers=auth)
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": live_url}
    _traffic_bodies(gw, settings, auth)


def _traffic_bodies(gw: LiveGateway, settings, auth: dict) -> None:
    """Credentials inside bodies, in odd headers and separators, in percent-encoded names."""
    base = f"{gw.url}/v1"
    # JSON fields named like secrets, at any depth, and a header named like one.
    httpx.post(f"{base}/chat/completions", headers={**auth, "X-Custom-Api-Key": OTHER["header"]},
               json={"model": "m", "messages": [], "api_key": OTHER["field"],
                     "tools": [{"auth": {"clientSecret": OTHER["nested"]}}]})
    # A multipart form echoing the request's key and holding another secret in a password field.
    httpx.post(f"{base}/images/edits", headers=auth, files={"image": ("a.png", PNG, "image/png")},
               data={"prompt": "x", "api_key": KEY, "password": OTHER["form"]})
    # A text body over the inline limit (a file), and an octet-stream body, both carrying the key.
    big = {"model": "m", "messages": [{"role": "user", "content": "y" * (1 << 20) + KEY}]}
    httpx.post(f"{base}/chat/completions", json=big, headers=auth)
    httpx.post(f"{base}/files", content=b"\x00\x01" + KEY.encode() + b"\xff" * 100,
               headers={**auth, "content-type": "application/octet-stream"})
    # A tab after the scheme, a percent-encoded parameter name, a configured parameter name.
    _raw(gw.port, f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\t{KEY}\r\n"
                  f"Connection: close\r\n\r\n".encode())
    httpx.get(f"{base}/models?api%5Fkey={KEY}", headers=auth)
    settings.LOG_REDACT_QUERY_PARAMS = ["session_ref"]
    httpx.get(f"{base}/models?session_ref={OTHER['param']}", headers=auth)
    # A key known by its shape under a parameter whose name says nothing, percent-encoded.
    httpx.get(f"{base}/models?note={OTHER['shape'].replace('-', '%2D')}", headers=auth)
    # One in the URL's path (a model or file id, say), percent-encoded: not the request's credential either.
    httpx.get(f"{base}/models/{OTHER['path'].replace('-', '%2D')}", headers=auth)


def _db_bytes() -> bytes:
    """The whole database: the SQLite image (file or in-memory) plus every table's text."""
    connection.ensure_connection()
    blob = b""
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        path = Path(name)
        if path.is_file():
            blob += path.read_bytes() + (Path(name + "-wal").read_bytes() if Path(name + "-wal").exists() else b"")
        else:  # pytest-django's in-memory test database: serialize() is its file image
            blob += connection.connection.serialize()
    with connection.cursor() as cur:
        for table in connection.introspection.table_names(cur):
            cur.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            # Each value as stored (repr would double the backslash of a JSON escape such as \u2026).
            for row in cur.fetchall():
                blob += b"\t".join(bytes(v) if isinstance(v, (bytes, memoryview)) else str(v).encode()
                                    for v in row) + b"\n"
    return blob


def _exports_bytes(tmp_path: Path) -> dict[str, bytes]:
    """export_logs in every format, and the admin's export actions over every exchange."""
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    out: dict[str, bytes] = {}
    for fmt in ("jsonl", "json", "csv"):
        target = tmp_path / f"export.{fmt}"
        call_command("export_logs", "--format", fmt, "--output", str(target))
        out[f"export_logs --format {fmt}"] = target.read_bytes()
    client = Client()
    client.force_login(User.objects.create_superuser("scan-admin", "scan@example.invalid", "pw"))
    ids = list(Request.objects.values_list("pk", flat=True))
    for action in ("export_jsonl", "export_csv"):
        r = client.post("/admin/logs/request/", {"action": action, "_selected_action": ids})
        assert r.status_code == 200 and "attachment" in r["Content-Disposition"], action
        out[f"admin action {action}"] = b"".join(r.streaming_content)
    return out


def _tree_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()) if root.exists() else b""


def test_key_is_nowhere_in_clear(verbose_gateway, upstream, log_flush, payload_dir, journal_lines, capfd, caplog,
                                 settings, tmp_path):
    _traffic(verbose_gateway, settings)
    log_flush()
    # The upstream received the real credential unchanged.
    assert any(r.header("authorization") == f"Bearer {KEY}" for r in upstream.received)
    assert any(KEY in r.query for r in upstream.received)
    verbose_gateway.stop()

    stores = {
        "database": _db_bytes(),
        "file store": _tree_bytes(payload_dir),
        "spool folder": _tree_bytes(Path(dj_settings.SPOOL_DIR)),
        "journal (every line written)": "\n".join(journal_lines).encode(),
        "journal folder": _tree_bytes(Path(dj_settings.JOURNAL_DIR)),
    }
    exports = _exports_bytes(tmp_path)
    stores.update(exports)
    out, err = capfd.readouterr()
    stores["console"] = (out + err + caplog.text).encode()
    leaks = {name: [n.decode() for n in NEEDLES if n in data] for name, data in stores.items()}
    assert leaks == {name: [] for name in stores}

    # Positive controls: the scan looked at real data, and what it saw is the masked form.
    masked = f"sk-…{KEY[-4:]}"
    assert masked.encode() in stores["database"]
    for kind, secret in OTHER.items():  # each other credential is there, masked (JSON columns escape the …)
        assert any(f"sk-{dots}{secret[-4:]}".encode() in stores["database"] for dots in ("…", "\\u2026")), kind
    assert stores["file store"].count(masked.encode()) >= 2  # the big body and the octet-stream, masked
    assert Response.objects.filter(error_message__contains="fields named like credentials").count() >= 2
    assert Request.objects.count() >= 14 and not Request.objects.filter(response__isnull=True).exists()
    assert Response.objects.filter(status_code=401, body__contains=masked).exists()  # echo scrubbed
    assert b'"GET /v1/models?key=' in stores["console"]  # uvicorn's access log was captured
    assert b"HTTP Request: " in stores["console"]  # and httpx's request log
    assert len(stores["file store"]) > len(PNG)
    # The journal spy saw every record (a request and a response per exchange), key masked.
    assert len(journal_lines) >= 2 * Request.objects.count()
    assert masked.encode() in stores["journal (every line written)"]
    n = Request.objects.count()
    for name, data in exports.items():  # every export holds every exchange, with the masked key
        assert masked.encode() in data, name
    assert len(json.loads(exports["export_logs --format json"])) == n
    assert len(exports["admin action export_jsonl"].splitlines()) == n


def test_a_key_known_by_its_shape_in_a_header_whose_name_says_nothing_is_nowhere_in_clear(gateway, upstream, log_flush,
                                                                                       tmp_path):
    """X-Gateway-Meta-Note: sk-ant-..., X-Gateway-User: r8_..., X-Upstream-Cred: AIza...: masked by their shape
    as in a query parameter, in the headers, the tags made of them, an answer echoing one, and export_logs;
    the upstream gets the headers it is sent as sent. Before, all of them were logged and exported in clear."""
    keys = {"X-Gateway-Meta-Note": "sk-ant-api03-" + secrets.token_hex(16), "X-Gateway-User": "r8_" + secrets.token_hex(16),
            "X-Upstream-Cred": "AIza" + "Sy" + secrets.token_hex(16)}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}", **keys},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert upstream.received[-1].header("x-upstream-cred") == keys["X-Upstream-Cred"]
    log_flush()
    req = Request.objects.get()
    logged = dict(req.headers)
    for name, key in keys.items():
        assert logged[name.lower()] == token_mask(key), name
    assert req.metadata == {"note": logged["x-gateway-meta-note"]} and req.end_user == logged["x-gateway-user"]
    call_command("export_logs", "--output", str(tmp_path / "out.jsonl"))
    export = (tmp_path / "out.jsonl").read_text()
    assert logged["x-gateway-user"] in export  # positive control: the export holds the exchange, masked
    for key in keys.values():
        assert key[4:-4] not in export


def test_a_key_known_by_its_shape_in_an_ordinary_query_parameter_is_nowhere_in_clear(
        verbose_gateway, upstream, log_flush, capfd, caplog, tmp_path):
    """?note=gk%2D...: the upstream gets the query as sent; the log row, the exchange page and its curl,
    export_logs and the console show the key masked, and the rest of the query as sent."""
    gk = "gk-" + secrets.token_hex(20)
    query = f"note={gk.replace('-', '%2D')}&stream=false&x=%20y"
    r = httpx.post(f"{verbose_gateway.url}/v1/chat/completions?{query}", headers={"Authorization": f"Bearer {KEY}"},
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and upstream.received[-1].query == query
    log_flush()
    verbose_gateway.stop()
    masked = f"note=gk-…{gk[-4:]}&stream=false&x=%20y"
    assert Request.objects.get().query_string == masked

    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client
    client = Client()
    client.force_login(User.objects.create_superuser("scan-admin", "scan@example.invalid", "pw"))
    page = client.get(f"/admin/logs/request/{Request.objects.get().pk.hex}/change/").content.decode()
    assert page.count(masked.replace("&", "&amp;")) >= 2  # the URL line and the curl command
    call_command("export_logs", "--format", "jsonl", "--output", str(tmp_path / "out.jsonl"))
    export = (tmp_path / "out.jsonl").read_text()
    assert masked in export
    out, err = capfd.readouterr()
    console = out + err + caplog.text
    assert f'"POST /v1/chat/completions?{masked} HTTP/1.1" 200' in console  # uvicorn's access log, masked
    for name, text in {"page": page, "export": export, "console": console}.items():
        assert gk[3:-4] not in text, name


def test_the_password_of_a_compatible_servers_url_is_not_kept_when_the_server_echoes_it(gateway, upstream, log_flush,
                                                                                      settings):
    """ollama=http://gw:password@host (a server behind basic auth): httpx sends that as Basic, and an upstream's 401
    quoting the Authorization it got was logged in clear: the client's headers never hold it, so nothing masked it."""
    password = "pw" + secrets.token_hex(12)
    settings.GATEWAY_PROVIDERS = [f"ollama=http://gw:{password}@{upstream.url.partition('://')[2]}"]
    r = httpx.get(f"{gateway.url}/ollama/v1/models", headers={"x-mock-fault": "echo-auth"})
    basic = base64.b64encode(f"gw:{password}".encode()).decode()
    assert r.status_code == 401 and basic in r.text  # positive control: the upstream got it and quoted it
    log_flush()
    resp = Response.objects.get()
    assert "Incorrect API key provided: Basic " in resp.body  # the answer is logged...
    blob = _db_bytes()
    assert basic.encode() not in blob and basic[:-6].encode() not in blob and password.encode() not in blob  # ...masked
