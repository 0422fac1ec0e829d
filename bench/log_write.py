"""Log write speed: time logs.services.exchange_records_write on synthetic journal records.

Usage (an empty SQLite file, migrated first):
    DB_PATH=/tmp/bench.db python manage.py migrate -v0
    DB_PATH=/tmp/bench.db python -m bench.log_write --records 10000 --rounds 3

Records are what the proxy journals: chat completions (plain JSON with usage, one in three
streamed as SSE), written in batches of the log writer's size. Prints exchanges per second.
"""

import argparse
import json
import os
import random
import time
import uuid


def records_make(n: int, rng: random.Random) -> list[dict]:
    """n journal records (n/2 exchanges): a request record then its response record."""
    out: list[dict] = []
    now = time.time()
    for i in range(n // 2):
        rid, sid = uuid.uuid4().hex, uuid.uuid4().hex
        model = rng.choice(["gpt-4o-mini", "gpt-4o", "gpt-4.1", "o3-mini"])
        stream = i % 3 == 0
        body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi " * 20}]})
        out.append({"t": "req", "id": rid, "provider": "openai", "endpoint": "/v1/chat/completions",
                    "method": "POST", "query": "", "headers": [["authorization", "Bearer sk-…9f2c"]],
                    "body": body, "body_size": len(body), "content_type": "application/json",
                    "client": "127.0.0.1", "created": now + i / 1000, "instance": "bench",
                    "key_fp": f"{rng.randint(0, 7):012x}", "wire": "openai", "gateway_key": "team-a (fp 0123456789ab)"})
        usage = {"prompt_tokens": 30, "completion_tokens": (out_n := rng.randint(1, 400)), "total_tokens": 30 + out_n,
                 "prompt_tokens_details": {"cached_tokens": rng.choice([0, 0, 16])},
                 "completion_tokens_details": {"reasoning_tokens": rng.choice([0, 64])}}
        if stream:
            chunks = [{"model": model, "choices": [{"index": 0, "delta": {"content": f"w{k} "}}]} for k in range(20)]
            chunks.append({"model": model, "choices": [], "usage": usage})
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            ctype, offsets = "text/event-stream", [float(k) for k in range(22)]
        else:
            text = json.dumps({"object": "chat.completion", "model": model, "usage": usage, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok " * 50}, "finish_reason": "stop"}]})
            ctype, offsets = "application/json", None
        out.append({"t": "resp", "id": sid, "request_id": rid, "provider": "openai", "status": 200,
                    "headers": [["content-type", ctype]], "body": text, "body_size": len(text),
                    "content_type": ctype, "is_stream": stream, "event_offsets_ms": offsets,
                    "offsets_base_ms": 0.0, "duration_ms": 300.0, "ttfb_ms": 100.0, "outcome": "completed",
                    "created": now + i / 1000 + 0.3, "wire": "openai"})
    return out


def main() -> None:
    """Time the writes and print exchanges/s per round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    import django

    django.setup()
    from logs.services import exchange_records_write

    rng = random.Random(1)
    for r in range(args.rounds):
        records = records_make(args.records, rng)
        start = time.perf_counter()
        for i in range(0, len(records), args.batch):
            exchange_records_write(records[i:i + args.batch])
        took = time.perf_counter() - start
        print(f"round {r + 1}: {len(records)} records ({len(records) // 2} exchanges) in {took:.2f} s"
              f" = {len(records) / 2 / took:,.0f} exchanges/s")


if __name__ == "__main__":
    main()
