"""End to end: Replicate's HTTP API through a live gateway (httpx), outputs saved once."""

import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from testing.media import PNG
from logs.models import BinaryFile, Request, Response
from logs.pipeline.output_files import output_files_reset, output_files_wait

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "r8_E2ETESTtoken0123456789abcdefXYZ3"


@pytest.fixture
def replicate(gateway, settings):
    """An httpx client on the gateway's Replicate prefix; the mock is an allowed delivery host."""
    settings.REPLICATE_FILE_HOSTS = ["127.0.0.1"]
    output_files_reset()
    with httpx.Client(base_url=f"{gateway.url}/replicate/v1",
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
    output_files_wait()


def _settle(log_flush) -> None:
    log_flush()
    assert output_files_wait(timeout=20)


def test_image_prediction_polled_output_saved_once(replicate, upstream, log_flush, payload_dir):
    created = replicate.post("/models/black-forest-labs/flux-schnell/predictions",
                             json={"input": {"prompt": "a red square"}})
    assert created.status_code == 201 and created.json()["status"] == "starting"
    pid = created.json()["id"]
    polls = [replicate.get(f"/predictions/{pid}").json() for _ in range(3)]
    assert [p["status"] for p in polls] == ["processing", "succeeded", "succeeded"]
    url = polls[-1]["output"][0]
    assert url.startswith(upstream.url)  # the client still gets the delivery URL unchanged
    _settle(log_flush)

    create_req = Request.objects.get(method="POST")
    assert create_req.provider == "replicate" and create_req.model == "black-forest-labs/flux-schnell"
    assert upstream.received[0].header("authorization") == f"Bearer {TOKEN}"
    assert TOKEN not in str(create_req.headers)
    # Two polls named the same URL: it was fetched once and stored once.
    fetched = [r for r in upstream.received if r.path.startswith("/replicate-files/")]
    assert len(fetched) == 1 and fetched[0].header("authorization") is None  # no token to the file host
    saved = BinaryFile.objects.get()
    assert saved.content_type == "image/png" and saved.size == len(PNG) and len(saved.sha256) == 64
    assert (payload_dir / saved.file.name).read_bytes() == PNG
    assert saved.file.name.startswith("replicate/") and saved.file.name.endswith(".png")
    first_success = Response.objects.filter(request__method="GET", body__contains="succeeded").earliest("created_at")
    assert saved.response_id == first_success.id
    for resp in Response.objects.all():
        assert resp.model == "black-forest-labs/flux-schnell"
        assert resp.input_tokens is None and resp.cost_usd is None  # image models report no tokens


def test_language_model_tokens_and_cost(replicate, log_flush, tmp_path, settings):
    """genai-prices has no Replicate prices: a PRICE_TABLE_PATH entry prices its models."""
    prices = tmp_path / "prices.json"
    prices.write_text('{"replicate": {"meta/meta-llama-3-8b-instruct": {"input": 0.05, "output": 0.25}}}')
    settings.PRICE_TABLE_PATH = str(prices)
    r = replicate.post("/models/meta/meta-llama-3-8b-instruct/predictions", json={"input": {"prompt": "hi"}},
                       headers={"Prefer": "wait"})
    assert r.json()["status"] == "succeeded" and "".join(r.json()["output"]) == "Hello from Llama"
    _settle(log_flush)
    resp = Response.objects.get()
    assert resp.model == "meta/meta-llama-3-8b-instruct"
    assert (resp.input_tokens, resp.output_tokens, resp.total_tokens) == (11, 3, 14)
    assert resp.cost_usd == (Decimal(11) * Decimal("0.05") + Decimal(3) * Decimal("0.25")) / 1_000_000
    assert resp.price_source == "PRICE_TABLE_PATH"
    assert not BinaryFile.objects.exists()  # text outputs are no files


def test_output_on_a_host_not_allowed_is_not_fetched(replicate, upstream, settings, log_flush):
    settings.REPLICATE_FILE_HOSTS = ["replicate.delivery"]
    r = replicate.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {}},
                       headers={"Prefer": "wait"})
    assert r.json()["output"][0].startswith("http://127.0.0.1")
    _settle(log_flush)
    assert not any(x.path.startswith("/replicate-files/") for x in upstream.received)
    assert not BinaryFile.objects.exists()


