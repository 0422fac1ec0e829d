"""Fills the log with realistic fake exchanges, fast, so the admin can be checked at scale."""

import hashlib
import json
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from django.db import transaction

from logs.ids import uuid7
from logs.models import BinaryFile, Request, Response
from logs.outcomes import Outcome
from logs.pricing import cost_compute
from logs.storage import payload_name, payload_save_bytes
from providers import Usage, registry
from testing.media import png_bytes, wav_bytes

GATEWAY_KEYS = ["", "team-a (fp 5f1d0c3e9a21)", "batch-jobs (fp 0b77e2c4d1f8)"]
# End users (None: the client named none) and how many conversations they hold (sessions of a few calls each).
USERS = [None, None, "alice@example.com", "bob@example.com", "carol@example.com", "ci-bot"]
SESSIONS_PER_USER = 400
CHAT_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "o4-mini"]
WORDS = ("the quick brown fox jumps over lazy dogs while engineers debug streaming proxies "
         "tokens latency invoice weather paris summary translate refactor python test").split()
ENDPOINTS = [  # (endpoint, weight)
    ("/v1/chat/completions", 60), ("/v1/responses", 14), ("/v1/embeddings", 14),
    ("/v1/models", 4), ("/v1/images/generations", 4), ("/v1/audio/speech", 4),
]
STATUSES = [  # (status, outcome, weight)
    (200, Outcome.COMPLETED, 930), (429, Outcome.COMPLETED, 25), (400, Outcome.COMPLETED, 10),
    (401, Outcome.COMPLETED, 5), (500, Outcome.COMPLETED, 10), (502, Outcome.UPSTREAM_ERROR, 5),
    (200, Outcome.CLIENT_ABORTED, 10), (413, Outcome.GATEWAY_ERROR, 2), (None, Outcome.INTERRUPTED, 3),
]


def _sentence(rng: random.Random, n: int) -> str:
    """A few random words."""
    return " ".join(rng.choice(WORDS) for _ in range(n))


