"""The limit store: a sliding window shared by every worker (and host), with an atomic check-and-take.

A request limit of N per W seconds counts admitted requests in one-second buckets: a request is
admitted when the buckets of the last W seconds, the current one included (W+1 buckets), hold
fewer than N. Any span of W seconds lies within such W+1 buckets, so no span of W seconds ever
holds more than N admitted requests: a fixed window lets 2N through across its boundary, and
GCRA (a token bucket) lets a full burst follow another within W. The price of the one-second
buckets: a slot frees between W and W+1 seconds after its request. The check and the take are
one atomic step, so no two workers can both take the last slot.

Three backends, chosen once per process from the settings (docs/keys.md says which to use):
- Redis (CACHE_URL=redis://…, through Django's RedisCache and its redis-py client): a hash of
  buckets per key, read, trimmed and incremented by one Lua script, which Redis runs atomically;
  the clock is Redis's own (TIME), so hosts need not agree on the time. For several hosts.
- PostgreSQL (DATABASE_URL=postgres://… and no CACHE_URL): rows of gateway_key_hits in the
  database, in one transaction holding a transaction-scoped advisory lock on the key: hosts
  sharing the database share the limit (their clocks must agree, as NTP keeps them).
- a file of this machine (the default, with SQLite): one small file per key under
  DATA_DIR/limits, mapped into memory and read and written under an exclusive flock(2). The workers of one machine share
  it exactly; the lock is held for a few microseconds and the kernel wakes a waiter when it is
  released, so the check runs on the event loop without a thread. SQLite keeps the log on one
  machine anyway; the log database itself is not used, because SQLite lets one writer at a time
  in, and the log's ingest process is that writer most of the time.
"""

import ctypes
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import InterfaceError, OperationalError, connection, transaction
from django.dispatch import receiver

REDIS_BACKEND = "django.core.cache.backends.redis.RedisCache"
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Take:
    """The outcome of one check-and-take on a window."""

    allowed: bool
    used: int  # admitted requests in the window, this one included when allowed
    reset: float  # seconds until a slot frees (refused) or the oldest counted request leaves (admitted)


