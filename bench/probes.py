"""Probes that wrk cannot do: stream timing, resident memory, large bodies."""

import asyncio
import resource
import statistics
import threading
import time
import uuid

import httpx
import psutil

from bench.load import AUTH, CHAT_BODY, STREAM_BODY, UNIQUE, Scenario, body_unique, wrk_run

HEADERS = {"Authorization": AUTH.split(": ", 1)[1], "Content-Type": "application/json"}
MIB = 1024 * 1024
STREAM_SECONDS = 300  # how long a slow stream would last: far longer than the probe holds it


def _body(unique: bool, body: bytes = STREAM_BODY) -> bytes:
    """The (streamed chat) body; with unique, one no earlier request sent (a cache that is on misses)."""
    return body_unique(body).replace(UNIQUE, uuid.uuid4().hex.encode()) if unique else body


async def _stream_once(client: httpx.AsyncClient, url: str, events: int, delay_ms: int,
                       extra: dict[str, str], unique: bool) -> tuple[float, list[float]]:
    """One streamed chat: (ms to first event, ms gaps between following events)."""
    headers = {**HEADERS, **extra, "x-mock-events": str(events), "x-mock-delay-ms": str(delay_ms)}
    start = time.perf_counter()
    arrivals, head = [], b""
    async with client.stream("POST", url + "/v1/chat/completions", content=_body(unique), headers=headers) as r:
        async for chunk in r.aiter_raw():
            now = time.perf_counter()
            arrivals.extend([now] * chunk.count(b"\n\n"))
            head = head or chunk
    if not arrivals:  # an error answer, not a stream: say which, not an IndexError
        raise RuntimeError(f"stream probe: no event from {url}: HTTP {r.status_code} {head[:300]!r}")
    gaps = [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:])]
    return (arrivals[0] - start) * 1000, gaps


async def _stream_probe(url: str, runs: int, events: int, delay_ms: int, extra: dict[str, str],
                        unique: bool) -> dict:
    """Median time to first event and median/max gap over sequential streams."""
    async with httpx.AsyncClient(timeout=30) as client:
        await _stream_once(client, url, events, 0, extra, unique)  # warm the connections
        firsts, gaps = [], []
        for _ in range(runs):
            first, g = await _stream_once(client, url, events, delay_ms, extra, unique)
            firsts.append(first)
            gaps.extend(g[1:-2])  # the gaps that carry the mock's per-event delay
    return {"ttfe_ms": statistics.median(firsts), "gap_ms": statistics.median(gaps), "gap_max_ms": max(gaps)}


def stream_probe(url: str, runs: int = 15, events: int = 10, delay_ms: int = 20, headers: dict[str, str] | None = None,
                 unique: bool = False) -> dict:
    """Streaming probe: time to first event and gap between events (x-mock-delay-ms apart); extra
    headers on every stream, and with unique a body no earlier stream sent."""
    return asyncio.run(_stream_probe(url, runs, events, delay_ms, headers or {}, unique))


class RssSampler:
    """Samples a process's resident memory (with its children) in a thread; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.every = every
        self.peak = 0
        self.peak_children = 0  # of the children alone (a worker's ingest process)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        """Current RSS of the process tree in bytes."""
        return self.proc.memory_info().rss + self.rss_children()

    def rss_children(self) -> int:
        """Current RSS of the process's children in bytes."""
        total = 0
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            children = self.rss_children()
            self.peak = max(self.peak, self.proc.memory_info().rss + children)
            self.peak_children = max(self.peak_children, children)
            time.sleep(self.every)

    def __enter__(self) -> "RssSampler":
        self.peak, self.peak_children = self.rss(), self.rss_children()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def process_count(pid: int) -> int:
    """The process and its children (a gateway worker's ingest process, while it runs)."""
    return 1 + len(psutil.Process(pid).children(recursive=True))


def idle_probe(url: str, pid: int, headers: dict[str, str], requests: int = 20) -> dict:
    """RSS of a worker at rest: at once, and after a few (cache-missing) chat calls, which start its ingest
    process, once that runs and the calls are written (the worker and the ingest process together)."""
    at_start = RssSampler(pid).rss()
    with httpx.Client(timeout=30) as client:
        for _ in range(requests):
            client.post(url + "/v1/chat/completions", content=_body(True, CHAT_BODY), headers={**HEADERS, **headers})
    deadline = time.monotonic() + 30
    while process_count(pid) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the calls' records written: the ingest process at rest too
    return {"start_mib": at_start / MIB, "mib": RssSampler(pid).rss() / MIB, "processes": process_count(pid)}


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


def fd_limit_raise() -> None:
    """Open files up to the hard limit, for this process and the servers it starts (they inherit it):
    the slow-streams probe holds thousands of sockets in the client, the gateway and the mock."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _slow_open(url: str, headers: dict[str, str], delay_ms: int) -> tuple[asyncio.StreamWriter, asyncio.Task]:
    """One slow streamed chat on a raw socket, read up to its first event; then drained in a task."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = _body(True)
    head = {"Host": f"{host}:{port}", **HEADERS, **headers, "Content-Length": str(len(body)),
            "x-mock-events": str(STREAM_SECONDS * 1000 // delay_ms), "x-mock-delay-ms": str(delay_ms)}
    writer.write(("POST /v1/chat/completions HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
                  + "\r\n").encode() + body)
    status = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"slow stream answered {status.decode()}: {(await reader.read(500))!r}")
    seen = b""
    while b"data:" not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError("slow stream ended before its first event")
        seen += chunk

    async def drain() -> None:
        while await reader.read(65536):
            pass
    return writer, asyncio.create_task(drain())


async def _slow_streams(url: str, pid: int, count: int, headers: dict[str, str], delay_ms: int) -> dict:
    worker = psutil.Process(pid)
    before = worker.memory_info().rss
    opened: list[tuple[asyncio.StreamWriter, asyncio.Task]] = []
    started = time.monotonic()
    try:
        while len(opened) < count:  # in batches: a burst of thousands of connects overflows listen backlogs
            opened += await asyncio.gather(*(_slow_open(url, headers, delay_ms)
                                             for _ in range(min(100, count - len(opened)))))
        open_s = time.monotonic() - started
        await asyncio.sleep(2 * delay_ms / 1000)  # every stream has relayed events since it opened
        held = worker.memory_info().rss
        return {"streams": count, "open_s": open_s, "before_mib": before / MIB, "held_mib": held / MIB,
                "kib_each": (held - before) / 1024 / count}
    finally:
        for writer, task in opened:
            task.cancel()
            writer.close()
        await asyncio.gather(*(t for _, t in opened), return_exceptions=True)


def slow_streams_probe(url: str, pid: int, count: int = 2000, headers: dict[str, str] | None = None,
                       delay_ms: int = 500) -> dict:
    """What holding streams open costs: RSS growth of the gateway worker (pid) while `count` clients each
    hold a slow streamed chat open through it (one event every delay_ms), per stream, in KiB."""
    fd_limit_raise()
    return asyncio.run(_slow_streams(url, pid, count, headers or {}, delay_ms))
