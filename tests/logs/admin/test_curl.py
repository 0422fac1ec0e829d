"""Copy as cURL: the command replays what the client sent, and running it reads no file and runs nothing else."""

import html
import json
import re
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from logs.admin.curl import curl_command
from logs.redaction.redact import headers_mask
from tests.logs.factory import PNG, exchange_make

pytestmark = pytest.mark.django_db
needs_curl = pytest.mark.skipif(not shutil.which("curl") or not shutil.which("bash"), reason="needs curl and bash")
AUTH = ["Authorization", "Bearer sk-…9f2c"]
GATEWAY = ["X-Gateway-Key", "team-a (fp 0123456789ab)"]


class _Recorder(BaseHTTPRequestHandler):
    """Keeps every request it is sent."""

    seen: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    """A local HTTP server that records what the cURL command sends."""
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, _Recorder.seen
    httpd.shutdown()
    httpd.server_close()


def _run(command: str, cwd) -> subprocess.CompletedProcess:
    """The command as an operator would paste it into bash, with their two keys in the environment."""
    env = {"PATH": "/usr/bin:/bin", "API_KEY": "provider-key-123", "GATEWAY_KEY": "gateway-key-456"}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=30)


def _multipart(fields: dict, files: list[dict]):
    """An image edit as the log keeps a multipart upload: text fields inline, file parts listed."""
    ctype = "multipart/form-data; boundary=b"
    return exchange_make(endpoint="/v1/images/edits", headers=[AUTH, GATEWAY, ["Content-Type", ctype]],
                         content_type=ctype, body=json.dumps({"fields": fields, "files": files, "complete": True}))


def test_text_fields_are_sent_as_strings_and_keys_get_their_own_placeholders():
    req = _multipart({"prompt": "@/etc/passwd", "model": "gpt-image-1"},
                     [{"field": "image", "filename": "cat.png", "content_type": "image/png", "size": 3,
                       "file": "openai/2025-05-01/0196.png"}])
    cmd = curl_command(req, "http://gw.example/")
    assert "--form-string prompt=@/etc/passwd" in cmd and "-F prompt" not in cmd
    assert "-F image=@cat.png" in cmd  # files are read from disk: download them first
    assert '-H "Authorization: Bearer $API_KEY"' in cmd
    assert '-H "X-Gateway-Key: $GATEWAY_KEY"' in cmd and "team-a" not in cmd
    assert subprocess.run(["bash", "-n", "-c", cmd], capture_output=True).returncode == 0


@needs_curl
def test_running_the_command_reads_no_local_file_and_runs_nothing(tmp_path, server):
    httpd, seen = server
    base = f"http://127.0.0.1:{httpd.server_port}/"
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "passwd").write_text("downloaded part, by the operator's choice")
    marker = tmp_path / "pwned"
    (tmp_path / 'odd;type=x,"1".png').write_text("odd name, read whole")
    form = _multipart({"prompt": "@/etc/passwd", "mask": "</etc/hostname"},
                      [{"field": "image", "filename": "cat.png"}, {"field": "extra", "filename": "/etc/passwd"},
                       {"field": "odd", "filename": 'C:\\Users\\me\\odd;type=x,"1".png'}])
    # A cookie name is kept in the log (only values are masked) and is the client's to choose.
    cookie = headers_mask([("Cookie", f"$(touch${{IFS}}{marker})=1; b=2")])[0]
    raw = exchange_make(body="@/etc/passwd", headers=[AUTH, list(cookie)])
    odd_url = exchange_make(endpoint="/v1/models/[1-3]{a,b}")
    for req in (form, raw, odd_url):
        done = _run(curl_command(req, base), tmp_path)
        assert done.returncode == 0, done.stderr
    assert not marker.exists()
    assert len(seen) == 3  # one request each: the URL was not expanded as a curl glob
    sent_form, sent_raw, sent_odd = seen
    assert b'name="prompt"\r\n\r\n@/etc/passwd\r\n' in sent_form["body"]
    assert b'name="mask"\r\n\r\n</etc/hostname\r\n' in sent_form["body"]
    assert PNG in sent_form["body"] and b"downloaded part" in sent_form["body"]  # ./passwd, not /etc/passwd
    assert b"odd name, read whole" in sent_form["body"]
    assert b"root:" not in sent_form["body"] + sent_raw["body"]
    assert sent_form["headers"]["Authorization"] == "Bearer provider-key-123"
    assert sent_form["headers"]["X-Gateway-Key"] == "gateway-key-456"
    assert sent_raw["body"] == b"@/etc/passwd"
    assert sent_odd["path"] == "/v1/models/[1-3]{a,b}"


def test_exchange_page_shows_the_gateway_key_placeholder(admin_client):
    req = exchange_make(headers=[AUTH, GATEWAY, ["Content-Type", "application/json"], ["@/etc/passwd", "x"]])
    page = admin_client.get(f"/admin/logs/request/{req.pk.hex}/change/").content.decode()
    curl = html.unescape(re.search(r'<pre id="curl-text">(.*?)</pre>', page, re.S).group(1))
    assert '-H "Authorization: Bearer $API_KEY"' in curl and '-H "X-Gateway-Key: $GATEWAY_KEY"' in curl
    assert "-H 'Content-Type: application/json'" in curl and "passwd" not in curl  # -H @file reads a file


@needs_curl
def test_a_request_logged_decoded_is_sent_without_its_content_encoding(tmp_path, server):
    # A gzip request body is logged decoded: sent with its Content-Encoding the text would not decode upstream.
    httpd, seen = server
    req = exchange_make(headers=[AUTH, ["Content-Type", "application/json"], ["Content-Encoding", "gzip"]],
                        body={"model": "gpt-4o-mini", "messages": []})
    cmd = curl_command(req, f"http://127.0.0.1:{httpd.server_port}")
    assert _run(cmd, tmp_path).returncode == 0
    assert "Content-Encoding" not in seen[0]["headers"]
    assert json.loads(seen[0]["body"]) == {"model": "gpt-4o-mini", "messages": []}
