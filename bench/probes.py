"""Probes that wrk cannot do: stream timing, resident memory, large bodies."""

import asyncio
import statistics
import threading
import time

import httpx
import psutil

from bench.load import AUTH, STREAM_BODY, Scenario, wrk_run

HEADERS = {"Authorization": AUTH.split(": ", 1)[1], "Content-Type": "application/json"}
MIB = 1024 * 1024


async def _stream_once(client: httpx.AsyncClient, url: str, events: int, delay_ms: int) -> tuple[float, list[float]]:
    """One streamed chat: (ms to first event, ms gaps between following events)."""
    headers = {**HEADERS, "x-mock-events": str(events), "x-mock-delay-ms": str(delay_ms)}
    start = time.perf_counter()
    arrivals = []
    async with client.stream("POST", url + "/v1/chat/completions", content=STREAM_BODY, headers=headers) as r:
        async for chunk in r.aiter_raw():
            now = time.perf_counter()
            arrivals.extend([now] * chunk.count(b"\n\n"))
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return (arrivals[0] - start) * 1000, gaps


async def _stream_probe(url: str, runs: int, events: int, delay_ms: int) -> dict:
    """Median time to first event and median/max gap over sequential streams."""
    async with httpx.AsyncClient(timeout=30) as client:
        await _stream_once(client, url, events, 0)  # warm the connections
        firsts, gaps = [], []
        for _ in range(runs):
            first, g = await _stream_once(client, url, events, delay_ms)
            firsts.append(first)
            gaps.extend(g[1:-2])  # the gaps that carry the mock's per-event delay
    return {"ttfe_ms": statistics.median(firsts), "gap_ms": statistics.median(gaps), "gap_max_ms": max(gaps)}


def stream_probe(url: str, runs: int = 15, events: int = 10, delay_ms: int = 20) -> dict:
    """Streaming probe: time to first event and gap between events (x-mock-delay-ms apart)."""
    return asyncio.run(_stream_probe(url, runs, events, delay_ms))


class RssSampler:
    """Samples a process's resident memory (with its children) in a thread; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        """Current RSS of the process tree in bytes."""
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __enter__(self) -> "RssSampler":
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def process_count(pid: int) -> int:
    """The process and its children (a gateway worker's ingest process, while it runs)."""
    return 1 + len(psutil.Process(pid).children(recursive=True))


def _download(url: str, size: int) -> int:
    """Fetch a binary answer of `size` bytes through url, discarding it; returns bytes read."""
    got = 0
    headers = {**HEADERS, "x-mock-size": str(size)}
    with httpx.stream("POST", url + "/v1/audio/speech", headers=headers, timeout=120,
                      content=b'{"model":"tts-1","voice":"alloy","input":"long"}') as r:
        for chunk in r.iter_raw(1 << 20):
            got += len(chunk)
    return got


def _upload(url: str, size: int) -> tuple[int, str]:
    """POST `size` bytes of octet-stream through url; returns (status, answer)."""
    block = bytes(range(256)) * 4096

    def body():
        left = size
        while left:
            part = block[: min(len(block), left)]
            left -= len(part)
            yield part
    headers = {**HEADERS, "Content-Type": "application/octet-stream", "Content-Length": str(size)}
    r = httpx.post(url + "/v1/files", content=body(), headers=headers, timeout=300)
    return r.status_code, r.text[:200]


def memory_probe(url: str, pid: int, duration: float) -> dict:
    """RSS idle, peak under chat c64 load, peak growth relaying 200 MB down and 100 MB up."""
    sampler = RssSampler(pid)
    out = {"idle_mib": sampler.rss() / MIB}
    with RssSampler(pid) as s:
        wrk_run(url, Scenario("chat c64", "/v1/chat/completions", STREAM_BODY.replace(b'"stream": true', b'"stream": false'), 64), duration)
    out["load_peak_mib"] = s.peak / MIB
    before = sampler.rss()
    with RssSampler(pid) as s:
        got = _download(url, 200 * 1000 * 1000)
    out["download_200mb_ok"] = got == 200 * 1000 * 1000
    out["download_growth_mib"] = (s.peak - before) / MIB
    before = sampler.rss()
    with RssSampler(pid) as s:
        status, answer = _upload(url, 100 * 1000 * 1000)
    out["upload_100mb_status"] = status
    out["upload_100mb_answer"] = answer
    out["upload_growth_mib"] = (s.peak - before) / MIB
    out["after_mib"] = sampler.rss() / MIB
    out["after_processes"] = process_count(pid)
    return out