def test_output_over_the_size_cap_is_not_kept(replicate, settings, log_flush, payload_dir):
    settings.REPLICATE_FILE_MAX_BYTES = 10
    r = replicate.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {}},
                       headers={"Prefer": "wait"})
    _settle(log_flush)
    assert not BinaryFile.objects.exists()
    assert not list(payload_dir.rglob("*.png"))  # the partial download was removed
    resp = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
    assert "not saved: larger than REPLICATE_FILE_MAX_BYTES" in resp.error_message


def test_an_expired_output_is_said_on_the_row(replicate, upstream, log_flush):
    # Replicate deletes outputs after an hour: the delivery host answers 404. The row of the answer that named
    # the file says it was not kept, and why (a console warning alone reached nobody reading the log).
    r = replicate.post("/models/acme/expired-image/predictions", json={"input": {}}, headers={"Prefer": "wait"})
    url = r.json()["output"][0]
    _settle(log_flush)
    assert any(x.path.startswith("/replicate-files/") for x in upstream.received)  # it was tried
    assert not BinaryFile.objects.exists()
    resp = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
    assert f"output file {url} not saved: status 404" in resp.error_message and resp.outcome == "completed"


def test_audio_output_saved(replicate, log_flush, payload_dir):
    replicate.post("/models/meta/musicgen/predictions", json={"input": {}}, headers={"Prefer": "wait"})
    _settle(log_flush)
    saved = BinaryFile.objects.get()
    assert saved.content_type == "audio/mpeg" and saved.file.name.endswith(".mp3")
    assert (payload_dir / saved.file.name).read_bytes()[:3] == b"ID3"


@pytest.mark.parametrize("outage", [2, 99])
def test_an_output_waits_out_a_store_outage_and_is_said_lost_when_it_lasts(replicate, log_flush, payload_dir, settings,
                                                                          monkeypatch, outage):
    # Replicate deletes its copy after an hour and a Prefer: wait call is never polled again: the
    # download is kept and put into the store when it answers (it was dropped at once, its spool left).
    import logs.pipeline.output_files as output_files
    from logs.storage import PayloadStoreUnavailable

    monkeypatch.setattr(output_files, "STORE_WAITS", (0.05,) * 3)
    real, tries = output_files.payload_move_in, []

    def flaky(name, path):
        tries.append(name)
        if len(tries) <= outage:
            raise PayloadStoreUnavailable("payload store unavailable: EndpointConnectionError: down")
        return real(name, path)

    monkeypatch.setattr(output_files, "payload_move_in", flaky)
    r = replicate.post("/models/black-forest-labs/flux-schnell/predictions", json={"input": {}},
                       headers={"Prefer": "wait"})
    _settle(log_flush)
    assert not list(Path(settings.SPOOL_DIR).rglob("*.output"))  # no spool file left behind
    if outage == 2:
        assert len(tries) == 3 and (payload_dir / BinaryFile.objects.get().file.name).read_bytes() == PNG
    else:
        assert len(tries) == 4 and not BinaryFile.objects.exists()
        resp = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
        assert "not saved: payload store unavailable" in resp.error_message and resp.outcome == "completed"


