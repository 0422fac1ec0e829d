"""The request as forwarded, for the log, when a policy step changed it (responses.forwarded).

The request row keeps what the client sent; this keeps what went upstream instead: method,
path, query and headers (credentials masked) and the body, inline as text or, when it is large
or not text, as a spool file the ingest stores as a FORWARDED_BODY file.
"""

import hashlib
from urllib.parse import unquote

from django.conf import settings

from logs.pipeline.capture import content_type_is_text
from logs.pipeline.spool import SpoolWriter, spool_path
from logs.records import FileRef
from logs.redaction.redact import headers_mask, path_mask, query_mask
from logs.redaction.scrub import Masked
from proxy.exchange import Exchange
from proxy.request_body import body_payload
from proxy.threads import off_loop


def _content_type(headers: list[tuple[str, str]]) -> str:
    return next((v for k, v in headers if k.lower() == "content-type"), "")


def _spool_write(x: Exchange, data: bytes, content_type: str) -> FileRef:
    """The forwarded body as a spool file, credentials masked (blocking: run it in a thread)."""
    writer = SpoolWriter(f"{x.request_id}.forwarded", content_type)
    try:
        writer.write(data)
    except OSError:
        writer.discard()
        raise
    ref = writer.close()
    path = spool_path(ref.spool)
    if x.scrubber.file(path, content_type, answer=False, masked=Masked()):
        masked = path.read_bytes()
        ref.size, ref.sha256 = len(masked), hashlib.sha256(masked).hexdigest()
    return ref


async def forwarded_note(x: Exchange) -> None:
    """Record in x.forwarded what goes upstream now (call it once the request's last change is made)."""
    content_type = _content_type(x.forward_headers)
    body = x.forward_body
    note: dict = {"method": x.method, "path": path_mask(x.route.upstream_path), "query": query_mask(x.query),
                  "headers": [list(p) for p in headers_mask(x.forward_headers)]}
    if body is None:
        note["body"] = None
        note["body_unchanged"] = True  # the body went as received (see the request row)
        note["body_size"] = x.body.size
    else:
        note["body_size"] = len(body)
        text = None
        if len(body) <= settings.LOG_BODY_INLINE_MAX_BYTES and content_type_is_text(content_type):
            try:
                text = x.scrubber.text(body.decode("utf-8"), content_type, answer=False, masked=Masked())
            except UnicodeDecodeError:
                text = None
        note["body"] = text
        if text is None and body:
            try:
                x.forwarded_body_file = await off_loop(_spool_write, x, body, content_type)
            except OSError as exc:
                x.notes.append(f"forwarded body file not saved: {exc}")
    # The model that went upstream (a hook may have changed it): what prices an answer naming none.
    payload = body_payload(body, content_type) if body is not None else None
    if model := x.provider.request_model(unquote(x.route.upstream_path), payload):
        note["model"] = model
    x.forwarded = note
