"""Where the response cache keeps its entries: files of this machine, or Redis (CACHE_URL).

An entry is the answer as the client got it (status, headers, body bytes, where each chunk ended)
plus the exchange it came from; it is read back byte for byte (docs/cache.md says why the cache
keeps its own copy instead of serving hits from the log).

Three backends, chosen once per process from the settings (as keys/store.py chooses its own):
- files (the default, with SQLite): one file per entry under DATA_DIR/cache, written to a temporary name and
  renamed, so another worker sees a whole entry or none the moment the original ends; survives a
  restart. Bounded by CACHE_MAX_BYTES: a hit touches the file's mtime (at most once a minute, so
  hits stay reads, as on PostgreSQL), and a write that takes the folder past the bound deletes the
  expired entries, then the least recently used ones.
- Redis (CACHE_URL=redis://…, through Django's RedisCache): shared by every host; an entry expires
  with its TTL, and Redis's own maxmemory policy (allkeys-lru) bounds it.
- PostgreSQL (DATABASE_URL=postgres://… and no CACHE_URL): rows of the response_cache table,
  shared by the hosts that share the database; bounded by CACHE_MAX_BYTES like the files (a hit
  marks its row used at most once a minute, so hits stay reads).
Every call may block (disk or network): the step calls them in a thread, except reads of small
entry files, which the page cache answers faster than a thread hop (`inline_max`). Writes always
go to a thread: a write waits whenever the kernel throttles writers with dirty pages to flush.
"""

import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.dispatch import receiver

from keys.store import REDIS_BACKEND, redis_guarded

_REDIS_PREFIX = "gateway-cache:"
_SUFFIX = ".entry"
# A hit marks its entry used (a file's mtime, a row's used_at) when the mark is older than this:
# least-recently-used eviction to the minute, and a hit stays a read.
TOUCH_EVERY = 60.0


@dataclass(slots=True)
class CacheEntry:
    """One stored answer: what the client got, and the exchange it came from."""

    source: str  # request id of the original exchange
    created: float  # wall time the original ended
    expires: float  # wall time after which no request may read it
    status: int
    headers: list[tuple[str, str]]
    is_sse: bool
    chunks: list[int] = field(default_factory=list)  # each chunk's size, to replay it as it came
    offsets_ms: list[float] = field(default_factory=list)  # when each chunk came, since the first one
    body: bytes = b""

    def to_bytes(self) -> bytes:
        """One JSON line (everything but the body), then the body's bytes as they are."""
        head = {"source": self.source, "created": self.created, "expires": self.expires, "status": self.status,
                "headers": self.headers, "is_sse": self.is_sse, "chunks": self.chunks, "offsets_ms": self.offsets_ms}
        return orjson.dumps(head) + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> "CacheEntry":
        head, _, body = data.partition(b"\n")
        fields = orjson.loads(head)
        fields["headers"] = [tuple(pair) for pair in fields["headers"]]
        return cls(**fields, body=body)

    def pieces(self) -> list[bytes]:
        """The body cut where the original's chunks ended."""
        out, at = [], 0
        for size in self.chunks:
            out.append(self.body[at:at + size])
            at += size
        if at < len(self.body):
            out.append(self.body[at:])
        return out


class EntryTooBig(Exception):
    """An entry bigger than a read's size_max: read it in a thread instead."""


class EntryRefused(Exception):
    """A store's put that keeps nothing: the entry alone is bigger than the store's bound (CACHE_MAX_BYTES)."""


class CacheStore:
    """The interface both backends offer."""

    inline_max = 0  # entries up to this size may be read on the event loop (get(key, size_max=...))

    def get(self, key: str, size_max: int | None = None) -> CacheEntry | None:
        """The live entry or None. With size_max, a bigger one is not read: EntryTooBig (read it in a thread)."""
        raise NotImplementedError

    def put(self, key: str, entry: CacheEntry) -> None:
        raise NotImplementedError

    def prune(self, *, everything: bool = False) -> tuple[int, int]:
        """Delete expired entries (every entry with everything=True), then evict down to the bound: (entries, bytes)."""
        raise NotImplementedError