class StoreUnavailable(Exception):
    """The limit store could not be reached: requests of limited keys are refused (503).

    Its message is what the client is told; `detail` (the driver's error, which may name the store's
    address) is for the log only."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


# After a Redis call fails, calls fail at once for this long instead of each waiting for its own
# timeout: a Redis that stopped answering held every limited request for the socket timeout, and the
# key reads queued behind them on the reader threads (keys/refresh.py); the response cache's reads
# and writes waited too. Then one call tries Redis again while the others still fail at once, until
# it answers (without that, every call of the moment after each window waited for its timeout).
REDIS_AWAY_SECONDS = 2.0
_redis_away = {"until": 0.0, "detail": "", "probing": False}  # detail: the last failure, "" once Redis answered
_redis_away_lock = threading.Lock()


def redis_guarded(call: Callable[[], T]) -> T:
    """Run a call on the shared Redis; StoreUnavailable if it fails, or at once while it failed less than
    REDIS_AWAY_SECONDS ago, or while another call is trying it again."""
    probe = False
    if _redis_away["detail"]:  # failed last time: not known to be back (the healthy path takes no lock)
        with _redis_away_lock:
            if time.monotonic() < _redis_away["until"]:
                raise StoreUnavailable("Redis is unavailable (failed less than "
                                       f"{REDIS_AWAY_SECONDS:g} s ago)", _redis_away["detail"])
            if _redis_away["probing"]:
                raise StoreUnavailable("Redis is unavailable (being tried again)", _redis_away["detail"])
            _redis_away["probing"] = probe = True
    try:
        result = call()
    except Exception as exc:  # redis.exceptions.* (connection refused, timeout): the store is down
        detail = f"{type(exc).__name__}: {exc}"
        with _redis_away_lock:
            if not _redis_away["detail"]:  # once an outage, on the console: it was only in the log's rows
                log.warning("Redis (CACHE_URL %s) cannot be reached (%s): requests of gateway keys with limits "
                            "are refused with 503 and the response cache is skipped until it answers",
                            redis_url_shown(), detail)
            _redis_away.update(until=time.monotonic() + REDIS_AWAY_SECONDS, detail=detail)
        raise StoreUnavailable(f"Redis is unavailable ({type(exc).__name__})", detail) from None
    finally:
        if probe:
            _redis_away["probing"] = False
    if probe:
        _redis_away["detail"] = ""  # it answered: back to calling it freely
        log.warning("Redis (CACHE_URL %s) answers again", redis_url_shown())
    return result


def redis_url_shown() -> str:
    """The Redis URL as the console shows it: scheme, host, port and database, without user and password."""
    location = settings.CACHES["default"]["LOCATION"]
    parts = urlsplit((location if isinstance(location, str) else location[0]).split(",")[0])
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def store_probe() -> None:
    """At start: ask Redis once, so that one that cannot be reached is said on the console now (redis_guarded),
    not first learnt from requests refused with 503."""
    if store_kind() == "redis":
        try:
            redis_guarded(lambda: caches["default"].has_key("gateway:start-probe"))
        except StoreUnavailable:
            pass  # said by redis_guarded; requests get their 503 in their provider's shape


_kind: list[str] = []  # read once per process: settings are read on every request otherwise


def store_kind() -> str:
    """'redis', 'database' (PostgreSQL) or 'file' (this machine), from CACHE_URL and DATABASE_URL."""
    if not _kind:
        if settings.CACHES["default"]["BACKEND"] == REDIS_BACKEND:
            _kind.append("redis")
        elif settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
            _kind.append("database")
        else:
            _kind.append("file")
    return _kind[0]


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs) -> None:
    """Tests change settings: choose again (and reopen the files under the new DATA_DIR)."""
    if setting in ("CACHES", "DATABASES", "DATA_DIR"):
        _kind.clear()
        _folder.clear()


def store_blocks() -> bool:
    """Whether a take waits on the network (run it in a thread) rather than a local lock."""
    return store_kind() != "file"


def _decide(seconds: Sequence[int], counts: Sequence[int], now: int, limit: int,
            window: int) -> tuple[Take, bool]:
    """The verdict from the buckets (seconds[i], counts[i]) in the window; and whether to add one at `now`.

    Two parallel sequences and C-level iteration (map, compress) rather than a list of pairs:
    this runs for every request of a limited key, with W+1 buckets from a file.
    """
    live = list(map((now - window).__le__, seconds))  # an unused or stale bucket's second is older
    used = sum(compress(counts, live))
    if used < limit:  # the oldest counted request (this one if none) leaves the window first
        reset = min(compress(seconds, live), default=now) + window + 1 - now
        return Take(True, used + 1, float(reset)), True
    need = used - limit + 1  # requests that must leave before the next one fits
    freed, reset = 0, 0
    for second, count in sorted(zip(compress(seconds, live), compress(counts, live))):
        freed += count
        if freed >= need:
            reset = second + window + 1 - now
            break
    return Take(False, used, float(max(reset, 0))), False


# --- Redis
_LUA = """
local now = tonumber(redis.call('TIME')[1])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local h = redis.call('HGETALL', KEYS[1])
local buckets = {}
local used = 0
for i = 1, #h, 2 do
  local s = tonumber(h[i])
  local c = tonumber(h[i + 1])
  if s < now - window then
    redis.call('HDEL', KEYS[1], h[i])
  else
    used = used + c
    table.insert(buckets, {s, c})
  end
end
local allowed = 0
if used < limit then
  redis.call('HINCRBY', KEYS[1], now, 1)
  used = used + 1
  allowed = 1
  table.insert(buckets, {now, 1})
end
redis.call('EXPIRE', KEYS[1], window + 2)
table.sort(buckets, function(a, b) return a[1] < b[1] end)
local need = used - limit + 1
if allowed == 1 then need = 1 end
local freed = 0
local reset = 0
for _, b in ipairs(buckets) do
  freed = freed + b[2]
  if freed >= need then
    reset = b[1] + window + 1 - now
    break
  end
