"""Files an answer points to (Replicate's prediction outputs), copied into the payload store.

Replicate deletes outputs after an hour, so the gateway keeps a copy of each URL its provider
module names (`Provider.output_urls`) on an allow-listed host. A prediction is usually polled
many times and every poll repeats the same URLs: each URL is fetched once (its file id is
derived from the URL, so the row is its own dedupe key). Downloads run on a small thread pool of
the ingest process after the rows are committed: never on the event loop, never stalling the log.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, connections

from logs.ids import derive
from logs.pipeline.spool import SpoolWriter, spool_path
from logs.storage import PayloadStoreUnavailable, payload_move_in, payload_name

log = logging.getLogger(__name__)

OUTPUT_ROLE = "response_output"  # BinaryFile.Role.RESPONSE_OUTPUT: a file the answer pointed to
MEDIA_TYPES = ("image/", "audio/", "video/")
# Output files get ids derived from their URL under this fixed owner: one row per URL, ever.
OUTPUT_NAMESPACE = "00000000-0000-7000-8000-000000000000"
# Seconds between tries to put a downloaded output into a remote store that failed (about six
# minutes in all); the download itself is not repeated.
STORE_WAITS = (1, 2, 5, 10, 20, 30, 60, 60, 60, 60, 60)

_pool: ThreadPoolExecutor | None = None
_pending: set[Future] = set()
_seen: set[str] = set()  # URLs this process already fetched or is fetching
_lock = threading.Lock()


def host_allowed(url: str) -> bool:
    """Only http(s) URLs on an allow-listed delivery host or a subdomain of one (any port): Replicate's
    delivery hosts vary (replicate.delivery, pbxt., pb., tjzk.replicate.delivery), all its own."""
    parts = urlsplit(url)
    hosts = {h.strip().lower().rstrip(".") for h in settings.REPLICATE_FILE_HOSTS if h.strip()}
    host = (parts.hostname or "").lower().rstrip(".")
    return parts.scheme in ("http", "https") and bool(host) and any(
        host == h or host.endswith("." + h) for h in hosts)


def output_file_id(url: str) -> uuid.UUID:
    """The BinaryFile id of a fetched output: one per URL."""
    return derive(OUTPUT_NAMESPACE, url)


class _TooLarge(Exception):
    """The file grew past REPLICATE_FILE_MAX_BYTES while it downloaded."""


def _download(url: str, provider: str, request_id: str, response_id: str) -> None:
    """Fetch one output (size-capped, no redirects) and record it; skip when already stored."""
    import httpx  # here: only Replicate's answers need it, and the ingest process starts without it

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
                # Usually a 403 or 404: Replicate deleted it (outputs last an hour). Not tried again.
                _unsaved(response_id, url, f"status {answer.status_code}, type {ctype!r}")
                return
            if int(answer.headers.get("content-length") or 0) > cap:
                _unsaved(response_id, url, "larger than REPLICATE_FILE_MAX_BYTES")
                return
            now = datetime.now(timezone.utc)
            name = payload_name(provider, now.timestamp(), fid.hex, ctype)
            spool = SpoolWriter(f"{fid.hex}.output", ctype)
            try:
                for chunk in answer.iter_bytes(1 << 16):
                    if spool.size + len(chunk) > cap:
                        raise _TooLarge
                    spool.write(chunk)
                ref = spool.close()
            except BaseException:
                spool.discard()
                raise
        name = _move_in(name, ref)
        size, sha = ref.size, ref.sha256
        try:
            BinaryFile.objects.bulk_create([BinaryFile(
                id=fid, request_id=request_id, response_id=response_id, file=name, role=OUTPUT_ROLE,
                field_name="output", filename=PurePosixPath(urlsplit(url).path).name[:255], content_type=ctype,
                size=size, sha256=sha, created_at=now)], ignore_conflicts=True)
        except IntegrityError:  # the exchange was deleted (the admin, prune_logs) while its output downloaded
            from logs.retention import files_delete
            files_delete([name])  # else it stays in the store with no row naming it
            log.info("output file %s not saved: its exchange was deleted meanwhile", url)
    except _TooLarge:
        _unsaved(response_id, url, "larger than REPLICATE_FILE_MAX_BYTES")
    except PayloadStoreUnavailable as exc:  # downloaded, and the store never came back
        _unsaved(response_id, url, str(exc))
        with _lock:
            _seen.discard(url)  # a later poll may try again
    except Exception as exc:  # a failed copy must never disturb the exchange or the log
        log.warning("output file %s not saved: %s: %s", url, type(exc).__name__, exc)
        with _lock:
            _seen.discard(url)  # a later poll may try again
    finally:
        connections.close_all()  # this pool thread's own connection


def _move_in(name: str, ref) -> str:
    """The downloaded file into the store, waiting out an outage of a remote one (STORE_WAITS): the
    copy may be the only one left once Replicate deletes its own. The spool goes either way."""
    path = spool_path(ref.spool)
    try:
        for pause in (*STORE_WAITS, None):
            try:
                return payload_move_in(name, path)
            except PayloadStoreUnavailable as exc:
                if pause is None:
                    raise
                log.warning("output file %s waits for the payload store (%s): next try in %g s", name, exc, pause)
                time.sleep(pause)
    finally:
        path.unlink(missing_ok=True)


def _unsaved(response_id: str, url: str, why: str) -> None:
    """An output the log does not keep: said on the console and on the row of the answer that named it (the
    row alone is what a reader of the log sees)."""
    log.warning("output file %s not saved: %s", url, why)
    _note(response_id, f"output file {url} not saved: {why}")


def _note(response_id: str, note: str) -> None:
    """Add a note to an answer's row (what the log could not keep)."""
    from logs.models import Response

    for said in Response.objects.filter(id=response_id).values_list("error_message", flat=True):
        Response.objects.filter(id=response_id).update(error_message="; ".join(n for n in (said, note) if n))


def output_files_schedule(responses: Iterable[Any]) -> int:
    """Queue the allow-listed outputs of freshly written responses for download; returns how many."""
    global _pool
    queued = 0
    for resp in responses:
        for url in getattr(resp, "output_urls", None) or []:
            if not host_allowed(url):
                continue
            with _lock:
                if url in _seen:
                    continue
                _seen.add(url)
                if _pool is None:
                    _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="output-files")
                future = _pool.submit(_download, url, resp.output_provider, str(resp.request_id), str(resp.id))
                _pending.add(future)
                future.add_done_callback(_pending.discard)
            queued += 1
    return queued


def output_files_wait(timeout: float = 30.0) -> bool:
    """Wait for queued downloads (tests, shutdown); True when none is left."""
    with _lock:
        pending = list(_pending)
    done, not_done = wait(pending, timeout=timeout)
    return not not_done


def output_files_reset() -> None:
    """Forget which URLs this process fetched (tests start from an empty store)."""
    with _lock:
        _seen.clear()
