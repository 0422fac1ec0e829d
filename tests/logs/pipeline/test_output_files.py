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
