"""\"Copy as cURL\": a shell command that replays a logged request, credentials replaced."""

import json
import shlex

from logs.models import Request
from logs.redaction.redact import headers_safe, secret_headers

# Headers curl computes itself, or that only described the original connection.
SKIP_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding", "accept-encoding",
                          "keep-alive", "te", "upgrade", "expect"})


def _header_arg(name: str, value: str) -> str:
    """One -H argument; credentials become $API_KEY so the command is runnable yet secret-free."""
    if name.lower() in secret_headers():
        scheme = value.split(" ", 1)[0] if " " in value else ""
        # Double quotes so the shell expands $API_KEY; nothing else in this value is user data.
        return f'-H "{name}: {scheme + " " if scheme else ""}$API_KEY"'
    return f"-H {shlex.quote(f'{name}: {value}')}"


def curl_command(req: Request, base_url: str) -> str:
    """The request as a curl command against the gateway at base_url."""
    url = base_url.rstrip("/") + req.endpoint + (f"?{req.query_string}" if req.query_string else "")
    lines = [f"curl -X {shlex.quote(req.method)} {shlex.quote(url)}"]
    multipart = req.content_type.lower().startswith("multipart/")
    for name, value in headers_safe(req.headers):
        if name.lower() in SKIP_HEADERS or (multipart and name.lower() == "content-type"):
            continue
        lines.append(_header_arg(name, value))
    if multipart:
        lines += _form_args(req.body)
    elif req.body:
        lines.append(f"--data-binary {shlex.quote(req.body)}")
    elif req.body_size:
        lines.append("--data-binary @request-body.bin  # the body is a stored file: download it first")
    return " \\\n  ".join(lines)


def _form_args(body: str | None) -> list[str]:
    """-F arguments rebuilt from the logged form fields and file list."""
    try:
        form = json.loads(body or "")
    except ValueError:
        return []
    if not isinstance(form, dict):
        return []
    args = [f"-F {shlex.quote(f'{k}={v}')}" for k, v in (form.get("fields") or {}).items()]
    for f in form.get("files") or []:
        if isinstance(f, dict):
            name = f.get("filename") or str(f.get("file", "file")).rsplit("/", 1)[-1]
            field = f.get("field", "file")
            args.append("-F " + shlex.quote(f"{field}=@{name}"))
    return args
