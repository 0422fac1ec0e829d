"""The benchmark, one command: python bench/run.py  (needs wrk; see docs/benchmark.md).

Starts the mock upstream, the two references (raw-ASGI httpx pass-through, Django async
hello-world) and the gateway (uvicorn, 1 worker, full logging on a fresh SQLite database), drives
them with wrk, runs the stream / memory / log-write probes and the 1-vs-2-worker scaling run,
and prints a table. Ratios against the references are the headline: absolute numbers move.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.load import SCENARIOS, wrk_require, wrk_run  # noqa: E402
from bench.probes import memory_probe, process_count, stream_probe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHAT = {"chat c1", "chat c16", "chat c64"}
# Chat c1 is the figure other load on the machine moves most (one process busy all the time):
# it is measured in rounds alternating the pass-through and the gateway, and each one's fastest
# round counts (interference only ever slows a round down); the median of the paired ratios is
# printed beside it.
C1_ROUNDS = 5


def _load_line() -> str:
    """The machine's load average, to judge how noisy the numbers are."""
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


def _drive(targets: dict[str, str], duration: float) -> dict[str, dict[str, dict]]:
    """wrk every scenario against every target (the hello view only on plain chat)."""
    table: dict[str, dict[str, dict]] = {}
    for sc in SCENARIOS:
        table[sc.name] = {}
        for name, url in targets.items():
            if name.startswith("django-hello") and sc.name not in CHAT:
                continue
            wrk_run(url, sc, 1)  # warm-up: connections, lazy imports, caches
            table[sc.name][name] = wrk_run(url, sc, duration)
        if sc.name == "chat c1":  # before the heavier loads leave the log writer a backlog to work off
            _c1_rounds(table, targets, duration)
    return table


def _c1_rounds(table: dict[str, dict[str, dict]], targets: dict[str, str], duration: float) -> None:
    """Chat c1, pass-through and gateway alternately C1_ROUNDS times; keep each one's fastest round."""
    sc = next(s for s in SCENARIOS if s.name == "chat c1")
    rounds: dict[str, list[dict]] = {name: [table[sc.name][name]] for name in ("passthrough", "gateway")}
    for _ in range(C1_ROUNDS - 1):
        for name in rounds:
            rounds[name].append(wrk_run(targets[name], sc, duration))
    for name, runs in rounds.items():
        table[sc.name][name] = {**max(runs, key=lambda r: r["rps"]), "errors": sum(r["errors"] for r in runs),
                                "rounds_rps": [r["rps"] for r in runs]}


def _table_print(table: dict[str, dict[str, dict]]) -> None:
    """The throughput table: one block per scenario."""
    print(f"\n{'scenario':<15}{'target':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'MB/s':>9}")
    for sc, rows in table.items():
        for name, r in rows.items():
            print(f"{sc:<15}{name:<22}{r['rps']:>10.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>8}"
                  f"{r['mb_s']:>9.1f}")


