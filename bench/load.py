"""Drives wrk (Debian's `wrk` package) with bench/wrk/post.lua and parses its summary."""

import json
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"
AUTH = "Authorization: Bearer " + "sk-" + "bench0123456789abcdefghijklmnop"  # fake; split so no key-like literal

CHAT_BODY = json.dumps({"model": "gpt-4o-mini", "messages": [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Say hello in one short sentence."}]}).encode()
STREAM_BODY = json.dumps({"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True},
                          "messages": [{"role": "user", "content": "Count to five."}]}).encode()
SPEECH_BODY = json.dumps({"model": "tts-1", "voice": "alloy", "input": "hello"}).encode()
UNIQUE = b"__N__"  # post.lua numbers the requests of a run in its place; wrk_run makes it unique to the run


def body_unique(body: bytes) -> bytes:
    """The body with the UNIQUE marker at the end of its last message (chat) or its input (speech):
    every request sent differs."""
    obj = json.loads(body)
    if "messages" in obj:
        obj["messages"][-1]["content"] += " " + UNIQUE.decode()
    else:
        obj["input"] += " " + UNIQUE.decode()
    return json.dumps(obj).encode()


@dataclass
class Scenario:
    """One load pattern: what to send and how many connections."""

    name: str
    path: str
    body: bytes
    connections: int
    headers: tuple[str, ...] = ()


SCENARIOS = [
    Scenario("chat c1", "/v1/chat/completions", CHAT_BODY, 1),
    Scenario("chat c16", "/v1/chat/completions", CHAT_BODY, 16),
    Scenario("chat c64", "/v1/chat/completions", CHAT_BODY, 64),
    Scenario("stream c16", "/v1/chat/completions", STREAM_BODY, 16, ("x-mock-events: 20",)),
    Scenario("binary 1MB c8", "/v1/audio/speech", SPEECH_BODY, 8, ("x-mock-size: 1048576",)),
]


def wrk_require() -> str:
    """Path of wrk, or exit with how to install it."""
    path = shutil.which("wrk")
    if not path:
        sys.exit("bench: `wrk` is not installed. Install it with:\n"
                 "    sudo apt-get update && sudo apt-get install -y wrk\n"
                 "(Debian/Ubuntu; on macOS: brew install wrk) and run the benchmark again.")
    return path


def wrk_run(base_url: str, scenario: Scenario, duration: float) -> dict:
    """Run wrk for one scenario; returns requests/s, p50/p99 in ms and error counts."""
    with tempfile.NamedTemporaryFile(suffix=".json") as body:
        body.write(scenario.body.replace(UNIQUE, f"{uuid.uuid4().hex}-".encode() + UNIQUE))
        body.flush()
        args = [wrk_require(), "-t1", f"-c{scenario.connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                "-s", str(LUA), base_url + scenario.path, "--", "POST", body.name, AUTH, *scenario.headers]
        out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line[len("WRK_JSON "):])
    secs = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    return {"rps": raw["requests"] / secs if secs else 0.0, "p50_ms": raw["p50_us"] / 1000,
            "p99_ms": raw["p99_us"] / 1000, "errors": errors, "requests": raw["requests"],
            "mb_s": raw["bytes"] / secs / 1e6 if secs else 0.0}
