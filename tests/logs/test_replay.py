"""Replay from the admin: what is sent again."""

import pytest

from logs.replay import replay_headers
from providers import registry
from tests.logs.factory import exchange_make

pytestmark = pytest.mark.django_db


def test_a_body_logged_decoded_is_replayed_without_its_content_encoding():
    # A gzip request body is logged decoded, and the replay sends that text: with the original's
    # Content-Encoding the upstream would fail to decode it.
    req = exchange_make(headers=[["Authorization", "Bearer sk-…9f2c"], ["Content-Type", "application/json"],
                                 ["Content-Encoding", "gzip"]])
    sent = replay_headers(req, registry().get("openai"), provider_key="sk-new", gateway_key="")
    names = [name.lower() for name, _ in sent]
    assert "content-encoding" not in names and "content-type" in names
