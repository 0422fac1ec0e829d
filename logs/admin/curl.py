"""\"Copy as cURL\": a shell command that replays a logged request, credentials replaced.

Everything in it but the placeholders is what a client sent, so nothing the client chose may
reach the shell or curl as anything but data: values are single-quoted, text form fields go
through --form-string and bodies through --data-raw (curl reads a file for -F x=@file, -F x=<file
and --data-binary @file), and the URL is not globbed.
"""

import json
import re
import shlex
from pathlib import PureWindowsPath

from logs.models import Request
from logs.redaction.redact import AUTH_SCHEMES, headers_safe, query_mask, secret_headers

# Headers curl computes itself, or that only described the original connection.
SKIP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding",
                          "keep-alive", "te", "upgrade", "expect"})
# The gateway access key has its own placeholder: it is not the provider key. (The header
# proxy/access.py reads; logs never imports proxy.)
GATEWAY_KEY_HEADER = "x-gateway-key"
# An HTTP header name (RFC 9110 token); curl would read `-H @file` as a file of headers.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What may sit inside double quotes next to a placeholder without the shell acting on it.
_PLAIN = re.compile(r"[A-Za-z0-9 _.:/-]*")


def _header_arg(name: str, value: str) -> str:
    """One -H argument; credentials become $API_KEY or $GATEWAY_KEY so the command runs yet holds no secret."""
    if name.lower() not in secret_headers():
        return f"-H {shlex.quote(f'{name}: {value}')}"
    placeholder = "$GATEWAY_KEY" if name.lower() == GATEWAY_KEY_HEADER else "$API_KEY"
    scheme, sep, _ = value.partition(" ")
    prefix = f"{name}: {scheme} " if sep and scheme.lower() in AUTH_SCHEMES else f"{name}: "
    if _PLAIN.fullmatch(prefix):
        return f'-H "{prefix}{placeholder}"'  # double quotes: the shell expands the placeholder
    return f'-H {shlex.quote(prefix)}"{placeholder}"'


def curl_command(req: Request, base_url: str) -> str:
    """The request as a curl command against the gateway at base_url."""
    query = query_mask(req.query_string, logged=True)
    url = base_url.rstrip("/") + req.endpoint + (f"?{query}" if query else "")
    # --globoff: curl would expand [1-100] or {a,b} in a logged path into many requests.
    lines = [f"curl -X {shlex.quote(req.method)} --globoff {shlex.quote(url)}"]
    multipart = req.content_type.lower().startswith("multipart/")
    for name, value in headers_safe(req.headers):
        if name.lower() in SKIP_HEADERS or (multipart and name.lower() == "content-type"):
            continue
        if name.lower() == "content-encoding" and req.body is not None:
            continue  # the logged text is the body decoded
        if _TOKEN.fullmatch(name):
            lines.append(_header_arg(name, value))
    if multipart:
        lines += _form_args(req.body)
    elif req.body:
        lines.append(f"--data-raw {shlex.quote(req.body)}")
    elif req.body_size:
        lines.append("--data-binary @request-body.bin  # the body is a stored file: download it first")
    return " \\\n  ".join(lines)


def _file_name(name: str) -> str:
    """A file part's name as the download saves it: its last path component, in curl's -F quoting if needed.

    A client may call its upload /etc/passwd; the command must read the downloaded copy, not that.
    """
    base = PureWindowsPath(name).name  # splits on / and \ alike
    if base in ("", ".", ".."):
        base = "file"
    if re.search(r'[;,"\\]', base):  # -F reads ;type= and , after a name unless it is double-quoted
        base = '"' + base.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return base


def _form_args(body: str | None) -> list[str]:
    """The logged form rebuilt: text fields as literal strings, file parts read from downloaded files."""
    try:
        form = json.loads(body or "")
    except ValueError:
        return []
    if not isinstance(form, dict):
        return []
    # --form-string: with -F a value starting with @ or < makes curl send a local file instead.
    args = [f"--form-string {shlex.quote(f'{k}={v}')}" for k, v in (form.get("fields") or {}).items()]
    for f in form.get("files") or []:
        if isinstance(f, dict):
            name = _file_name(str(f.get("filename") or f.get("file") or "file"))
            # -F splits at the first =: one in the field name would make the rest the content.
            field = str(f.get("field") or "file").replace("=", "_")
            args.append("-F " + shlex.quote(f"{field}=@{name}"))
    return args
