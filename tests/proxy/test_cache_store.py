"""The response cache's stores: entries read back byte for byte, shared, bounded, prunable."""

import os
import time

import pytest
from django.core.management import CommandError, call_command

from proxy.cache_store import CacheEntry, DatabaseStore, EntryTooBig, FileStore, RedisStore, cache_store


def _entry(body: bytes = b'data: {"a": 1}\n\ndata: [DONE]\n\n', ttl: float = 60, source: str = "src") -> CacheEntry:
    now = time.time()
    return CacheEntry(source=source, created=now, expires=now + ttl, status=200,
                      headers=[("content-type", "text/event-stream"), ("x-request-id", "r1")], is_sse=True,
                      chunks=[15, 14], body=body)


def test_entry_round_trip_keeps_bytes_and_chunks():
    entry = _entry(body=b"\x00\xff\n\nbinary\n")
    entry.chunks = [3, 7]
    back = CacheEntry.from_bytes(entry.to_bytes())
    assert back == entry and back.pieces() == [b"\x00\xff\n", b"\nbinary", b"\n"]


def test_file_store_is_shared_by_two_stores_of_one_folder(tmp_path):
    writer, reader = FileStore(tmp_path, 10**6), FileStore(tmp_path, 10**6)  # two workers
    writer.put("k", _entry())
    assert reader.get("k") == writer.get("k") and reader.get("k").body == _entry().body
    assert reader.get("missing") is None


def test_file_store_expired_entries_are_not_read_and_pruned(tmp_path):
    store = FileStore(tmp_path, 10**6)
    store.put("new", _entry())  # the first write measures the folder
    store.put("old", _entry(ttl=-1))
    assert store.get("old") is None and store.get("new") is not None
    left_over = tmp_path / ".tmp-crashed"  # a write a crash cut short, an hour ago
    left_over.write_bytes(b"partial")
    os.utime(left_over, (time.time() - 7200, time.time() - 7200))
    assert store.prune()[0] == 1 and sorted(p.name for p in tmp_path.glob("*.entry")) == ["new.entry"]
    assert not left_over.exists()


def test_file_store_evicts_least_recently_used(tmp_path):
    size = len(_entry().to_bytes())
    store = FileStore(tmp_path, size * 3 + 50)  # entries differ by a few bytes (their times)
    for i, name in enumerate(("a", "b", "c")):
        store.put(name, _entry())
        os.utime(tmp_path / f"{name}.entry", (1000 + i, 1000 + i))
    store.get("a")  # used: now the most recent
    store.put("d", _entry())
    store.prune()
    assert sorted(p.stem for p in tmp_path.glob("*.entry")) == ["a", "c", "d"]


def test_file_store_hits_read_small_entries_and_mark_use_once_a_minute(tmp_path):
    store = FileStore(tmp_path, 10**6)
    store.put("k", _entry())
    with pytest.raises(EntryTooBig):  # the step reads a big entry in a thread instead
        store.get("k", size_max=10)
    assert store.get("k", size_max=10**5).body == _entry().body
    path = tmp_path / "k.entry"
    os.utime(path, (time.time() - 30, time.time() - 30))
    store.get("k")  # marked 30 s ago: a hit stays a read
    assert time.time() - path.stat().st_mtime > 25
    os.utime(path, (time.time() - 90, time.time() - 90))
    store.get("k")  # over a minute: marked used now
    assert time.time() - path.stat().st_mtime < 10


def test_prune_cache_command(settings, tmp_path, capsys, transactional_db):  # files, or PostgreSQL rows
    settings.DATA_DIR = tmp_path
    cache_store().put("one", _entry())
    call_command("prune_cache")
    assert "deleted 0 cache entries" in capsys.readouterr().out
    call_command("prune_cache", "--all")
    assert "deleted 1 cache entries" in capsys.readouterr().out
    assert cache_store().get("one") is None


def test_prune_cache_all_with_redis_away_is_one_line_not_a_traceback(settings, monkeypatch):
    from keys import store

    monkeypatch.setitem(store._redis_away, "until", 0.0)
    monkeypatch.setitem(store._redis_away, "detail", "")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:9/12", "OPTIONS": {"socket_connect_timeout": 1}}}
    with pytest.raises(CommandError, match=r"^Redis is unavailable \(ConnectionError\): .*127\.0\.0\.1:9"):
        call_command("prune_cache", "--all")


@pytest.fixture
def redis_cache(settings):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis(host="127.0.0.1", port=6379, db=12, socket_connect_timeout=0.5).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:6379/12", "KEY_PREFIX": "test-cache"}}
    yield
    cache_store().prune(everything=True)


def test_redis_store(redis_cache):
    store = cache_store()
    assert isinstance(store, RedisStore)
    store.put("k", _entry())
    assert store.get("k") == RedisStore().get("k") and store.get("k").body == _entry().body
    store.put("old", _entry(ttl=-1))
    assert store.get("old") is None
    assert store.prune(everything=True)[0] >= 1 and store.get("k") is None


def test_database_store(transactional_db):
    from proxy.models import CachedAnswer

    size = len(_entry().to_bytes())
    store = DatabaseStore(size * 3 + 50)
    store.put("k", _entry())
    assert DatabaseStore(10**6).get("k") == store.get("k") and store.get("k").body == _entry().body  # another worker
    store.put("k", _entry(source="newer"))  # refresh: replaced
    assert store.get("k").source == "newer"
    store.put("old", _entry(ttl=-1))
    assert store.get("old") is None
    for i, name in enumerate(("a", "b")):
        store.put(name, _entry())
        CachedAnswer.objects.filter(key=name).update(used=1000 + i)
    CachedAnswer.objects.filter(key="k").update(used=999)
    store.get("k")  # used: marked (its mark was older than a minute)
    store.put("c", _entry())  # past the bound: the least recently used goes ("old" expired already)
    store.prune()
    assert sorted(CachedAnswer.objects.values_list("key", flat=True)) == ["b", "c", "k"]
    assert store.prune(everything=True)[0] == 3 and not CachedAnswer.objects.exists()


def test_postgresql_is_the_shared_store_without_redis(monkeypatch):
    from django.conf import settings

    import proxy.cache_store

    monkeypatch.setattr(proxy.cache_store, "_store", [])
    monkeypatch.setitem(settings.DATABASES["default"], "ENGINE", "django.db.backends.postgresql")
    assert isinstance(cache_store(), DatabaseStore)
