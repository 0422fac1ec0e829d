"""The benchmark, one command: python bench/run.py  (needs wrk; see docs/benchmark.md).

Starts the mock upstream, the references (raw-ASGI pass-throughs on httpx and on httpx-aiohttp's
transport, Django async hello-world), two gateways (uvicorn, 1 worker, full logging on a fresh
SQLite database each): "gateway" with no controls and "gateway+controls" (a gateway key with rpm,
tpm and budget limits on every request, one no-op hook, the cache asked for and missing), and
LiteLLM's proxy when --litellm (or LITELLM_BIN) names it. Drives them with wrk in interleaved
rounds, runs the stream / memory / slow-streams / log-write probes and the 1-vs-2-worker scaling
run, and prints a table and issue 20's targets. Ratios are the headline: absolute numbers move.
wrk, the probes and the mock run on the first core, each server under test on the others
(servers.cores_split); the two-worker scaling run gets every core.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import servers  # noqa: E402
from bench.keys import key_create  # noqa: E402
from bench.load import AUTH, SCENARIOS, wrk_require, wrk_run  # noqa: E402
from bench.probes import (MIB, RssSampler, fd_limit_raise, idle_probe, memory_probe, process_count,  # noqa: E402
                          slow_streams_probe, stream_probe)
from bench.rounds import Spread, Target, paired, rounds_drive  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CHAT = frozenset({"chat c1", "chat c16", "chat c64"})
# The scenarios the targets are about run in every round; the others once, in the first.
EVERY_ROUND = {"chat c1", "chat c64"}
HITS = frozenset({"chat c1", "chat c64"})
LITELLM = frozenset({"chat c64"})
# Speech answers are audio with no usage: a key that counts spend or tokens is refused them (403, docs/keys.md),
# so the controlled gateway runs every scenario but the binary one (which counted its 403s as errors).
CONTROLLED = frozenset(sc.name for sc in SCENARIOS if not sc.path.endswith("/audio/speech"))
# LiteLLM is slow: the first answers of a c64 run take long enough that a shorter run undercounts it.
LITELLM_SECONDS = 5.0
CACHE = "X-Gateway-Cache: 3600"
HOOK = "bench.noop_hook.Noop"  # the plain sync hook: run in a worker thread, the costlier path
SLOW_STREAMS = 2000
# Both bench gateways (only they) may hold that many upstream connections, for the slow-streams probe.
POOL_ENV = {"UPSTREAM_MAX_CONNECTIONS": str(SLOW_STREAMS + 100)}
# The ratios printed: each gateway variant's over these (the mock, "direct", is far faster than any proxy:
# it is the limit in the table and the base of the time to first event).
RATIOS = {"gateway": ("passthrough", "passthrough-aiohttp", "django-hello", "litellm"),
          "gateway+controls": ("passthrough", "passthrough-aiohttp", "django-hello", "litellm", "gateway"),
          "gateway+controls hit": ("passthrough", "passthrough-aiohttp", "gateway+controls")}


def _load_line() -> str:
    """The machine's load average, to judge how noisy the numbers are."""
    return "load average %.2f %.2f %.2f on %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


def _rps(table: dict, scenario: str, target: str) -> list[float]:
    return [r["rps"] for r in table.get(scenario, {}).get(target, [])]


def _ratios(table: dict[str, dict[str, list[dict]]]) -> dict[str, Spread]:
    """Each gateway variant's requests/s over each reference's and over the plain gateway's, per scenario,
    as the spread of the paired rounds."""
    out = {}
    for sc, rows in table.items():
        for num, dens in RATIOS.items():
            for den in dens:
                if num in rows and den in rows:
                    out[f"{sc}: {num} / {den}"] = Spread.of(paired(_rps(table, sc, num), _rps(table, sc, den)))
    return out