end
return {allowed, used, reset}
"""
_script = None


def _redis_take(bucket: str, limit: int, window: int) -> Take:
    cache = caches["default"]
    key = cache.make_and_validate_key(f"gateway-key-window:{bucket}")

    def take() -> list:
        global _script
        client = cache._cache.get_client(key, write=True)  # Django's RedisCache: the redis-py client
        if _script is None:
            _script = client.register_script(_LUA)
        return _script(keys=[key], args=[limit, window], client=client)

    allowed, used, reset = redis_guarded(take)
    return Take(bool(allowed), int(used), float(max(int(reset), 0)))


# --- PostgreSQL
def _lock_id(bucket: str) -> int:
    """A signed 64-bit id for PostgreSQL's advisory lock on this bucket."""
    return int.from_bytes(hashlib.sha256(bucket.encode()).digest()[:8], "big", signed=True)


def _database_take_once(bucket: str, limit: int, window: int) -> Take:
    now = int(time.time())
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_id(bucket)])
            cur.execute("DELETE FROM gateway_key_hits WHERE bucket = %s AND second < %s", [bucket, now - window])
            cur.execute("SELECT second, count FROM gateway_key_hits WHERE bucket = %s", [bucket])
            rows = cur.fetchall()
            take, add = _decide([r[0] for r in rows], [r[1] for r in rows], now, limit, window)
            if add:
                cur.execute("INSERT INTO gateway_key_hits (bucket, second, count) VALUES (%s, %s, 1) "
                            "ON CONFLICT (bucket, second) DO UPDATE SET count = gateway_key_hits.count + 1",
                            [bucket, now])
    return take


def _database_take(bucket: str, limit: int, window: int) -> Take:
    try:
        return _database_take_once(bucket, limit, window)
    except (OperationalError, InterfaceError):
        connection.close()  # a broken or stale connection of this thread: one more try on a new one
        try:
            return _database_take_once(bucket, limit, window)
        except (OperationalError, InterfaceError) as exc:
            raise StoreUnavailable(f"the database limit store is unavailable ({type(exc).__name__})",
                                   str(exc)) from None


# --- a file of this machine
# A file: a header, then `window + 1` slots of (second, count). The header is the window as last
# summed, (second, window, requests in it at that second, the oldest second counted): within one
# second every take finds it current and reads and writes two records, where summing the slots
# reads all of them (at 1,000 requests a second, they are summed once a second, not 1,000 times).
_HEAD = struct.Struct("<qqqq")
_SLOT = struct.Struct("<qq")  # (second, count)
_layouts: dict[int, struct.Struct] = {}  # the slots of a file of `slots` buckets, by slots
_files: dict[tuple[str, str], tuple[int, mmap.mmap]] = {}
_folder: list[str] = []
_files_lock = threading.Lock()
# flock(2) excludes other processes, not other threads of this one (they share the open file):
# threads of one process are excluded by this lock first. The event loop's thread is the usual caller.
_take_lock = threading.Lock()
# A take is on the request path of every limited key, on the event loop's thread. os.pread,
# os.pwrite and fcntl.flock each release and retake the GIL, and on a busy worker another thread
# waiting for it (the journal writer, a key refresh) takes it at each release, so the loop's
# thread queues behind it. The buckets are read and written through a shared mapping (memory,
# no system call), and flock(2) is called through ctypes.PyDLL, which keeps the GIL: the lock is
# held for those few microseconds of memory access, so waiting for it with the GIL held stalls
# this process's other threads no longer than that.
_libc = ctypes.PyDLL(None, use_errno=True)
_flock = _libc.flock
_flock.argtypes, _flock.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int


def _locked(fd: int, operation: int) -> None:
    while _flock(fd, operation) != 0:
        error = ctypes.get_errno()
        if error != errno.EINTR:
            raise OSError(error, os.strerror(error))


