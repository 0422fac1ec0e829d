"""proxy/threads.py: a pool's calls run off the loop; a call its caller gave up on no longer holds the pool."""

import asyncio
import logging
import threading

import pytest

from proxy.threads import ParkedThreads


def _pool(monkeypatch, name: str, threads_max: int, abandoned_max: int = 8) -> ParkedThreads:
    monkeypatch.setattr(ParkedThreads, "THREADS_MAX", threads_max)
    monkeypatch.setattr(ParkedThreads, "ABANDONED_MAX", abandoned_max, raising=False)
    return ParkedThreads(name)


def _alive(name: str) -> dict[str, threading.Thread]:
    """A pool's live threads by name (each test's pool has its own name: parked threads outlive their test)."""
    return {t.name: t for t in threading.enumerate() if t.name.startswith(f"{name}-") and t.is_alive()}


@pytest.fixture
def release():
    """What the hung calls wait on; set at the end so their threads go on and end."""
    event = threading.Event()
    yield event
    event.set()


async def _gave_up(pool: ParkedThreads, fn, *args) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.run(fn, *args), 0.05)


def test_calls_given_up_on_no_longer_hold_the_pool(monkeypatch, release):
    """Two hung calls filled a pool of two: every later call waited behind them, though it would answer at once."""
    pool = _pool(monkeypatch, "pool-given-up", threads_max=2)

    async def scenario() -> list:
        started = []
        for _ in range(2):
            await _gave_up(pool, lambda: (started.append(1), release.wait(10)))
        assert len(started) == 2
        return [await asyncio.wait_for(pool.run(lambda n=n: n * 2), 2) for n in range(3)]

    assert asyncio.run(scenario()) == [0, 2, 4]
    threads = _alive("pool-given-up")
    assert sorted(threads) == ["pool-given-up-1", "pool-given-up-2", "pool-given-up-3"]  # 2 hung, 1 fresh
    release.set()
    for name in ("pool-given-up-1", "pool-given-up-2"):  # a given-up call's thread ends once its call returns
        threads[name].join(5)
        assert not threads[name].is_alive()
    assert threads["pool-given-up-3"].is_alive()  # the fresh thread is parked for the next call
    assert asyncio.run(asyncio.wait_for(pool.run(lambda: "again"), 2)) == "again"


def test_a_call_waiting_for_a_thread_gets_one_when_the_running_call_is_given_up(monkeypatch, release):
    pool = _pool(monkeypatch, "pool-waiting", threads_max=1)

    async def scenario() -> str:
        hung = asyncio.ensure_future(pool.run(release.wait, 10))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(pool.run(lambda: "served"))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # the pool's one thread is busy
        hung.cancel()
        return await asyncio.wait_for(waiting, 2)

    assert asyncio.run(scenario()) == "served"


def test_the_threads_given_up_on_are_bounded_and_the_bound_logged(monkeypatch, release, caplog):
    """Past ABANDONED_MAX threads still running calls nobody waits for, a given-up call keeps its thread in the
    pool's count (the pool shrinks, as a hung call held it before): the process never piles up threads."""
    pool = _pool(monkeypatch, "pool-bound", threads_max=2, abandoned_max=1)
    started = []

    def hang() -> None:
        started.append(1)
        release.wait(10)

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="proxy.threads"):
            await _gave_up(pool, hang)  # abandoned: a fresh thread may start
            await _gave_up(pool, hang)  # over the bound: these two keep counting, and fill the pool
            await _gave_up(pool, hang)
            await _gave_up(pool, hang)  # waits in the queue behind them: never runs

    asyncio.run(scenario())
    assert len(started) == 3 and len(_alive("pool-bound")) == 3  # THREADS_MAX + ABANDONED_MAX at most
    assert any("ABANDONED_MAX" in r.getMessage() and "pool-bound" in r.getMessage() for r in caplog.records)
    release.set()  # the abandoned one exits; the counted one parks again and serves the next call
    assert asyncio.run(asyncio.wait_for(pool.run(lambda: "after"), 2)) == "after"


def test_a_call_given_up_before_a_thread_took_it_never_runs(monkeypatch, release):
    pool = _pool(monkeypatch, "pool-queued", threads_max=1)
    ran = []

    async def scenario() -> None:
        hung = asyncio.ensure_future(pool.run(release.wait, 10))
        await asyncio.sleep(0.05)
        await _gave_up(pool, ran.append, "queued")
        hung.cancel()
        assert await asyncio.wait_for(pool.run(lambda: "next"), 2) == "next"

    asyncio.run(scenario())
    release.set()
    assert ran == []