def _ratios(table: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Gateway requests/s over each reference, per scenario."""
    out = {}
    for sc, rows in table.items():
        gw = rows.get("gateway", {}).get("rps")
        for ref in ("passthrough", "passthrough-aiohttp", "django-hello", "direct"):
            if gw and rows.get(ref, {}).get("rps"):
                out[f"{sc}: gateway / {ref}"] = gw / rows[ref]["rps"]
    return out


def _targets_print(table: dict, ratios: dict, stream: dict, memory: dict, logw: dict) -> None:
    """The issue's targets, each with its measured value and met / NOT met."""
    def line(label: str, value: str, ok: bool) -> None:
        print(f"  {'met    ' if ok else 'NOT met'}  {label:<52}{value}")
    print("\nTargets (issue 7):")
    r = ratios.get("chat c64: gateway / passthrough", 0)
    line("chat c64 >= 1.0x passthrough", f"{r:.2f}x", r >= 1.0)
    r = ratios.get("chat c64: gateway / django-hello", 0)
    line("chat c64 >= 0.6x django-hello", f"{r:.2f}x", r >= 0.6)
    r = ratios.get("chat c1: gateway / passthrough", 0)
    c1 = table["chat c1"]
    paired = [g / p for g, p in zip(c1["gateway"].get("rounds_rps", []), c1["passthrough"].get("rounds_rps", []))]
    each = ", ".join(f"{x:.2f}" for x in paired)
    median = sorted(paired)[len(paired) // 2] if paired else 0
    line("chat c1 >= 0.8x passthrough", f"{r:.2f}x (fastest rounds; paired rounds {each}: median {median:.2f}x)",
         r >= 0.8)
    d = stream["gateway"]["ttfe_ms"] - stream["direct"]["ttfe_ms"]
    line("time to first event <= direct + 3 ms", f"+{d:.2f} ms", d <= 3.0)
    line("idle RSS < 100 MiB", f"{memory['idle_mib']:.1f} MiB", memory["idle_mib"] < 100)
    line("relaying 200 MB grows RSS < 32 MiB", f"+{memory['download_growth_mib']:.1f} MiB",
         memory["download_growth_mib"] < 32 and memory["download_200mb_ok"])
    line("100 MB upload accepted", f"status {memory['upload_100mb_status']}", memory["upload_100mb_status"] == 200)
    line(f"log store >= 2000 exchanges/s ({logw['database']})", f"{logw['exchanges_per_s']:.0f}/s",
         logw["exchanges_per_s"] >= 2000)
    errs = sum(r["errors"] for rows in table.values() for r in rows.values())
    line("no errors in any load run", f"{errs}", errs == 0)


def bench_run(duration: float, scaling: bool, database_url: str | None = None) -> dict:
    """Everything, in order; returns the results."""
    wrk_require()
    started = time.monotonic()
    results: dict = {"load_before": _load_line(), "duration_s": duration,
                     "database": "PostgreSQL" if database_url else "SQLite (WAL)"}
    print(f"bench: {results['load_before']}; {duration}s per wrk run")
    mock = servers.mock_start()
    running = [mock]
    data_dirs = []
    try:
        passthrough = servers.passthrough_start(mock.url)
        passthrough_aio = servers.passthrough_start(mock.url, "aiohttp")
        hello = servers.hello_start()
        data_dir, env = servers.gateway_prepare(mock.url, database_url)
        data_dirs.append((data_dir, env))
        gateway = servers.gateway_start(env)
        running += [passthrough, passthrough_aio, hello, gateway]
        targets = {"direct": mock.url, "passthrough": passthrough.url, "passthrough-aiohttp": passthrough_aio.url,
                   "django-hello": hello.url, "gateway": gateway.url}
        idle_rss, idle_procs = memory_probe_idle(gateway.pid), process_count(gateway.pid)
        table = _drive(targets, duration)
        results["table"], results["ratios"] = table, _ratios(table)
        for s in running[1:]:
            if s is not gateway:
                s.stop()
        results["stream"] = {"direct": stream_probe(mock.url), "gateway": stream_probe(gateway.url)}
        results["memory"] = {"idle_mib": idle_rss, **memory_probe(gateway.url, gateway.pid, duration)}
        results["memory"]["idle_mib"], results["memory"]["idle_processes"] = idle_rss, idle_procs
        results["gateway_stop_s"] = gateway.stop()
        results["gateway_stderr"] = gateway.stderr_tail()
        results["log_rows_after_load"] = servers.log_rows(env)
        out = subprocess.run([servers.PYTHON, "-m", "bench.logprobe", "--n", "5000"], cwd=servers.ROOT, env=env,
                             capture_output=True, text=True, check=True)
        results["log_write"] = json.loads(out.stdout.strip().splitlines()[-1])
        results["log_write"]["database"] = results["database"]
        if scaling:
            results["scaling"] = _scaling(mock.url, duration, table["chat c64"]["gateway"], data_dirs, database_url)
    finally:
        servers.all_stop(running, data_dirs)
    results["load_after"] = _load_line()
    results["total_s"] = time.monotonic() - started
    return results


def memory_probe_idle(pid: int) -> float:
    """RSS of the freshly started gateway worker, before any request, in MiB."""
    from bench.probes import MIB, RssSampler

    time.sleep(0.5)
    return RssSampler(pid).rss() / MIB


def _scaling(upstream: str, duration: float, one: dict, data_dirs: list, database_url: str | None) -> dict:
    """Chat c64 on 2 workers sharing one database (SQLite in WAL mode, or PostgreSQL), against 1 worker."""
    from bench.load import SCENARIOS as S

    data_dir, env = servers.gateway_prepare(upstream, database_url)
    data_dirs.append((data_dir, env))
    gw2 = servers.gateway_start(env, workers=2)
    try:
        time.sleep(1.0)  # both workers up
        c64 = next(s for s in S if s.name == "chat c64")
        wrk_run(gw2.url, c64, 1.0)
        two = wrk_run(gw2.url, c64, duration)
    finally:
        gw2.stop()
    rows = servers.log_rows(env)
    return {"one_worker_rps": one["rps"], "two_workers_rps": two["rps"], "speedup": two["rps"] / one["rps"],
            "two_workers_errors": two["errors"], "log_rows": rows}


def report_print(res: dict) -> None:
    """Print everything bench_run measured."""
    _table_print(res["table"])
    print("\nRatios (gateway req/s over reference req/s):")
    for k, v in res["ratios"].items():
        print(f"  {k:<45}{v:>6.2f}x")
    s = res["stream"]
    print("\nStreaming probe (10 events, 20 ms apart, median of 15 streams):")
    for name in ("direct", "gateway"):
        print(f"  {name:<9} first event {s[name]['ttfe_ms']:7.2f} ms   gap {s[name]['gap_ms']:6.2f} ms"
              f"   max gap {s[name]['gap_max_ms']:6.2f} ms")
    m = res["memory"]
    print("\nMemory probe (RSS of the gateway worker and its child processes):")
    print(f"  idle {m['idle_mib']:.1f} MiB ({m['idle_processes']} process); peak under chat c64 load"
          f" {m['load_peak_mib']:.1f} MiB; after probes {m['after_mib']:.1f} MiB ({m['after_processes']} processes:"
          f" the ingest process retires after LOG_INGEST_IDLE_SECONDS without work)")
    print(f"  relaying a 200 MB answer: +{m['download_growth_mib']:.1f} MiB (complete: {m['download_200mb_ok']})")
    print(f"  100 MB upload: +{m['upload_growth_mib']:.1f} MiB, status {m['upload_100mb_status']}"
          f" {m['upload_100mb_answer']}")
    lw = res["log_write"]
    print(f"\nLog-write probe: {lw['exchanges']} exchanges in {lw['seconds']:.2f}s = {lw['exchanges_per_s']:.0f}"
          f" exchanges/s on {lw['database']};"
          f" submit() on the event loop {lw['submit_us_per_exchange']:.0f} us/exchange; rows {lw['rows']}")
    print(f"Log rows after the load runs (requests, responses): {res['log_rows_after_load']};"
          f" graceful stop took {res['gateway_stop_s']:.1f}s")
    if res["gateway_stderr"].strip():
        print(f"Gateway stderr (tail):\n{res['gateway_stderr']}")
    if "scaling" in res:
        sc = res["scaling"]
        print(f"\nWorkers (chat c64, {res['database']}): 1 worker {sc['one_worker_rps']:.0f} req/s, 2 workers"
              f" {sc['two_workers_rps']:.0f} req/s = {sc['speedup']:.2f}x; errors {sc['two_workers_errors']};"
              f" log rows {sc['log_rows']}")
    _targets_print(res["table"], res["ratios"], res["stream"], res["memory"], res["log_write"])
    print(f"\n{res['load_before']} (before), {res['load_after']} (after); total {res['total_s']:.0f}s")


def main() -> None:
    """Parse flags, run, print, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2-worker run")
    parser.add_argument("--database-url", default=None,
                        help="postgres://user@host:port/db: log into new PostgreSQL databases made (and dropped)"
                             " next to this one instead of SQLite")
    parser.add_argument("--json", action="store_true", help="also write bench/results/<time>.json")
    args = parser.parse_args()
    res = bench_run(args.duration, not args.no_scaling, args.database_url)
    report_print(res)
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
        path.write_text(json.dumps(res, indent=2))
        print(f"results written to {path}")


if __name__ == "__main__":
    main()