def _file_map(bucket: str, size: int) -> tuple[int, mmap.mmap]:
    """The bucket's file descriptor and a shared mapping of its first `size` bytes at least."""
    if not _folder:
        _folder.append(str(Path(settings.DATA_DIR) / "limits"))
    folder = _folder[0]
    found = _files.get((folder, bucket))
    if found is not None and len(found[1]) >= size:
        return found
    with _files_lock:
        found = _files.get((folder, bucket))
        if found is not None and len(found[1]) >= size:
            return found
        if found is None:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            # "v2": files of the layout before the header (slots from offset 0) are left alone.
            name = hashlib.sha256(f"v2:{bucket}".encode()).hexdigest()[:32]
            fd = os.open(os.path.join(folder, name), os.O_RDWR | os.O_CREAT, 0o600)
        else:
            fd = found[0]
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # a file is only ever grown (zeros are unused buckets), never shrunk under another's mapping
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        _files[(folder, bucket)] = found = (fd, mmap.mmap(fd, size))
        return found


def _file_take(bucket: str, limit: int, window: int) -> Take:
    slots = window + 1  # bucket of second s lives in slot s % slots
    layout = _layouts.get(slots)
    if layout is None:
        layout = _layouts[slots] = struct.Struct(f"<{2 * slots}q")  # slots x (second, count)
    try:
        fd, buckets = _file_map(bucket, _HEAD.size + layout.size)
        with _take_lock:
            _locked(fd, fcntl.LOCK_EX)
            try:
                return _file_take_locked(buckets, layout, limit, window, slots)
            finally:
                _locked(fd, fcntl.LOCK_UN)
    except OSError as exc:
        raise StoreUnavailable("the limit file is unusable", f"{settings.DATA_DIR}/limits: {exc}") from None


def _file_take_locked(buckets: mmap.mmap, layout: struct.Struct, limit: int, window: int, slots: int) -> Take:
    now = int(time.time())
    here = _HEAD.size + _SLOT.size * (now % slots)
    summed_at, summed_window, used, oldest = _HEAD.unpack_from(buckets)
    # The header is this second's sum: admit without reading the slots.
    if summed_at == now and summed_window == window and used < limit:
        second, count = _SLOT.unpack_from(buckets, here)
        _SLOT.pack_into(buckets, here, now, count + 1 if second == now else 1)
        oldest = oldest if used else now
        _HEAD.pack_into(buckets, 0, now, window, used + 1, oldest)
        return Take(True, used + 1, float(oldest + window + 1 - now))
    flat = layout.unpack_from(buckets, _HEAD.size)
    seconds, counts = flat[0::2], flat[1::2]
    take, add = _decide(seconds, counts, now, limit, window)
    if add:
        second, count = _SLOT.unpack_from(buckets, here)
        _SLOT.pack_into(buckets, here, now, count + 1 if second == now else 1)
    live = [s for s in seconds if s >= now - window]
    oldest = min(live, default=now) if take.used else 0
    _HEAD.pack_into(buckets, 0, now, window, take.used, oldest)
    return take


def window_take(bucket: str, limit: int, window: int) -> Take:
    """Admit one request into `bucket`'s window if fewer than `limit` are in it.

    Blocking on Redis and PostgreSQL (run it in a thread: store_blocks()); microseconds on a file.
    """
    kind = store_kind()
    if kind == "redis":
        return _redis_take(bucket, limit, window)
    if kind == "database":
        return _database_take(bucket, limit, window)
    return _file_take(bucket, limit, window)


def window_clear(bucket: str) -> None:
    """Forget a bucket's window (tests)."""
    kind = store_kind()
    if kind == "redis":
        caches["default"].delete(f"gateway-key-window:{bucket}")
    elif kind == "database":
        with connection.cursor() as cur:
            cur.execute("DELETE FROM gateway_key_hits WHERE bucket = %s", [bucket])
    else:
        fd, _ = _file_map(bucket, _SLOT.size)
        with _take_lock:
            _locked(fd, fcntl.LOCK_EX)
            try:  # zeros, not a shorter file: another process may have it mapped
                os.pwrite(fd, bytes(os.fstat(fd).st_size), 0)
            finally:
                _locked(fd, fcntl.LOCK_UN)
