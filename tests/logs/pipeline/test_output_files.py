"""Which output URLs the log copies (logs/pipeline/output_files.py)."""

import pytest

from logs.pipeline.output_files import host_allowed


@pytest.mark.parametrize("url, allowed", [
    ("https://replicate.delivery/xezq/abc/out-0.webp", True),
    ("https://pbxt.replicate.delivery/abc/out-0.png", True),
    # Replicate delivers from other subdomains too: they were never copied, and Replicate deletes them in an hour.
    ("https://pb.replicate.delivery/abc/out-0.png", True),
    ("https://tjzk.replicate.delivery/xezq/abc/out-0.png", True),
    ("https://REPLICATE.delivery./abc/out-0.png", True),
    ("https://evilreplicate.delivery/out.png", False),
    ("https://replicate.delivery.example.com/out.png", False),
    ("https://user@example.com/replicate.delivery/out.png", False),
    ("ftp://replicate.delivery/out.png", False),
    ("https:///out.png", False),
])
def test_delivery_hosts_and_their_subdomains_only(settings, url, allowed):
    settings.REPLICATE_FILE_HOSTS = ["replicate.delivery"]
    assert host_allowed(url) is allowed


@pytest.mark.django_db(transaction=True)
def test_an_output_that_lands_after_its_exchange_was_deleted_leaves_no_file_in_the_store(settings, payload_dir):
    # The admin or prune_logs deleted the exchange while its output downloaded: the file's row fails its
    # foreign key, and the file, already in the store, stayed there with no row naming it.
    import respx

    from logs.models import BinaryFile, Request
    from logs.pipeline.output_files import _download
    from logs.retention import queryset_delete
    from tests.logs.factory import PNG, exchange_make

    settings.REPLICATE_FILE_HOSTS = ["replicate.delivery"]
    kept, deleted = (exchange_make(provider="replicate", endpoint="/v1/predictions") for _ in range(2))
    queryset_delete(Request.objects.filter(pk=deleted.pk))
    with respx.mock:
        for req in (kept, deleted):
            url = f"https://replicate.delivery/{req.pk.hex}/out-0.png"
            respx.get(url).respond(200, content=PNG, headers={"content-type": "image/png"})
            _download(url, "replicate", req.pk.hex, req.response.pk.hex)
    stored = [str(p.relative_to(payload_dir)) for p in payload_dir.rglob("*") if p.is_file()]
    assert stored == [BinaryFile.objects.get(request_id=kept.pk).file.name]  # the kept exchange's output alone