def _table_print(table: dict[str, dict[str, list[dict]]]) -> None:
    """The throughput table: one block per scenario, medians of the rounds."""
    print(f"\n{'scenario':<15}{'target':<22}{'req/s':>9}  {'range':<13}{'p50 ms':>8}{'p99 ms':>9}{'errors':>8}"
          f"{'MB/s':>8}")
    for sc, rows in table.items():
        for name, runs in rows.items():
            rps = Spread.of([r["rps"] for r in runs])
            span = f"{rps.low:.0f}-{rps.high:.0f}" if rps.n > 1 else ""
            p50 = Spread.of([r["p50_ms"] for r in runs]).median
            p99 = Spread.of([r["p99_ms"] for r in runs]).median
            mbs = Spread.of([r["mb_s"] for r in runs]).median
            print(f"{sc:<15}{name:<22}{rps.median:>9.0f}  {span:<13}{p50:>8.2f}{p99:>9.2f}"
                  f"{sum(r['errors'] for r in runs):>8}{mbs:>8.1f}")


def _targets(res: dict) -> list[tuple[str, str, bool]]:
    """Issue 20's targets: (label, measured, met)."""
    ratios, out = res["ratios"], []

    def ratio(key: str, label: str, floor: float) -> None:
        s = ratios.get(key)
        if s is None:
            out.append((label, "not measured", False))
        else:
            out.append((label, s.text(), s.median >= floor))
    ratio("chat c64: gateway+controls / passthrough-aiohttp", "chat c64 >= 0.8x passthrough-aiohttp", 0.8)
    if "litellm" in res:
        ratio("chat c64: gateway+controls / litellm", "chat c64 >= 20x LiteLLM", 20.0)
    ratio("chat c1: gateway+controls / passthrough", "chat c1 >= 1.0x passthrough (httpx)", 1.0)
    ttfe = Spread.of([c["ttfe_ms"] - d["ttfe_ms"] for c, d in zip(res["stream"]["gateway+controls"],
                                                                  res["stream"]["direct"])])
    out.append(("time to first event <= direct + 1.5 ms", ttfe.text("{:+.2f}", " ms"), ttfe.median <= 1.5))
    for sc in sorted(HITS):
        ratio(f"{sc}: gateway+controls hit / passthrough", f"{sc} cache hit >= 2x passthrough (httpx)", 2.0)
    ratio("chat c64: gateway+controls / gateway", "controls cost <= 10% of chat c64 (>= 0.9x)", 0.9)
    idle = res["memory"]["idle_controls"]
    out.append(("idle <= 80 MiB a worker (ingest included)",
                f"{idle['mib']:.1f} MiB in {idle['processes']} processes (worker alone at start"
                f" {idle['start_mib']:.1f})", idle["mib"] <= 80))
    ss = res["slow_streams"]
    out.append((f"{ss['streams']} slow streams held open <= 40 KiB each", f"{ss['kib_each']:.1f} KiB",
                ss["kib_each"] <= 40))
    errs = sum(r["errors"] for rows in res["table"].values() for name, runs in rows.items() if name != "litellm"
               for r in runs)
    out.append(("no errors in any load run of ours", f"{errs}", errs == 0))
    return out