def test_with_the_cache_on_polls_reach_replicate_and_only_creations_are_replayed(replicate, upstream, log_flush):
    """A poll answered from the cache would say "processing" forever: the client would never see its result."""
    cache = {"X-Gateway-Cache": "600"}
    created = replicate.post("/models/meta/llama-3-8b/predictions", json={"input": {"prompt": "hi"}}, headers=cache)
    pid = created.json()["id"]
    polls = [replicate.get(f"/predictions/{pid}", headers=cache) for _ in range(3)]
    assert [p.json()["status"] for p in polls] == ["processing", "succeeded", "succeeded"]
    assert {p.headers["x-gateway-cache"] for p in polls} == {"BYPASS"}
    canceled = [replicate.post(f"/predictions/{pid}/cancel", headers=cache) for _ in range(2)]
    assert {c.headers["x-gateway-cache"] for c in canceled} == {"BYPASS"}
    # The same creation again is the cache's to answer (no second prediction is run) ...
    again = replicate.post("/models/meta/llama-3-8b/predictions", json={"input": {"prompt": "hi"}}, headers=cache)
    assert (created.headers["x-gateway-cache"], again.headers["x-gateway-cache"]) == ("MISS", "HIT")
    assert again.json()["id"] == pid
    # ... unless it names a webhook: a replay would never call it.
    hooked = {"input": {"prompt": "hi"}, "webhook": "https://example.com/hook"}
    answers = [replicate.post("/models/meta/llama-3-8b/predictions", json=hooked, headers=cache) for _ in range(2)]
    assert {a.headers["x-gateway-cache"] for a in answers} == {"BYPASS"}
    assert answers[0].json()["id"] != answers[1].json()["id"]
    log_flush()
    poll = Response.objects.get(request_id=polls[0].headers["x-gateway-request-id"])
    assert {"step": "cache", "decision": "bypass: a GET reads or changes what the upstream keeps"} in poll.steps


def test_an_image_inlined_as_a_data_uri_is_stored_as_a_file(replicate, log_flush, payload_dir):
    """Replicate answers some image models' Prefer: wait creations (the official clients' run()) with the image
    inline, base64 in a data: URI: the log kept the base64 in the body and no file."""
    r = replicate.post("/models/black-forest-labs/flux-inline/predictions", json={"input": {"prompt": "red"}},
                       headers={"Prefer": "wait"})
    assert r.json()["output"][0].startswith("data:image/png;base64,")  # the client gets it as it came
    _settle(log_flush)
    saved = BinaryFile.objects.get()
    assert (saved.role, saved.content_type, saved.size) == ("response_image", "image/png", len(PNG))
    assert (payload_dir / saved.file.name).read_bytes() == PNG
    logged = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
    assert "base64" not in logged.body and json.loads(logged.body)["output"][0]["binary_file_id"] == str(saved.id)


def test_a_failed_prediction_is_an_error_of_the_log_with_its_reason(replicate, log_flush):
    """Replicate answers a prediction that failed with 200 (or 201): the log listed it as a success."""
    created = replicate.post("/models/acme/broken-model/predictions", json={"input": {}})
    pid = created.json()["id"]
    polls = [replicate.get(f"/predictions/{pid}") for _ in range(2)]
    assert [(p.status_code, p.json()["status"]) for p in polls] == [(200, "processing"), (200, "failed")]
    log_flush()
    running, failed = (Response.objects.get(request_id=p.headers["x-gateway-request-id"]) for p in polls)
    assert (running.is_error, running.error_message) == (False, "")
    assert (failed.is_error, failed.error_message, failed.outcome) == (True, "CUDA out of memory", "completed")
    assert Response.objects.get(request_id=created.headers["x-gateway-request-id"]).is_error is False


def test_a_failed_prediction_is_not_kept_by_the_cache(replicate, upstream):
    """Its 201 was stored like a success: a retry was answered the same failure until the entry expired."""
    headers = {"Prefer": "wait", "X-Gateway-Cache": "600"}
    answers = [replicate.post("/models/acme/broken-model/predictions", json={"input": {}}, headers=headers)
               for _ in range(2)]
    assert [(a.status_code, a.json()["status"], a.headers["x-gateway-cache"]) for a in answers] == [
        (201, "failed", "MISS")] * 2
    assert answers[0].json()["id"] != answers[1].json()["id"]  # each try ran on Replicate