class _Seeder:
    """Builds one exchange's rows at a time."""

    def __init__(self, rng: random.Random, files: bool) -> None:
        self.rng, self.files = rng, files
        self.png, self.wav = png_bytes(8, 8), wav_bytes()
        self.endpoints = [e for e, _ in ENDPOINTS]
        self.endpoint_w = [w for _, w in ENDPOINTS]
        self.statuses = [(s, o) for s, o, _ in STATUSES]
        self.status_w = [w for *_, w in STATUSES]

    def exchange(self, when: datetime) -> tuple[Request, Response | None, list[BinaryFile]]:
        """Rows of one fake exchange at a given time."""
        rng = self.rng
        rid, sid = uuid7(when.timestamp()), uuid7(when.timestamp())
        endpoint = rng.choices(self.endpoints, self.endpoint_w)[0]
        status, outcome = rng.choices(self.statuses, self.status_w)[0]
        model = "text-embedding-3-small" if "embeddings" in endpoint else (
            "gpt-image-1" if "images" in endpoint else "gpt-4o-mini-tts" if "audio" in endpoint
            else None if endpoint == "/v1/models" else rng.choice(CHAT_MODELS))
        stream = endpoint in ("/v1/chat/completions", "/v1/responses") and rng.random() < 0.45
        prompt = _sentence(rng, rng.randint(4, 30))
        body = self._request_body(endpoint, model, prompt, stream)
        headers = [["host", "localhost:8080"], ["content-type", "application/json"],
                   ["authorization", f"Bearer sk-…{rng.choice('abcdef')}{rng.randint(100, 999)}"],
                   ["user-agent", "OpenAI/Python 1.99.0"]]
        req = Request(id=rid, provider="openai", endpoint=endpoint, method="GET" if body is None else "POST",
                      headers=headers, body=body, body_size=len(body or ""), content_type="application/json",
                      client_addr=f"10.0.0.{rng.randint(2, 250)}", model=model, stream_requested=stream,
                      key_fingerprint=f"{rng.randint(0, 7):012x}", created_at=when,
                      gateway_key=rng.choice(GATEWAY_KEYS))
        req.end_user = rng.choice(USERS)
        if req.end_user and endpoint in ("/v1/chat/completions", "/v1/responses"):
            req.session_id = f"{req.end_user.split('@')[0]}-{rng.randint(1, SESSIONS_PER_USER)}"
            req.metadata = {"feature": rng.choice(["search", "support", "summaries"])}
        if outcome == Outcome.INTERRUPTED and rng.random() < 0.3:
            return req, None, []  # still in flight or lost: no response row
        duration = round(rng.lognormvariate(6.5, 0.9), 2)
        ttfb = round(duration * rng.uniform(0.05, 0.6), 2)
        resp = Response(id=sid, request_id=rid, status_code=status, headers=[["content-type", "application/json"]],
                        outcome=outcome, duration_ms=duration, ttfb_ms=ttfb, model=model,
                        content_type="application/json", created_at=when)  # as the gateway: the exchange's start
        resp.is_error = outcome != Outcome.COMPLETED or (status or 0) >= 400
        files: list[BinaryFile] = []
        if resp.is_error:
            resp.body = json.dumps({"error": {"message": f"fake {status} error", "type": "error"}})
            resp.error_message = "" if outcome == Outcome.COMPLETED else f"fake {outcome}"
        else:
            self._response_fill(req, resp, prompt, stream, files)
        resp.body_size = len(resp.body or "")
        return req, resp, files

    def _request_body(self, endpoint: str, model: str | None, prompt: str, stream: bool) -> str | None:
        """A JSON request body for an endpoint."""
        if endpoint == "/v1/chat/completions":
            return json.dumps({"model": model, "stream": stream, "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": prompt}]})
        if endpoint == "/v1/responses":
            return json.dumps({"model": model, "input": prompt, "stream": stream})
        if endpoint == "/v1/embeddings":
            return json.dumps({"model": model, "input": prompt})
        if endpoint == "/v1/images/generations":
            return json.dumps({"model": model, "prompt": prompt, "response_format": "b64_json"})
        if endpoint == "/v1/audio/speech":
            return json.dumps({"model": model, "input": prompt, "voice": "alloy", "response_format": "wav"})
        return None

    def _response_fill(self, req: Request, resp: Response, prompt: str, stream: bool,
                       files: list[BinaryFile]) -> None:
        """Body, tokens and files of a successful answer."""
        rng, ep = self.rng, req.endpoint
        reply = _sentence(rng, rng.randint(5, 60))
        inp, out = len(prompt.split()) + 12, len(reply.split())
        if ep in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings"):
            resp.input_tokens, resp.output_tokens = inp, (0 if "embeddings" in ep else out)
            resp.total_tokens = resp.input_tokens + resp.output_tokens
            resp.cached_tokens = rng.choice((0, 0, 0, inp // 2))
            resp.reasoning_tokens = rng.choice((0, out // 3)) if (req.model or "").startswith("o") else 0
            price = cost_compute(registry().get("openai"),
                                 Usage(req.model, resp.input_tokens, resp.output_tokens, resp.cached_tokens),
                                 at=resp.created_at)
            resp.cost_usd, resp.price_source = price.cost, price.source
        if ep == "/v1/chat/completions" and stream:
            words = reply.split(" ")
            events = [json.dumps({"object": "chat.completion.chunk", "model": req.model,
                                  "choices": [{"index": 0, "delta": {"content": w + " "}}]}) for w in words]
            resp.body = "".join(f"data: {e}\n\n" for e in events) + "data: [DONE]\n\n"
            resp.is_stream, resp.content_type = True, "text/event-stream"
            step = (resp.duration_ms - resp.ttfb_ms) / max(len(events), 1)
            resp.event_offsets_ms = [round(resp.ttfb_ms + i * step, 1) for i in range(len(events) + 1)]
            resp.stream_result = {"events": len(events) + 1, "result": {
                "object": "chat.completion", "model": req.model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply + " "},
                     "finish_reason": "stop"}]}}
        elif ep == "/v1/chat/completions":
            resp.body = json.dumps({"object": "chat.completion", "model": req.model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": inp, "completion_tokens": out, "total_tokens": inp + out}})
        elif ep == "/v1/responses":
            final = {"object": "response", "model": req.model, "status": "completed", "output": [
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": reply}]}],
                "usage": {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}}
            resp.body = json.dumps(final)
            if stream:
                events = [("response.output_text.delta", {"type": "response.output_text.delta", "delta": reply}),
                          ("response.completed", {"type": "response.completed", "response": final})]
                resp.body = "".join(f"event: {n}\ndata: {json.dumps(d)}\n\n" for n, d in events)
                resp.is_stream, resp.content_type = True, "text/event-stream"
                resp.event_offsets_ms = [resp.ttfb_ms, resp.duration_ms]
                resp.stream_result = {"events": 2, "result": final}
        elif ep == "/v1/embeddings":
            resp.body = json.dumps({"object": "list", "data": [{"embedding": [0.1, 0.2, 0.3]}]})
        elif ep == "/v1/models":
            resp.body = json.dumps({"object": "list", "data": [{"id": m} for m in CHAT_MODELS]})
        elif ep == "/v1/images/generations":
            resp.body = self._file_add(req, resp, files, "image/png", self.png, BinaryFile.Role.RESPONSE_IMAGE)
        elif ep == "/v1/audio/speech":
            resp.content_type = "audio/wav"
            self._file_add(req, resp, files, "audio/wav", self.wav, BinaryFile.Role.RESPONSE_BODY)
            resp.body, resp.body_size = None, len(self.wav)

    def _file_add(self, req: Request, resp: Response, files: list[BinaryFile], ctype: str, data: bytes,
                  role: str) -> str:
        """A file row (and, unless disabled, the file itself); returns the JSON body referencing it."""
        fid = uuid7(req.created_at.timestamp())
        name = payload_name("openai", req.created_at.timestamp(), fid.hex, ctype)
        if self.files:
            name = payload_save_bytes(name, data)
            files.append(BinaryFile(id=fid, request_id=req.id, response_id=resp.id, file=name, role=role,
                                    content_type=ctype, size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                                    created_at=resp.created_at))
        return json.dumps({"data": [{"b64_json": {"$gateway_file": name, "binary_file_id": str(fid),
                                                  "bytes": len(data)}}]})


def exchanges_seed(count: int, *, days: float = 30.0, batch: int = 5000, files: bool = True,
                   seed: int | None = None, progress: Callable[[int], None] | None = None) -> int:
    """Insert `count` fake exchanges spread over the last `days`, in batches; returns the count."""
    rng = random.Random(seed)
    seeder = _Seeder(rng, files)
    end = datetime.now(timezone.utc)
    span = timedelta(days=days) / max(count, 1)
    start = end - timedelta(days=days)
    done = 0
    while done < count:
        n = min(batch, count - done)
        reqs, resps, fls = [], [], []
        for i in range(done, done + n):
            req, resp, f = seeder.exchange(start + span * i + span * rng.random())
            reqs.append(req)
            if resp is not None:
                resps.append(resp)
            fls.extend(f)
        with transaction.atomic():
            Request.objects.bulk_create(reqs, batch_size=1000)
            Response.objects.bulk_create(resps, batch_size=1000)
            BinaryFile.objects.bulk_create(fls, batch_size=1000)
        done += n
        if progress:
            progress(done)
    return done