class FileStore(CacheStore):
    """One file per entry under a folder of this machine, shared by its workers."""

    inline_max = 256 * 1024

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._dir = f"{folder}{os.sep}"
        self._written = max_bytes  # bytes written since the folder was last measured: measure on the first write
        self._lock = threading.Lock()
        self._names = itertools.count()

    def _path(self, key: str) -> str:
        return f"{self._dir}{key}{_SUFFIX}"  # a str: pathlib's objects cost more than the read on a hit

    def get(self, key: str, size_max: int | None = None) -> CacheEntry | None:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            stat = os.fstat(fd)
            if size_max is not None and stat.st_size > size_max:
                raise EntryTooBig(key)
            entry = CacheEntry.from_bytes(_read_all(fd, stat.st_size))
            now = time.time()
            if entry.expires <= now:
                return None
            if stat.st_mtime < now - TOUCH_EVERY:
                try:
                    os.utime(fd)  # recently used: eviction takes the oldest mtime first
                except OSError:
                    pass
            return entry
        finally:
            os.close(fd)

    def put(self, key: str, entry: CacheEntry) -> None:
        data = entry.to_bytes()
        if len(data) > self.max_bytes:
            raise EntryRefused(f"larger than CACHE_MAX_BYTES ({self.max_bytes})")
        # A name no other writer uses (process id, counter, and random bytes against a left-over of a
        # crashed process with the same id; tempfile's way costs more than the write), renamed over the
        # entry so that readers see the whole entry or none.
        tmp = os.path.join(self.folder, f".tmp-{os.getpid()}-{next(self._names)}-{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            target = self._path(key)
            # Unlinked first: ext4 (auto_da_alloc) flushes a file renamed over another before the
            # rename returns, milliseconds per entry stored again. Meanwhile a reader finds a miss.
            _unlink(str(target))
            os.replace(tmp, target)
        except BaseException:
            _unlink(tmp)
            raise
        with self._lock:
            self._written += len(data)
            measure = self._written * 10 >= self.max_bytes  # a tenth of the bound written since: measure again
            if measure:
                self._written = 0
        if measure:
            self.prune()

    def prune(self, *, everything: bool = False) -> tuple[int, int]:
        now = time.time()
        live: list[tuple[float, int, Path]] = []
        gone = freed = 0
        for item in os.scandir(self.folder):
            if item.name.startswith(".tmp-"):  # a write a crash cut short (a live one is renamed within moments)
                try:
                    if item.stat().st_mtime < now - 3600:
                        _unlink(item.path)
                except OSError:
                    pass
                continue
            if not item.name.endswith(_SUFFIX):
                continue
            try:
                stat = item.stat()
                with open(item.path, "rb") as f:
                    expires = orjson.loads(f.readline())["expires"]
            except (OSError, ValueError, KeyError):
                continue
            if everything or expires <= now:
                gone, freed = gone + _unlink(item.path), freed + stat.st_size
            else:
                live.append((stat.st_mtime, stat.st_size, Path(item.path)))
        total = sum(size for _, size, _ in live)
        for _, size, path in sorted(live):  # least recently used first
            if total <= self.max_bytes:
                break
            gone, freed, total = gone + _unlink(str(path)), freed + size, total - size
        return gone, freed


def _read_all(fd: int, size: int) -> bytes:
    parts = [os.read(fd, size)]
    while len(parts[-1]) and (size := size - len(parts[-1])) > 0:
        parts.append(os.read(fd, size))
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0


class RedisStore(CacheStore):
    """Entries in Redis through Django's cache (CACHE_URL), each expiring with its TTL."""

    def __init__(self) -> None:
        self.cache = caches["default"]

    def get(self, key: str, size_max: int | None = None) -> CacheEntry | None:
        data = redis_guarded(lambda: self.cache.get(_REDIS_PREFIX + key))
        if data is None:
            return None
        entry = CacheEntry.from_bytes(data)
        return entry if entry.expires > time.time() else None

    def put(self, key: str, entry: CacheEntry) -> None:
        timeout = max(1, int(entry.expires - time.time()) + 1)
        redis_guarded(lambda: self.cache.set(_REDIS_PREFIX + key, entry.to_bytes(), timeout=timeout))

    def prune(self, *, everything: bool = False) -> tuple[int, int]:
        if not everything:
            return 0, 0  # Redis expires entries itself
        def empty() -> int:
            client = self.cache._cache.get_client(write=True)  # Django's RedisCache: the redis-py client
            names = list(client.scan_iter(match=self.cache.make_key(_REDIS_PREFIX + "*"), count=500))
            for start in range(0, len(names), 500):
                client.delete(*names[start:start + 500])
            return len(names)

        return redis_guarded(empty), 0  # a Redis away: StoreUnavailable (it was redis-py's traceback)


class DatabaseStore(CacheStore):
    """Entries in the response_cache table of the gateway's PostgreSQL database."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._written = max_bytes
        self._lock = threading.Lock()

    def get(self, key: str, size_max: int | None = None) -> CacheEntry | None:
        from proxy.models import CachedAnswer

        now = time.time()
        try:
            row = CachedAnswer.objects.filter(key=key, expires__gt=now).values_list("data", "used").first()
            if row is None:
                return None
            if now - row[1] > TOUCH_EVERY:
                CachedAnswer.objects.filter(key=key).update(used=now)
            return CacheEntry.from_bytes(bytes(row[0]))
        finally:
            close_old_connections()  # a thread's connection, treated as a request's (keys/refresh.py)

    def put(self, key: str, entry: CacheEntry) -> None:
        from proxy.models import CachedAnswer

        data = entry.to_bytes()
        if len(data) > self.max_bytes:
            raise EntryRefused(f"larger than CACHE_MAX_BYTES ({self.max_bytes})")
        try:
            CachedAnswer.objects.bulk_create(
                [CachedAnswer(key=key, data=data, size=len(data), expires=entry.expires, used=time.time())],
                update_conflicts=True, unique_fields=["key"], update_fields=["data", "size", "expires", "used"])
        finally:
            close_old_connections()
        with self._lock:
            self._written += len(data)
            measure = self._written * 10 >= self.max_bytes
            if measure:
                self._written = 0
        if measure:
            self.prune()

    def prune(self, *, everything: bool = False) -> tuple[int, int]:
        from django.db.models import Sum

        from proxy.models import CachedAnswer

        try:
            doomed = CachedAnswer.objects.all() if everything else CachedAnswer.objects.filter(expires__lte=time.time())
            freed = doomed.aggregate(s=Sum("size"))["s"] or 0
            gone, _ = doomed.delete()
            total = CachedAnswer.objects.aggregate(s=Sum("size"))["s"] or 0
            if total > self.max_bytes:
                evict = []
                for key, size in CachedAnswer.objects.order_by("used").values_list("key", "size").iterator():
                    if total <= self.max_bytes:
                        break
                    evict.append(key)
                    total, freed = total - size, freed + size
                gone += CachedAnswer.objects.filter(key__in=evict).delete()[0]
            return gone, freed
        finally:
            close_old_connections()


_store: list[CacheStore] = []


def cache_store() -> CacheStore:
    """The process's store: Redis when CACHE_URL names it, else PostgreSQL when that is the database, else files."""
    if not _store:
        if settings.CACHES["default"]["BACKEND"] == REDIS_BACKEND:
            _store.append(RedisStore())
        elif settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
            _store.append(DatabaseStore(settings.CACHE_MAX_BYTES))
        else:
            _store.append(FileStore(Path(settings.DATA_DIR) / "cache", settings.CACHE_MAX_BYTES))
    return _store[0]


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    """Tests change settings: choose again."""
    if setting in ("CACHES", "DATABASES", "DATA_DIR", "CACHE_MAX_BYTES"):
        _store.clear()
