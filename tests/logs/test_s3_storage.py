"""An S3 payload store uploads a local file from its path: the parts are read from disk as they go
up, never copied into memory, one at a time on the caller's own thread."""

import hashlib
import threading
import tracemalloc
from io import StringIO

import pytest

from django.core.files.storage import storages

from logs.storage import payload_exists, payload_move_in, payload_save_bytes

MIB = 1 << 20


def _body(size: int) -> bytes:
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32))


def test_a_local_file_goes_up_in_parts_read_from_disk(s3_store, s3_server, tmp_path):
    data = _body(20 * MIB)  # three 8 MiB parts
    path = tmp_path / "body.spool"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    del data
    assert not payload_exists("openai/2026-01-01/big.bin")  # the client made (its models loaded) before measuring
    threads: list[int] = []
    storages["payloads"].bucket.meta.client.meta.events.register(
        "before-call.s3.UploadPart", lambda **_: threads.append(threading.get_ident()))
    tracemalloc.start()
    try:
        name = payload_move_in("openai/2026-01-01/big.bin", path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A part copied into memory would cost 8 MiB by itself (s3transfer's path for open files); read
    # from disk, each part in flight holds the 1 MiB chunks its checksum and signature are read in.
    assert peak < 8 * MIB, f"{peak / MIB:.1f} MiB allocated while uploading"
    # No transfer threads: each would keep its own malloc arena holding those chunks afterwards.
    assert threads == [threading.get_ident()] * 3
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"t/{name}")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == 20 * MIB
    assert hashlib.sha256(s3_server.objects("t")[name]).hexdigest() == digest
    assert not path.exists()  # copied up, so the local file goes


def test_bytes_in_memory_are_stored_too(s3_store, s3_server):
    name = payload_save_bytes("openai/2026-01-01/small.png", b"\x89PNG small")
    assert s3_server.objects("t") == {name: b"\x89PNG small"}
    assert s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"t/{name}")["ContentType"] == "image/png"


def _exchange_with_file(name: str) -> "BinaryFile":
    from logs.models import BinaryFile
    from tests.logs.factory import exchange_make

    req = exchange_make()
    stored = payload_save_bytes(name, b"\x89PNG " + name.encode())
    return BinaryFile.objects.create(request=req, file=stored, role="response_image", size=10, content_type="image/png",
                                     created_at=req.created_at)


@pytest.mark.django_db(transaction=True)
def test_files_the_store_cannot_delete_are_noted_and_the_next_prune_deletes_them(s3_store, s3_server, admin_client):
    from django.core.management import call_command

    from logs.models import PayloadOrphan, Request

    gone, kept = _exchange_with_file("openai/2026-01-01/gone.png"), _exchange_with_file("openai/2026-01-01/kept.png")
    s3_server.stop()
    # The store down: a file that may well be there is a 503, not a 404.
    r = admin_client.get(f"/admin/logs/request/file/{kept.id.hex}/")
    assert r.status_code == 503 and b"cannot be reached" in r.content
    # The delete goes through (it was a 500, the rows gone anyway), the file noted.
    r = admin_client.post(f"/admin/logs/request/{gone.request_id.hex}/delete/", {"post": "yes"}, follow=True)
    assert r.status_code == 200 and b"1 stored file(s) could not be deleted" in r.content
    assert not Request.objects.filter(pk=gone.request_id).exists()
    assert list(PayloadOrphan.objects.values_list("name", flat=True)) == [gone.file.name]
    # The store back (moto comes back empty: the file is put there again), prune_logs deletes it.
    s3_server.start()
    payload_save_bytes(gone.file.name, b"still here")
    out, err = StringIO(), StringIO()
    call_command("prune_logs", "--older-than", "30d", stdout=out, stderr=err)
    assert "deleted 1 files that earlier deletes had left in the store" in out.getvalue() and not err.getvalue()
    assert not payload_exists(gone.file.name) and not PayloadOrphan.objects.exists()


def test_a_store_that_stops_answering_is_given_up_on_in_seconds_not_minutes():
    """botocore's defaults (60 s timeouts, 5 attempts) held a prune batch three minutes on a hung store."""
    from botocore.config import Config

    from logs.s3_storage import PayloadS3Storage

    config = PayloadS3Storage(bucket_name="b").client_config
    assert (config.connect_timeout, config.read_timeout, config.retries["max_attempts"]) == (5, 30, 3)
    assert config.s3 is not None  # django-storages' own settings kept (addressing style)
    own = PayloadS3Storage(bucket_name="b", client_config=Config(read_timeout=120)).client_config
    assert own.read_timeout == 120 and own.connect_timeout == 5  # an operator's OPTIONS win