def bench_run(duration: float, scaling: bool, rounds: int, litellm: str | None,
              database_url: str | None = None) -> dict:
    """Everything, in order; returns the results."""
    wrk_require()
    fd_limit_raise()
    started = time.monotonic()
    results: dict = {"load_before": _load_line(), "duration_s": duration, "rounds": rounds,
                     "database": "PostgreSQL" if database_url else "SQLite (WAL)"}
    print(f"bench: {results['load_before']}; {duration}s per wrk run, {rounds} rounds")
    # wrk, the probes and the mock on the first core; each server under test on the others (issue 20's
    # method: "mock upstream and load generator on one core; each server alone on the other").
    split = servers.cores_split()
    cpus = split[1] if split else None
    results["placement"] = (f"load and mock on core {sorted(split[0])}, servers on {sorted(split[1])}" if split
                            else "one core: no placement")
    mock = servers.mock_start()
    running = [mock]
    data_dirs = []
    scratch = tempfile.TemporaryDirectory(prefix="bench-run-")
    try:
        gw, gwc, controls, targets = _targets_start(mock, running, data_dirs, results, litellm, database_url,
                                                    Path(scratch.name), cpus)
        control_headers = dict(h.split(": ", 1) for h in controls)
        memory = {"idle_mib": RssSampler(gw.pid).rss() / MIB, "idle_processes": process_count(gw.pid),
                  "idle_controls": idle_probe(gwc.url, gwc.pid, control_headers)}
        stream: dict[str, list[dict]] = {"direct": [], "gateway": [], "gateway+controls": []}

        def streams() -> None:  # paired with the round's wrk runs: the same stretch of time
            stream["direct"].append(stream_probe(mock.url))
            stream["gateway"].append(stream_probe(gw.url))
            stream["gateway+controls"].append(stream_probe(gwc.url, headers=control_headers, unique=True))
        table = rounds_drive(targets, rounds, EVERY_ROUND, duration, streams)
        results["table"], results["stream"] = table, stream
        results["ratios"] = _ratios(table)
        memory["controls_after_rounds_mib"] = RssSampler(gwc.pid).rss() / MIB
        memory["controls_after_rounds_processes"] = process_count(gwc.pid)
        for s in running[1:]:
            if s not in (gw, gwc):
                s.stop()
        results["slow_streams"] = slow_streams_probe(gwc.url, gwc.pid, SLOW_STREAMS, control_headers)
        results["memory"] = {**memory, **memory_probe(gw.url, gw.pid, duration)}
        results["memory"]["idle_mib"] = memory["idle_mib"]
        results["gateway_stop_s"] = gw.stop()
        results["gateway_stderr"] = gw.stderr_tail() + gwc.stderr_tail()
        results["log_rows_after_load"] = servers.log_rows(data_dirs[0][1])
        out = subprocess.run([servers.PYTHON, "-m", "bench.logprobe", "--n", "5000"], cwd=servers.ROOT,
                             env=data_dirs[0][1], capture_output=True, text=True, check=True)
        results["log_write"] = json.loads(out.stdout.strip().splitlines()[-1])
        results["log_write"]["database"] = results["database"]
        if scaling:
            one = Spread.of(_rps(table, "chat c64", "gateway")).median
            # Two workers get every core (they share them with wrk and the mock, as one worker did not).
            results["scaling"] = _scaling(mock.url, duration, one, data_dirs, database_url,
                                          (split[0] | split[1]) if split else None)
    finally:
        servers.all_stop(running, data_dirs)
        scratch.cleanup()
    results["load_after"] = _load_line()
    results["total_s"] = time.monotonic() - started
    return results


def _targets_start(mock: servers.Server, running: list, data_dirs: list, results: dict, litellm: str | None,
                   database_url: str | None, scratch: Path, cpus: set[int] | None) -> tuple:
    """Start the references, both gateways and LiteLLM (when named); (gateway, gateway+controls, the
    controls' headers, the targets). Started servers go on `running`, gateway folders on `data_dirs`."""
    passthrough = servers.passthrough_start(mock.url, cpus=cpus)
    passthrough_aio = servers.passthrough_start(mock.url, "aiohttp", cpus=cpus)
    hello = servers.hello_start(cpus=cpus)
    running += [passthrough, passthrough_aio, hello]
    gateways, secret = {}, ""
    for name in ("gateway", "gateway+controls"):
        data_dir, env = servers.gateway_prepare(mock.url, database_url)
        data_dirs.append((data_dir, env))
        env.update(POOL_ENV)
        if name == "gateway+controls":
            env["GATEWAY_HOOKS"] = HOOK
            secret = key_create(env)
        gateways[name] = servers.gateway_start(env, cpus=cpus)
        running.append(gateways[name])
    gw, gwc = gateways["gateway"], gateways["gateway+controls"]
    controls = (f"X-Gateway-Key: {secret}", CACHE)
    targets = [Target("direct", mock.url), Target("passthrough", passthrough.url),
               Target("passthrough-aiohttp", passthrough_aio.url),
               Target("django-hello", hello.url, scenarios=CHAT),
               Target("gateway", gw.url), Target("gateway+controls", gwc.url, controls, unique=True, scenarios=CONTROLLED),
               Target("gateway+controls hit", gwc.url, controls, scenarios=HITS)]
    if litellm:
        ll = _litellm_start(litellm, mock.url, scratch, cpus)
        if isinstance(ll, str):
            results["litellm_note"] = ll
        else:
            running.append(ll)
            results["litellm"] = litellm
            targets.append(Target("litellm", ll.url, scenarios=LITELLM, duration=LITELLM_SECONDS))
    else:
        results["litellm_note"] = "LiteLLM skipped: no --litellm PATH and no LITELLM_BIN"
    return gw, gwc, controls, targets


