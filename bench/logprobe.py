"""Log-write probe: how many exchanges per second the log store absorbs.

Submits N synthetic chat exchanges (request + response records shaped exactly like the
gateway's) to a LogWriter and times until every one is committed to the database. Run with a
gateway environment (DATA_DIR with a migrated database): python -m bench.logprobe --n 5000
Prints one JSON line.
"""

import argparse
import json
import os
import time

from logs.ids import exchange_id_new
from logs.records import RequestRecord, ResponseRecord, record_line

HEADERS = [["host", "127.0.0.1:8080"], ["user-agent", "OpenAI/Python 1.50.0"], ["content-type", "application/json"],
           ["authorization", "Bearer sk-…mnop"], ["accept", "application/json"], ["content-length", "180"]]
REQ_BODY = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello."}]})
RESP_BODY = json.dumps({"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}})


def exchange_lines(instance: str) -> tuple[bytes, bytes]:
    """One request record's line and its response record's, as the proxy journals them."""
    rid, now = exchange_id_new(), time.time()
    req = RequestRecord(id=rid, provider="openai", endpoint="/v1/chat/completions", method="POST", headers=HEADERS,
                        body=REQ_BODY, body_size=len(REQ_BODY), content_type="application/json", client="127.0.0.1",
                        created=now, instance=instance, key_fp="abc123")
    resp = ResponseRecord(id=exchange_id_new(), request_id=rid, provider="openai", status=200,
                          headers=[["content-type", "application/json"], ["x-request-id", "mock"]],
                          content_type="application/json", duration_ms=1.5, ttfb_ms=1.2, created=now,
                          body=RESP_BODY, body_size=len(RESP_BODY))
    return record_line(req), record_line(resp)


def logprobe_run(n: int) -> dict:
    """Submit n exchanges, wait until they are in the database; exchanges/s and submit cost."""
    from logs.pipeline.writer import LogWriter

    writer = LogWriter()
    for line, kind in zip(exchange_lines("logprobe-warm-up"), ("req", "resp")):  # starts the ingest process
        writer.submit(line, kind)
    writer.flush(30)  # started (and any orphan recovery done): time the writing only
    records = [exchange_lines(writer.instance) for _ in range(n)]
    start = time.perf_counter()
    submit_time = 0.0
    for req, resp in records:
        t = time.perf_counter()
        writer.submit(req, "req")
        writer.submit(resp, "resp")
        submit_time += time.perf_counter() - t
    ok = writer.flush(120)
    elapsed = time.perf_counter() - start
    writer.stop(10)
    from logs.models import Request, Response

    return {"exchanges": n, "seconds": elapsed, "exchanges_per_s": n / elapsed,
            "drained": ok,
            "submit_us_per_exchange": submit_time / n * 1e6,
            "rows": [Request.objects.filter(instance=writer.instance).count(),
                     Response.objects.filter(request__instance=writer.instance).count()]}


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    print(json.dumps(logprobe_run(parser.parse_args().n)))
