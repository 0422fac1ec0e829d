"""Replicate prediction outputs (image/audio URLs on its delivery hosts) saved into the file store.

Replicate deletes outputs after an hour, so the gateway keeps a copy. A prediction is usually
polled many times and every poll repeats the same URLs: each URL is fetched once (its file id
is derived from the URL, so the row is its own dedupe key). Downloads run on a small thread
pool after the log rows are committed: never on the event loop, never stalling the log writer.
"""

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import connections

from logs.capture import extension_for, payload_open

log = logging.getLogger(__name__)

OUTPUT_ROLE = "response_output"  # BinaryFile.Role.RESPONSE_OUTPUT: a file the answer pointed to
MEDIA_TYPES = ("image/", "audio/", "video/")
URL_WALK_MAX = 1000  # outputs are lists of a few URLs; bound the walk of odd shapes

_pool: ThreadPoolExecutor | None = None
_pending: set[Future] = set()
_seen: set[str] = set()  # URLs this process already fetched or is fetching
_lock = threading.Lock()


def _host_allowed(url: str) -> bool:
    """Only http(s) URLs on an allow-listed delivery host (hostname, any port)."""
    parts = urlsplit(url)
    hosts = {h.strip().lower() for h in settings.REPLICATE_FILE_HOSTS if h.strip()}
    return parts.scheme in ("http", "https") and (parts.hostname or "").lower() in hosts


def replicate_output_urls(prediction: dict[str, Any]) -> list[str]:
    """Allow-listed URLs found in a prediction's output (a string, list or dict of them)."""
    found: list[str] = []
    stack = [prediction.get("output")]
    steps = 0
    while stack and steps < URL_WALK_MAX:
        steps += 1
        item = stack.pop()
        if isinstance(item, str):
            if item.startswith(("http://", "https://")) and _host_allowed(item) and item not in found:
                found.append(item)
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif isinstance(item, dict):
            stack.extend(reversed(list(item.values())))
    return found


def output_file_id(url: str) -> uuid.UUID:
    """The BinaryFile id of a fetched output: one per URL."""
    return uuid.uuid5(uuid.NAMESPACE_URL, url)


def _download(url: str, request_id: str, response_id: str) -> None:
    """Fetch one output (size-capped, no redirects) and record it; skip when already stored."""
    from logs.models import BinaryFile

    fid = output_file_id(url)
    try:
        if BinaryFile.objects.filter(id=fid).exists():
            return
        cap = settings.REPLICATE_FILE_MAX_BYTES
        timeout = httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT)
        # No credentials go to the delivery host, and no redirect may lead off the allow-list.
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client, \
                client.stream("GET", url) as answer:
            ctype = answer.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if answer.status_code != 200 or not ctype.startswith(MEDIA_TYPES):
                log.warning("replicate output %s not saved: status %s, type %r", url, answer.status_code, ctype)
                return
            if int(answer.headers.get("content-length") or 0) > cap:
                log.warning("replicate output %s not saved: larger than REPLICATE_FILE_MAX_BYTES", url)
                return
            now = datetime.now(timezone.utc)
            name = f"replicate/{now:%Y-%m-%d}/{fid.hex}{extension_for(ctype)}"
            digest, size = hashlib.sha256(), 0
            from logs.models import payload_storage

            with payload_open(name) as dest:
                for chunk in answer.iter_bytes(1 << 16):
                    size += len(chunk)
                    if size > cap:
                        break
                    digest.update(chunk)
                    dest.write(chunk)
            if size > cap:
                payload_storage().delete(name)
                log.warning("replicate output %s not saved: larger than REPLICATE_FILE_MAX_BYTES", url)
                return
        BinaryFile.objects.bulk_create([BinaryFile(
            id=fid, request_id=request_id, response_id=response_id, file=name, role=OUTPUT_ROLE,
            field_name="output", filename=PurePosixPath(urlsplit(url).path).name[:255], content_type=ctype,
            size=size, sha256=digest.hexdigest(), created_at=now)], ignore_conflicts=True)
    except Exception as exc:  # a failed copy must never disturb the exchange or the log
        log.warning("replicate output %s not saved: %s: %s", url, type(exc).__name__, exc)
        with _lock:
            _seen.discard(url)  # a later poll may try again
    finally:
        connections.close_all()  # this pool thread's own connection


def replicate_downloads_schedule(responses: Iterable[Any]) -> int:
    """Queue the outputs of freshly written responses for download; returns how many were queued."""
    global _pool
    queued = 0
    for resp in responses:
        for url in getattr(resp, "output_urls", None) or []:
            with _lock:
                if url in _seen:
                    continue
                _seen.add(url)
                if _pool is None:
                    _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="replicate-files")
                future = _pool.submit(_download, url, str(resp.request_id), str(resp.id))
                _pending.add(future)
                future.add_done_callback(_pending.discard)
            queued += 1
    return queued


def replicate_downloads_wait(timeout: float = 30.0) -> bool:
    """Wait for queued downloads (tests, shutdown); True when none is left."""
    with _lock:
        pending = list(_pending)
    done, not_done = wait(pending, timeout=timeout)
    return not not_done


def replicate_seen_reset() -> None:
    """Forget which URLs this process fetched (tests start from an empty store)."""
    with _lock:
        _seen.clear()
