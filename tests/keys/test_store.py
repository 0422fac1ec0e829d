"""The limit store: a sliding window of one-second buckets, exact when many take at once, on each backend."""

import multiprocessing
import threading
import types
import uuid

import pytest
from django.db import connection

from keys import store
from keys.store import Take, _decide, window_clear, window_take
from tests.e2e.faults import wait_until

NOW = 1_800_000_000


def _redis_up() -> bool:
    try:
        import redis

        redis.Redis.from_url("redis://127.0.0.1:6379/15", socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


def _decide_pairs(buckets, now, limit, window):
    return _decide([s for s, _ in buckets], [c for _, c in buckets], now, limit, window)


def test_at_most_n_in_any_window_and_when_a_slot_frees():
    # Two admitted 60 s and 30 s ago, limit 2: refused; the older one leaves in 1 s.
    assert _decide_pairs([(NOW - 60, 1), (NOW - 30, 1)], NOW, 2, 60) == (Take(False, 2, 1.0), False)
    # A second later it has left: admitted, and the oldest still counted leaves 30 s after that.
    assert _decide_pairs([(NOW - 60, 1), (NOW - 30, 1)], NOW + 1, 2, 60) == (Take(True, 2, 30.0), True)
    # A fixed window that began at NOW - 59 would have let a second burst in; this one does not.
    assert _decide_pairs([(NOW - 59, 2)], NOW, 2, 60)[0].allowed is False
    # Emptied slots and stale buckets (a file's leftovers) do not count.
    assert _decide_pairs([(NOW - 61, 5), (0, 0)], NOW, 1, 60) == (Take(True, 1, 61.0), True)
    # Limit lowered below what the window holds: wait until enough have left.
    assert _decide_pairs([(NOW - 50, 3), (NOW - 10, 3)], NOW, 2, 60) == (Take(False, 6, 51.0), False)


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.skipif(
    not _redis_up(), reason="no Redis at 127.0.0.1:6379")), "database"])
def kind(request, settings, tmp_path):
    if request.param == "redis":
        settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": "redis://127.0.0.1:6379/15"}}
    if request.param == "file" and connection.vendor != "sqlite":
        pytest.skip("the file store is the one SQLite deployments use: covered by the SQLite pass")
    if request.param == "database":
        if connection.vendor != "postgresql":
            pytest.skip("the database store is PostgreSQL's (run with DATABASE_URL=postgres://...)")
        request.getfixturevalue("transactional_db")
    settings.DATA_DIR = tmp_path
    assert store.store_kind() == request.param
    return request.param


def test_window_admits_up_to_the_limit_then_says_when_a_slot_frees(kind):
    bucket = f"t:{uuid.uuid4().hex}"
    takes = [window_take(bucket, 3, 60) for _ in range(4)]
    assert [t.allowed for t in takes] == [True, True, True, False]
    assert [t.used for t in takes] == [1, 2, 3, 3]
    assert 59 <= takes[-1].reset <= 61
    window_clear(bucket)
    assert window_take(bucket, 3, 60).used == 1


