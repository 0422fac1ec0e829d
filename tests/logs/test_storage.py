"""Every payload file goes through Django's storage API: the file-producing flows on another backend.

The payload store is switched to Django's InMemoryStorage, then to an S3 bucket (moto); each flow
that keeps files (images cut out of JSON answers, multipart uploads, binary answers, non-UTF-8 and
large bodies, Replicate outputs) runs through a live gateway, and every file must be in that store, byte for
byte, with nothing written to the local payload folder. The admin serves them from it and
deleting the exchanges removes them from it.
"""

import base64
import hashlib

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.core.files.storage import storages
from django.test import Client

from logs.models import BinaryFile, Request
from logs.pipeline.output_files import output_files_reset, output_files_wait
from logs.retention import queryset_delete
from testing.media import PNG

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "storageTEST0123456789abcdefXYZ"


@pytest.fixture(params=["memory", "s3"])
def other_store(request, settings, payload_dir):
    """Payload files in memory, or in an S3 bucket (moto), instead of the local folder."""
    if request.param == "s3":
        store = request.getfixturevalue("s3_store")
        assert type(store).__name__ == "PayloadS3Storage"
        return store
    settings.STORAGES = {**settings.STORAGES, "payloads": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    store = storages["payloads"]
    assert type(store).__name__ == "InMemoryStorage"
    return store


def _flows(gw_url: str, settings) -> None:
    """Every flow that makes the log keep a file."""
    sdk = openai.OpenAI(api_key=KEY, base_url=f"{gw_url}/v1", max_retries=0)
    sdk.images.generate(model="gpt-image-1", prompt="red", response_format="b64_json")
    sdk.images.edit(model="gpt-image-1", image=("in.png", PNG + b"\x00" * 100, "image/png"), prompt="bluer")
    sdk.audio.speech.create(model="tts-1", voice="alloy", input="hello").read()
    auth = {"Authorization": f"Bearer {KEY}"}
    httpx.post(f"{gw_url}/v1/chat/completions", content=b'{"model": "\xff"}',
               headers={**auth, "Content-Type": "application/json"})
    settings.LOG_BODY_INLINE_MAX_BYTES = 100  # a text body over the inline limit is a file too
    httpx.post(f"{gw_url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x" * 500}]},
               headers=auth)
    settings.REPLICATE_FILE_HOSTS = ["127.0.0.1"]
    output_files_reset()
    rep = httpx.post(f"{gw_url}/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
                     json={"input": {"prompt": "x"}}, headers={**auth, "Prefer": "wait"})
    assert rep.status_code in (200, 201)


def test_file_producing_flows_on_another_storage_backend(other_store, gateway, upstream, log_flush, payload_dir,
                                                          settings):
    _flows(gateway.url, settings)
    log_flush()
    assert output_files_wait(timeout=20)
    files = list(BinaryFile.objects.all())
    roles = sorted({f.role for f in files})
    assert roles == ["request_body", "request_part", "response_body", "response_image", "response_output"]
    for f in files:
        with other_store.open(f.file.name, "rb") as stored:
            data = stored.read()
        assert len(data) == f.size and hashlib.sha256(data).hexdigest() == f.sha256, f.file.name
    # Nothing reached the local folder: the store really is the in-memory one.
    assert [p for p in payload_dir.rglob("*") if p.is_file()] == []
    image = next(f for f in files if f.role == "response_image")
    assert other_store.open(image.file.name).read() == PNG
    upload = next(f for f in files if f.role == "request_part" and f.field_name == "image")
    assert other_store.open(upload.file.name).read() == PNG + b"\x00" * 100
    assert base64.b64encode(PNG).decode() not in Request.objects.get(pk=image.request_id).response.body

    admin = Client()
    admin.force_login(User.objects.create_superuser("store-admin", "s@example.invalid", "pw"))
    served = admin.get(f"/admin/logs/request/file/{image.id.hex}/")
    assert served.status_code == 200 and b"".join(served.streaming_content) == PNG

    queryset_delete(Request.objects.all())
    assert not BinaryFile.objects.exists()
    assert all(not other_store.exists(f.file.name) for f in files)
