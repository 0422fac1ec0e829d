"""Replicate: predictions (create, poll), their problem+json errors and the output files they point to."""

import base64
import binascii
import json
import re
import secrets
from datetime import datetime, timezone
from urllib.parse import unquote

from providers.base import EmbeddedFile, Payload, Provider, Usage, int_of, str_of, sub, usage_make

# A prediction of a model or deployment, or a training of one of the model's versions (any version's work
# names its model, so a key limited to models holds it whichever way the path names it).
MODEL_IN_PATH = re.compile(r"/(?:models|deployments)/([^/]+/[^/]+)/(?:versions/[^/]+/)?(?:predictions|trainings)")
# Creating a prediction (by version, model or deployment): the one request whose answer may be replayed.
PREDICTION_CREATE = re.compile(r"^/v1/(?:(?:models|deployments)/[^/]+/[^/]+/)?predictions/?$")
URL_WALK_MAX = 1000  # outputs are lists of a few URLs; bound the walk of odd shapes
DATA_IMAGE = re.compile(r"data:(image/[A-Za-z0-9.+-]+);base64,")


class Replicate(Provider):
    name = "replicate"
    label = "Replicate"
    prefixes = ("/replicate/v1/",)
    upstream_env = "REPLICATE_UPSTREAM_URL"
    upstream_default = "https://api.replicate.com"
    # Those that run a model: a prediction (of a version named in the body, of a model or a deployment named in the
    # path) and a training.
    model_posts = re.compile(r"^/v1/(?:(?:models|deployments)/[^/]+/[^/]+/(?:versions/[^/]+/)?)?(?:predictions"
                             r"|trainings)/?$")
    # Those whose use the log never sees: a training (billed by the time it runs).
    unmetered_posts = re.compile(r"/trainings/?$")
    # Those that run none: a file's upload, a model or a deployment created (its model, named, is checked), cancels.
    free_posts = re.compile(r"^/v1/(?:files|models|deployments)/?$|/cancel/?$")
    answer_headers = ("prefer", "cancel-after")  # `Prefer: wait` answers a finished prediction, without it a started one

    def stream_ended(self, tail: bytes) -> bool:
        """A prediction's stream ends with its done event."""
        return b"event: done" in tail

    def error_body(self, message: str, *, kind: str = "gateway_error", status: int = 500) -> bytes:
        """problem+json: {"title", "detail", "status"}."""
        return json.dumps({"title": kind, "detail": message, "status": status}).encode()

    def error_text(self, answer: Payload) -> str | None:
        """problem+json's detail (title when there is none)."""
        return str_of(answer, "detail") or str_of(answer, "title")

    def failure_text(self, answer: Payload) -> str | None:
        """A prediction that failed is answered 201 (created) or 200 (polled): its error says why."""
        if sub(answer, "status") == "failed":
            return str_of(answer, "error") or "the prediction failed"
        return None

    def content_policy_answer(self, endpoint: str, query: str, payload: Payload) -> tuple[int, str, bytes]:
        """Replicate's safety checker: the prediction is created (201) and has failed, its error saying why."""
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        pid = secrets.token_hex(13)[:26]
        version = str_of(payload, "version") or ""
        prediction = {
            "id": pid, "model": self.request_model(endpoint, payload) or "", "version": version.split(":")[-1],
            "input": sub(payload, "input") or {}, "logs": "", "output": None, "data_removed": False,
            "error": "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
            "status": "failed", "created_at": now, "started_at": now, "completed_at": now, "metrics": {},
            "urls": {"cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel",
                     "get": f"https://api.replicate.com/v1/predictions/{pid}",
                     "web": f"https://replicate.com/p/{pid}"}}
        return 201, "application/json", json.dumps(prediction).encode()

    def request_model(self, endpoint: str, payload: Payload) -> str | None:
        """/v1/models/{owner}/{name}/predictions (or .../versions/{id}/trainings), else the body's version
        ("owner/name:hash" or a hash). The path is read decoded: a server that decodes `meta%2Fllama/predictions`
        runs meta/llama, and read raw it named no model, which a key limited to models let through."""
        found = MODEL_IN_PATH.search(unquote(endpoint))
        if found:
            return found.group(1)[:255]
        version = str_of(payload, "version")
        if version:
            return version.split(":", 1)[0][:255]
        return str_of(payload, "model")

    def cache_refusal(self, method: str, endpoint: str, body: bytes) -> str:
        """Only a prediction's creation: every other request reads or changes a prediction, a file, a training,
        a deployment. A creation naming a webhook is not either: a replay would never call it."""
        why = super().cache_refusal(method, endpoint, body)
        if why:
            return why
        if not PREDICTION_CREATE.match(endpoint):
            return "only creating a prediction is cached: this request changes what Replicate keeps"
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return ""
        if sub(payload, "webhook"):
            return "the prediction names a webhook, which a stored answer would never call"
        return ""

    def usage(self, answer: Payload) -> Usage:
        """A prediction: language models report token counts in metrics."""
        m = sub(answer, "metrics")
        return usage_make(sub(answer, "model") or None, int_of(m, "input_token_count"), int_of(m, "output_token_count"))

    def output_urls(self, answer: Payload) -> list[str]:
        """http(s) URLs in a prediction's output (a string, or lists and dicts of them).

        Replicate deletes outputs after an hour, so the log keeps a copy of each.
        """
        found: list[str] = []
        for _, _, item in _output_strings(answer):
            if item.startswith(("http://", "https://")) and item not in found:
                found.append(item)
        return found

    def embedded_files(self, answer: Payload) -> list[EmbeddedFile]:
        """Images a prediction's output holds inline as base64 data: URIs, which Replicate sends in place of
        delivery URLs to a client that waited for the answer (Prefer: wait, what the official clients' run()
        does); cut out into files as OpenAI's b64_json images are."""
        found: list[EmbeddedFile] = []
        for holder, key, item in _output_strings(answer):
            head = DATA_IMAGE.match(item)
            if head is None:
                continue
            try:
                data = base64.b64decode(item[head.end():], validate=True)
            except (binascii.Error, ValueError):
                continue
            found.append(EmbeddedFile(f"output{len(found)}", head.group(1).lower(), data, holder, key))
        return found


def _output_strings(answer: Payload) -> list[tuple[dict | list, str | int, str]]:
    """The strings of a prediction's output (a string, or lists and dicts of them), each with where it sits."""
    found: list[tuple[dict | list, str | int, str]] = []
    stack: list[tuple[dict | list, str | int]] = [(answer, "output")] if isinstance(answer, dict) else []
    steps = 0
    while stack and steps < URL_WALK_MAX:
        steps += 1
        holder, key = stack.pop()
        item = holder[key]  # type: ignore[index]
        if isinstance(item, str):
            found.append((holder, key, item))
        elif isinstance(item, list):
            stack.extend((item, i) for i in reversed(range(len(item))))
        elif isinstance(item, dict):
            stack.extend((item, k) for k in reversed(list(item)))
    return found
