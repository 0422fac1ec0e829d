"""Profile the gateway under load: py-spy samples the uvicorn worker while wrk drives chat c64.

Usage: python bench/profile.py [--seconds 8] [--scenario "chat c64"] [--controls ...] [--ingest]
Needs py-spy (pip install py-spy; may need ptrace rights, e.g. run as root or with
CAP_SYS_PTRACE). Prints the top functions by own time and by total time, and writes a
flamegraph SVG under bench/results/.
"""

import argparse
import dataclasses
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.compare import cpu_seconds  # noqa: E402
from bench.load import SCENARIOS, Scenario, wrk_run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def collapsed_top(path: Path, n: int) -> tuple[list, list, int]:
    """Own-time and total-time tops from a py-spy collapsed-stack file."""
    own, total, samples = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        c = int(count)
        frames = stack.split(";")
        samples += c
        own[frames[-1]] += c
        for f in set(frames):
            total[f] += c
    return own.most_common(n), total.most_common(n), samples


# Where a sample's time is counted: the innermost frame whose file matches a stage's pattern
# (a helper called by a stage, such as re or json, counts for that stage; frames of no stage,
# asyncio's loop itself, count as "event loop").
STAGES = [
    ("server: socket in/out (uvicorn)", ("uvicorn/",)),
    ("route (proxy/asgi, paths, providers)", ("proxy/asgi.py", "proxy/paths.py", "proxy/views.py", "providers/",
                                            "django/")),
    ("access and refusals", ("proxy/access.py", "proxy/refusals.py", "proxy/slots.py")),
    ("exchange setup (body, scrubber)", ("proxy/exchange.py", "proxy/request_body.py", "proxy/forwarded.py")),
    ("step: gateway key", ("proxy/key_policy.py", "keys/")),
    ("step: hooks", ("proxy/hooks.py", "proxy/hook_exchange.py")),
    ("step: cache", ("proxy/cache.py", "proxy/cache_store.py")),
    ("step: hold", ("proxy/hold.py",)),
    ("steps (runner, tags)", ("proxy/steps.py", "logs/tags.py")),
    ("upstream call (httpx, aiohttp)", ("proxy/upstream.py", "proxy/transport.py", "httpx/", "httpx_aiohttp/",
                                        "aiohttp/", "multidict/", "yarl/")),
    ("relay to the client", ("proxy/relay.py", "wire/")),
    ("record (rows, usage, redaction)", ("logs/pipeline/capture.py", "logs/redaction/", "logs/records.py",
                                         "logs/ids.py", "logs/usage", "logs/pricing/")),
    ("journal (write, hand to ingest)", ("logs/pipeline/",)),
    ("orchestration (proxy/forward)", ("proxy/forward.py",)),
]


def stage_of(frames: list[str]) -> str:
    """The stage of one sampled stack (innermost frame first)."""
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1:]
        for stage, patterns in STAGES:
            if any(pat in where for pat in patterns):
                return stage
    return "event loop (asyncio) and other"


def stages_count(path: Path) -> tuple[Counter, int]:
    """Samples per stage in a py-spy collapsed-stack file."""
    out, samples = Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        out[stage_of(stack.split(";"))] += int(count)
        samples += int(count)
    return out, samples


def controls_apply(sc: Scenario, env: dict[str, str], controls: set[str]) -> Scenario:
    """The scenario (and the gateway's environment) with the asked-for controls on."""
    if "key" in controls:
        from bench.keys import key_create

        sc = dataclasses.replace(sc, headers=(*sc.headers, f"X-Gateway-Key: {key_create(env)}"))
    if "hook" in controls:
        env["GATEWAY_HOOKS"] = "bench.noop_hook.Noop"
    if "cache" in controls:
        sc = dataclasses.replace(sc, headers=(*sc.headers, "X-Gateway-Cache: refresh=60"))
    if "hit" in controls:  # every request a cache hit (the warm-up stores the answer)
        sc = dataclasses.replace(sc, headers=(*sc.headers, "X-Gateway-Cache: 3600"))
    return sc


def report_print(raw: Path, top: int, cpu_per_request: float) -> None:
    """The tops by own and total time, and the table by stage."""
    own, total, samples = collapsed_top(raw, top)
    print(f"\nTop by own time ({samples} samples, all threads):")
    for frame, c in own:
        print(f"  {c / samples * 100:5.1f}%  {frame}")
    print("\nTop by total time (inclusive):")
    for frame, c in total:
        print(f"  {c / samples * 100:5.1f}%  {frame}")
    stages, samples = stages_count(raw)
    print(f"\nBy stage (innermost frame of a gateway module or library): share of samples, and of the process's"
          f" {cpu_per_request * 1e6:.0f} us of CPU per request while sampled (py-spy's own cost included)")
    for stage, c in stages.most_common():
        print(f"  {c / samples * 100:5.1f}%  {c / samples * cpu_per_request * 1e6:6.0f} us  {stage}")


def main() -> None:
    """Start mock + gateway, record while wrk runs, print the tops."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--scenario", default="chat c64")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the GIL (CPU use)")
    parser.add_argument("--controls", nargs="?", const="key,hook,cache", default="",
                        help="the request path users run (issue 20), all or some of: key (a gateway key with rpm,"
                             " tpm and a budget), hook (one no-op sync hook), cache (X-Gateway-Cache: refresh=60:"
                             " every answer stored), or hit (every request answered from the cache)")
    parser.add_argument("--ingest", action="store_true",
                        help="sample the gateway's ingest process (which writes the log) instead of its worker")
    args = parser.parse_args()
    if not shutil.which("py-spy"):
        sys.exit("bench: py-spy is not installed: pip install py-spy")
    RESULTS.mkdir(exist_ok=True)
    mock = servers.mock_start()
    data_dir, env = servers.gateway_prepare(mock.url)
    sc = next(s for s in SCENARIOS if s.name == args.scenario)
    sc = controls_apply(sc, env, set(filter(None, args.controls.split(","))))
    gw = servers.gateway_start(env)
    try:
        wrk_run(gw.url, sc, 1)
        pid = gw.pid
        if args.ingest:  # started by the first request; the worker's only child
            servers.ingest_settle([gw.pid])
            pid = psutil.Process(gw.pid).children(recursive=True)[0].pid
        raw = RESULTS / "profile.collapsed"
        spy = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration", str(args.seconds),
                                "--rate", "250", *(["--gil"] if args.gil else []), "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        result = {}
        cpu_before = cpu_seconds(pid)
        t = threading.Thread(target=lambda: result.update(wrk_run(gw.url, sc, args.seconds - 1)))
        t.start()
        t.join()
        cpu_per_request = (cpu_seconds(pid) - cpu_before) / max(result.get("requests", 0), 1)
        spy.wait(60)
        print(f"{sc.name} while profiling: {result.get('rps', 0):.0f} req/s (py-spy slows it down)")
        report_print(raw, args.top, cpu_per_request)
    finally:
        gw.stop()
        mock.stop()
        servers.gateway_cleanup(data_dir, env)


if __name__ == "__main__":
    main()