def _litellm_start(binary: str, upstream: str, config_dir: Path, cpus: set[int] | None) -> servers.Server | str:
    """LiteLLM's proxy on the mock, checked to answer a chat call; or why it could not be used."""
    if not Path(binary).is_file():
        return f"LiteLLM skipped: {binary} does not exist"
    try:
        ll = servers.litellm_start(binary, upstream, config_dir, AUTH.split("Bearer ", 1)[1], cpus)
    except RuntimeError as exc:
        return f"LiteLLM skipped: it did not start: {exc}"
    r = httpx.post(f"{ll.url}/v1/chat/completions", timeout=60, headers=dict([AUTH.split(": ", 1)]),
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    if r.status_code != 200:
        ll.stop()
        return f"LiteLLM skipped: a chat call answered {r.status_code} {r.text[:200]}"
    return ll


def _scaling(upstream: str, duration: float, one_rps: float, data_dirs: list, database_url: str | None,
             cpus: set[int] | None) -> dict:
    """Chat c64 on 2 workers sharing one database (SQLite in WAL mode, or PostgreSQL), against 1 worker."""
    data_dir, env = servers.gateway_prepare(upstream, database_url)
    data_dirs.append((data_dir, env))
    gw2 = servers.gateway_start(env, workers=2, cpus=cpus)
    try:
        c64 = next(s for s in SCENARIOS if s.name == "chat c64")
        servers.workers_serving(gw2, 2, lambda: wrk_run(gw2.url, c64, 1.0))
        two = wrk_run(gw2.url, c64, duration)
    finally:
        gw2.stop()
    rows = servers.log_rows(env)
    return {"one_worker_rps": one_rps, "two_workers_rps": two["rps"], "speedup": two["rps"] / one_rps,
            "two_workers_errors": two["errors"], "log_rows": rows}


def report_print(res: dict) -> None:
    """Print everything bench_run measured."""
    _table_print(res["table"])
    print(f"\nRatios (req/s over req/s; median of {res['rounds']} paired rounds [min .. max] for chat c1 and c64,"
          " one round for the others):")
    for k, v in res["ratios"].items():
        print(f"  {k:<58}{v.text()}")
    print(f"\n{res.get('litellm_note', 'LiteLLM: ' + res.get('litellm', ''))}")
    print("\nStreaming probe (10 events, 20 ms apart, median of 15 streams; median [min .. max] of the rounds):")
    for name, runs in res["stream"].items():
        first = Spread.of([r["ttfe_ms"] for r in runs])
        gap = Spread.of([r["gap_ms"] for r in runs])
        print(f"  {name:<17} first event {first.text('{:.2f}', ' ms'):<26} gap {gap.text('{:.2f}', ' ms'):<26}"
              f" max gap {max(r['gap_max_ms'] for r in runs):6.2f} ms")
    m = res["memory"]
    print("\nMemory probe (RSS of the gateway worker and its child processes):")
    ic = m["idle_controls"]
    print(f"  gateway idle at start {m['idle_mib']:.1f} MiB ({m['idle_processes']} process); gateway+controls idle"
          f" at start {ic['start_mib']:.1f} MiB, idle after 20 calls {ic['mib']:.1f} MiB ({ic['processes']} processes),"
          f" after the rounds {m['controls_after_rounds_mib']:.1f} MiB ({m['controls_after_rounds_processes']}"
          f" processes)")
    print(f"  gateway: peak under chat c64 load {m['load_peak_mib']:.1f} MiB;"
          f" after probes {m['after_mib']:.1f} MiB ({m['after_processes']} processes: the ingest process retires"
          f" after LOG_INGEST_IDLE_SECONDS without work)")
    print(f"  relaying a 200 MB answer: +{m['download_growth_mib']:.1f} MiB (complete: {m['download_200mb_ok']})")
    print(f"  100 MB upload: +{m['upload_growth_mib']:.1f} MiB, status {m['upload_100mb_status']}"
          f" {m['upload_100mb_answer']}")
    ss = res["slow_streams"]
    print(f"  {ss['streams']} slow streams held open through gateway+controls (opened in {ss['open_s']:.1f}s):"
          f" worker {ss['before_mib']:.1f} -> {ss['held_mib']:.1f} MiB = {ss['kib_each']:.1f} KiB each")
    lw = res["log_write"]
    print(f"\nLog-write probe: {lw['exchanges']} exchanges in {lw['seconds']:.2f}s = {lw['exchanges_per_s']:.0f}"
          f" exchanges/s on {lw['database']};"
          f" submit() on the event loop {lw['submit_us_per_exchange']:.0f} us/exchange; rows {lw['rows']}")
    print(f"Log rows of the plain gateway after the load runs (requests, responses): {res['log_rows_after_load']};"
          f" graceful stop took {res['gateway_stop_s']:.1f}s")
    if res["gateway_stderr"].strip():
        print(f"Gateway stderr (tail):\n{res['gateway_stderr']}")
    if "scaling" in res:
        sc = res["scaling"]
        print(f"\nWorkers (chat c64, {res['database']}): 1 worker {sc['one_worker_rps']:.0f} req/s (median), 2 workers"
              f" {sc['two_workers_rps']:.0f} req/s = {sc['speedup']:.2f}x; errors {sc['two_workers_errors']};"
              f" log rows {sc['log_rows']}")
    print(f"\nTargets (issue 20): gateway+controls = logging, a gateway key with rpm/tpm/budget limits,"
          f" the no-op hook, the cache on and missing; median [min .. max] of {res['rounds']} paired rounds:")
    for label, value, ok in _targets(res):
        print(f"  {'met    ' if ok else 'NOT met'}  {label:<48}{value}")
    print(f"\n{res['load_before']} (before), {res['load_after']} (after); total {res['total_s']:.0f}s")
    print(f"placement: {res.get('placement', '')}")


def main() -> None:
    """Parse flags, run, print, save JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3, at least 1)")
    parser.add_argument("--litellm", default=os.environ.get("LITELLM_BIN"),
                        help="the `litellm` command of a venv where litellm[proxy] is installed (default:"
                             " $LITELLM_BIN); without it LiteLLM is skipped")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 2-worker run")
    parser.add_argument("--database-url", default=None,
                        help="postgres://user@host:port/db: log into new PostgreSQL databases made (and dropped)"
                             " next to this one instead of SQLite")
    parser.add_argument("--json", action="store_true", help="also write bench/results/<time>.json")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    res = bench_run(args.duration, not args.no_scaling, args.rounds, args.litellm, args.database_url)
    report_print(res)
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
        path.write_text(json.dumps(res, indent=2, default=lambda o: o.__dict__))
        print(f"results written to {path}")


if __name__ == "__main__":
    main()