def test_threads_taking_at_once_get_exactly_the_limit(kind):
    bucket = f"t:{uuid.uuid4().hex}"
    results: list[bool] = []
    start = threading.Barrier(12)

    def take() -> None:
        start.wait()
        try:
            results.append(window_take(bucket, 5, 60).allowed)
        finally:
            connection.close()

    threads = [threading.Thread(target=take) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [False] * 7 + [True] * 5


def _hammer(data_dir: str, bucket: str, count: int, out) -> None:
    from django.conf import settings

    settings.DATA_DIR = data_dir
    out.put(sum(window_take(bucket, 25, 60).allowed for _ in range(count)))


def test_processes_sharing_the_file_get_exactly_the_limit(tmp_path, settings):
    """What the workers of one machine do: four processes, one file, flock(2)."""
    if connection.vendor != "sqlite":
        pytest.skip("the file store is the one SQLite deployments use: covered by the SQLite pass")
    settings.DATA_DIR = tmp_path
    bucket = f"t:{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), bucket, 20, out)) for _ in range(4)]
    for p in procs:
        p.start()
    admitted = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert sum(admitted) == 25


def test_an_unreachable_redis_is_reported_and_not_tried_again_for_a_moment(settings, monkeypatch):
    monkeypatch.setitem(store._redis_away, "until", 0.0)
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": "redis://127.0.0.1:9/0"}}
    with pytest.raises(store.StoreUnavailable, match=r"^Redis is unavailable \(ConnectionError\)$") as failed:
        window_take("t:down", 1, 60)
    assert "127.0.0.1:9" in failed.value.detail  # the address for the log, never in the client's message
    # Within REDIS_AWAY_SECONDS no call goes to Redis, even one that would now answer: a hung Redis held
    # every limited request for its timeout.
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": "redis://127.0.0.1:6379/12"}}
    with pytest.raises(store.StoreUnavailable, match="failed less than 2 s ago") as again:
        window_take("t:down", 1, 60)
    assert "127.0.0.1:9" in again.value.detail
    monkeypatch.setitem(store._redis_away, "until", 0.0)  # the moment over
    try:
        import redis
        redis.Redis(host="127.0.0.1", port=6379, db=12, socket_connect_timeout=0.5).ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    assert window_take(f"t:{uuid.uuid4().hex}", 1, 60).allowed


def test_after_the_window_one_call_tries_redis_again_while_the_others_fail_at_once(monkeypatch, caplog, settings):
    """A Redis still hung after REDIS_AWAY_SECONDS costs one call its timeout, not every call of that moment;
    the console says when it answers again (its outage was said there too)."""
    settings.CACHES = {"default": {"BACKEND": store.REDIS_BACKEND, "LOCATION": "redis://:pw@10.0.0.5:6379/2"}}
    import threading

    monkeypatch.setitem(store._redis_away, "until", 0.0)  # the window over...
    monkeypatch.setitem(store._redis_away, "detail", "TimeoutError: Timeout reading")  # ...after a failure
    release, ran = threading.Event(), []

    def probe() -> str:
        ran.append("probe")
        release.wait(5)
        return "answered"

    results = []
    prober = threading.Thread(target=lambda: results.append(store.redis_guarded(probe)))
    prober.start()
    assert wait_until(lambda: ran, 5)
    with pytest.raises(store.StoreUnavailable, match=r"being tried again"):
        store.redis_guarded(lambda: ran.append("second"))
    release.set()
    prober.join(5)
    assert results == ["answered"] and ran == ["probe"]
    assert [r.getMessage() for r in caplog.records] == ["Redis (CACHE_URL redis://10.0.0.5:6379/2) answers again"]
    assert store.redis_guarded(lambda: "free again") == "free again"  # it answered: calls go through


def test_a_short_limit_file_is_grown_and_its_buckets_kept(tmp_path, settings):
    """The window is a mapping of the key's file: an empty file (left by a crash or an older version) is grown
    before it is mapped, never read past its end, and a longer window later grows it again keeping the counts."""
    if connection.vendor != "sqlite":
        pytest.skip("the file store is the one SQLite deployments use: covered by the SQLite pass")
    settings.DATA_DIR = tmp_path
    bucket = f"t:{uuid.uuid4().hex}"
    folder = tmp_path / "limits"
    folder.mkdir()
    path = folder / store.hashlib.sha256(f"v2:{bucket}".encode()).hexdigest()[:32]
    path.write_bytes(b"")
    assert [window_take(bucket, 2, 60).allowed for _ in range(3)] == [True, True, False]
    assert path.stat().st_size == 32 + 61 * 16  # the header, then a slot per second
    refused = window_take(bucket, 2, 120)  # 121 buckets now: the two admitted requests are still counted
    assert (refused.allowed, refused.used) == (False, 2) and path.stat().st_size == 32 + 121 * 16
    window_clear(bucket)
    assert window_take(bucket, 2, 120).used == 1


def test_the_file_window_agrees_with_the_rule_at_every_step(tmp_path, settings, monkeypatch):
    """Takes within one second use the file's running sum, the first of a second sums the slots again:
    over random arrivals (bursts within a second, gaps of seconds to minutes) every verdict, count and
    reset is the one the rule (_decide over every admitted request) gives."""
    if connection.vendor != "sqlite":
        pytest.skip("the file store is the one SQLite deployments use: covered by the SQLite pass")
    import random

    settings.DATA_DIR = tmp_path
    rng = random.Random(7)
    clock = [float(NOW)]
    # The store's clock only (its `time` name), not the time module every other caller shares.
    monkeypatch.setattr(store, "time", types.SimpleNamespace(time=lambda: clock[0]))
    bucket, limit, window = f"t:{uuid.uuid4().hex}", 5, 60
    admitted: list[int] = []  # seconds of the admitted requests
    refused = 0
    for _ in range(3000):
        clock[0] += rng.choice([0, 0, 0, 0.3, 1, 7, 59, 61, 200])
        now = int(clock[0])
        counts: dict[int, int] = {}
        for second in admitted:
            counts[second] = counts.get(second, 0) + 1
        expected, _ = _decide(list(counts), list(counts.values()), now, limit, window)
        got = window_take(bucket, limit, window)
        assert got == expected, (now - NOW, got, expected)
        if got.allowed:
            admitted.append(now)
        else:
            refused += 1
    assert refused > 500 and len(admitted) > 500  # both paths were taken many times
