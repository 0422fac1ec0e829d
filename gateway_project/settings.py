"""Django settings for the AI gateway: every knob is read from the environment here, once."""

import logging
import os
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

import providers
from providers.base import base_url_tail

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


YEAR = 365 * 86400


def _number(kind: type, name: str, default: float, *, least: float = 0, above: bool = False,
            most: float | None = None) -> float:
    """A numeric setting, read strictly: django-environ's float() drops every character that is not a digit
    ("1e2" read as 12.0), and its int() fails with a bare traceback. None is negative; `least` is the
    smallest value that works (`above`: the value must exceed it), `most` the largest."""
    raw = env.get_value(name, cast=str, default=default)  # the default as it is, the variable as text
    if not isinstance(raw, str):
        return raw
    if not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or value != value or value in (float("inf"), float("-inf")):
        raise ImproperlyConfigured(f"{name} must be {'an integer' if kind is int else 'a number'}, not {raw!r}")
    if value < least or (above and value == least):
        raise ImproperlyConfigured(f"{name} must be {'above' if above else 'at least'} {least:g}, not {raw.strip()}")
    if most is not None and value > most:
        raise ImproperlyConfigured(f"{name} must be at most {most:.0f}{' (a year)' if most == YEAR else ''}, "
                                   f"not {raw.strip()}")
    return value


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _bool(name: str, default: bool) -> bool:
    """A true/false setting, read strictly: django-environ reads any word it does not know (a typo,
    "ture") as False, which for a security setting is the unsafe way to be wrong."""
    raw = env.str(name, default="true" if default else "false").strip().lower()
    if raw not in _TRUE + _FALSE:
        raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), not {raw!r}")
    return raw in _TRUE


def _list(name: str, default: list[str]) -> list[str]:
    """A comma-separated setting, each item stripped, empty items dropped: django-environ keeps the space after a
    comma, so `ALLOWED_HOSTS=gw.example.com, localhost` refused localhost and `MODEL_POLICY_ALLOW=gpt-4o, gpt-4o-mini`
    refused gpt-4o-mini (' gpt-4o-mini' was the name allowed)."""
    return [item.strip() for item in env.list(name, default=default) if item.strip()]


def _password_hidden(text: str, url: str) -> str:
    """A refusal quoting a URL setting, the URL's user:password@ (a database's, Redis's) shown as user:***@: the line
    goes to the console, the server's journal, a CI log."""
    userinfo = url.partition("://")[2].rpartition("@")[0]
    _, colon, password = userinfo.partition(":")
    secret = password if colon else userinfo  # redis://token@host: a user part alone may be the credential
    return text.replace(secret, "***") if secret else text


def _url(name: str, default: str) -> str:
    """An upstream's base URL: http(s)://host[:port][/path]."""
    value = env.str(name, default=default).strip() or default
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  (a port out of range or not a number: every request was a 500 with a traceback)
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(_password_hidden(f"{name} must be an http:// or https:// URL with a host (and "
                                                    f"a port that is a number to 65535), not {value!r}", value))
    if tail := base_url_tail(value):
        raise ImproperlyConfigured(_password_hidden(f"{name} cannot hold {tail[0]} (it would sit inside every "
                                                    "request's path; the client's own query string is forwarded "
                                                    f"as sent): write {value[:-len(tail)]}", value))
    return value


def _folder(name: str, path: Path) -> Path:
    """A folder the gateway writes to, made when missing: one it cannot make or write stops the start naming
    its setting (it was a bare OSError traceback naming no setting: "Read-only file system: '.../secret_key'")."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImproperlyConfigured(f"{name}: cannot make the folder {str(path)!r}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ImproperlyConfigured(f"{name}: the folder {str(path)!r} is not writable by this user (or its disk "
                                   "is read-only)")
    return path


DATA_DIR = _folder("DATA_DIR", Path(env.str("DATA_DIR", default=str(BASE_DIR / "data"))).resolve())


def _secret_key_load() -> str:
    """Read SECRET_KEY, generating one under the data folder on first start when unset. One that cannot be read
    (a folder in its place, a file of another user's) stops the start naming it: it was an OSError traceback."""
    key_file = DATA_DIR / "secret_key"
    try:
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(50))
            key_file.chmod(0o600)
        key = key_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImproperlyConfigured(f"SECRET_KEY is unset and {str(key_file)!r} cannot be read: "
                                   f"{getattr(exc, 'strerror', None) or exc}") from None
    if not key:  # Django's own words would be "The SECRET_KEY setting must not be empty", naming no file
        raise ImproperlyConfigured(f"SECRET_KEY is unset and {str(key_file)!r} is empty (it keys the credential "
                                   "fingerprints in the log: restore it from a backup, or delete it to start anew)")
    return key


SECRET_KEY = env.str("SECRET_KEY", default="") or _secret_key_load()
DEBUG = _bool("DEBUG", False)
ALLOWED_HOSTS = _list("ALLOWED_HOSTS", ["*"])
if not ALLOWED_HOSTS:  # set to nothing (`ALLOWED_HOSTS=$HOST`, HOST unset): Django then refuses every Host
    raise ImproperlyConfigured("ALLOWED_HOSTS is set but names no host: the admin and /health would answer 400 to "
                               "every request (name the hosts, comma-separated, or leave it unset for any host)")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",
    "logs",
    "keys",
    "hold",
    "proxy",
]

# Django's stock stack, for the pages Django serves (/admin, /static, /health). Proxied calls
# never reach it: gateway_project/asgi.py routes them to the proxy's own ASGI adapter.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "gateway_project.middleware.nul_refused",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
_default_sqlite = Path(env.str("DB_PATH", default=str(DATA_DIR / "gateway.db")))
_db_url = env.str("DATABASE_URL", default="")
try:
    DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{_default_sqlite.resolve()}")}
except Exception as exc:  # django-environ raises ImproperlyConfigured, KeyError or ValueError on a bad URL
    raise ImproperlyConfigured(_password_hidden(f"DATABASE_URL is not a database URL ({type(exc).__name__}: {exc}): "
                                                f"{_db_url!r}", _db_url)) from None
if not DATABASES["default"].get("ENGINE") or (_db_url and urlsplit(_db_url).scheme not in environ.Env.DB_SCHEMES):
    raise ImproperlyConfigured(_password_hidden(f"DATABASE_URL is not a database URL Django knows (postgres://, "
                                                f"sqlite:///...): {_db_url!r}", _db_url))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    _folder("DB_PATH" if not _db_url else "DATABASE_URL", Path(DATABASES["default"]["NAME"]).parent)
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # WAL lets readers (admin) run beside the log writer; IMMEDIATE takes the write
            # lock up front so concurrent writers wait on busy_timeout instead of failing.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": _number(float, "SQLITE_BUSY_TIMEOUT", 5.0),
        }
    )
DATABASES["default"]["CONN_MAX_AGE"] = _number(int, "CONN_MAX_AGE", 0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Files ----------------------------------------------------------------------------
FILE_STORAGE_PATH = _folder("FILE_STORAGE_PATH",
                            Path(env.str("FILE_STORAGE_PATH", default=str(DATA_DIR / "files"))).resolve())
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "payloads": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(FILE_STORAGE_PATH), "base_url": None},
    },
}
# s3://bucket/prefix: payload files in an S3-compatible bucket (django-storages) instead of the folder.
# Credentials, region and endpoint come from the standard AWS_* variables (boto3 reads them itself).
FILE_STORAGE_URL = env.str("FILE_STORAGE_URL", default="")
AWS_S3_ENDPOINT_URL = env.str("AWS_S3_ENDPOINT_URL", default="")  # MinIO, R2, Ceph...; empty: AWS
if "@" in urlsplit(AWS_S3_ENDPOINT_URL).netloc:  # boto3 never sends it, and quotes the URL in each error it raises
    raise ImproperlyConfigured(_password_hidden(
        f"AWS_S3_ENDPOINT_URL must not hold a user or password (requests are signed with AWS_ACCESS_KEY_ID and "
        f"AWS_SECRET_ACCESS_KEY): {AWS_S3_ENDPOINT_URL!r}", AWS_S3_ENDPOINT_URL))
AWS_S3_REGION_NAME = env.str("AWS_S3_REGION_NAME", default="")
if FILE_STORAGE_URL:
    from urllib.parse import urlsplit

    _s3 = urlsplit(FILE_STORAGE_URL)
    if _s3.scheme != "s3" or not _s3.netloc:
        raise ImproperlyConfigured(_password_hidden(f"FILE_STORAGE_URL must look like s3://bucket/prefix, not "
                                                    f"{FILE_STORAGE_URL!r}", FILE_STORAGE_URL))
    STORAGES["payloads"] = {
        "BACKEND": "logs.s3_storage.PayloadS3Storage",
        "OPTIONS": {
            "bucket_name": _s3.netloc, "location": _s3.path.strip("/"),
            "endpoint_url": AWS_S3_ENDPOINT_URL or None,
            "region_name": AWS_S3_REGION_NAME or None,
            "file_overwrite": True,  # names are content ids: the same name is the same bytes
            "querystring_auth": False, "default_acl": None,
            # Files opened for reading spill to disk above this (the admin streams instead, logs/storage.py).
            "max_memory_size": 1 << 20,
        },
    }
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# --- Gateway --------------------------------------------------------------------------
# Each built-in provider's upstream base URL, from the variable its module names (upstream_env).
UPSTREAM_URLS = {p.name: _url(p.upstream_env, p.upstream_default) for p in providers.builtin()}
for _provider in providers.builtin():  # SDKs' base URLs end in /v1, and so did a copied one: every call 404'd
    if _version := _provider.base_url_version(UPSTREAM_URLS[_provider.name]):
        _given = UPSTREAM_URLS[_provider.name].rstrip("/")
        raise ImproperlyConfigured(_password_hidden(f"{_provider.upstream_env} must not end in {_version}: every client "
                                                    f"path already starts with it (write {_given[:-len(_version)]})",
                                                    _given))
# OpenAI-compatible servers mounted at /{name}/v1/*: "groq=https://api.groq.com/openai,ollama=http://127.0.0.1:11434"
GATEWAY_PROVIDERS = _list("GATEWAY_PROVIDERS", [])
try:
    providers.registry(GATEWAY_PROVIDERS)
except ValueError as exc:
    _refusal = str(exc)
    for _entry in GATEWAY_PROVIDERS:  # the entry it quotes may hold a password (a server behind basic auth)
        _refusal = _password_hidden(_refusal, _entry)
    raise ImproperlyConfigured(_refusal) from None
# "inject": ask OpenAI streams for usage even when the client did not, and hide it from that client.
STREAM_USAGE = env.str("STREAM_USAGE", default="off").strip().lower()
if STREAM_USAGE not in ("off", "inject"):
    raise ImproperlyConfigured(f"STREAM_USAGE must be 'off' or 'inject', not {STREAM_USAGE!r}")
# A JSON file of private or negotiated prices, over genai-prices entry by entry (logs/pricing); empty: genai-prices only.
PRICE_TABLE_PATH = env.str("PRICE_TABLE_PATH", default="")
# Files that answers point to (Replicate outputs) are saved from these hosts only.
REPLICATE_FILE_HOSTS = _list("REPLICATE_FILE_HOSTS", ["replicate.delivery", "pbxt.replicate.delivery"])
REPLICATE_FILE_MAX_BYTES = _number(int, "REPLICATE_FILE_MAX_BYTES", 100 * 1024 * 1024)
UPSTREAM_CONNECT_TIMEOUT = _number(float, "UPSTREAM_CONNECT_TIMEOUT", 10.0, above=True)
UPSTREAM_READ_TIMEOUT = _number(float, "UPSTREAM_READ_TIMEOUT", 600.0, above=True)
# Longest silence allowed between two chunks of an answer body once it started (0: no limit).
STREAM_IDLE_TIMEOUT = _number(float, "STREAM_IDLE_TIMEOUT", 300.0)
# Requests in flight to each provider, per worker (one provider's slow answers never hold up another's).
UPSTREAM_MAX_CONNECTIONS = _number(int, "UPSTREAM_MAX_CONNECTIONS", 200, least=1)
# Longest wait for one of them when all are taken; then a 504 naming both settings.
UPSTREAM_POOL_TIMEOUT = _number(float, "UPSTREAM_POOL_TIMEOUT", 10.0)
MAX_REQUEST_BODY_BYTES = _number(int, "MAX_REQUEST_BODY_BYTES", 100 * 1024 * 1024)
# Text bodies above this size go to a file instead of the TEXT column.
LOG_BODY_INLINE_MAX_BYTES = _number(int, "LOG_BODY_INLINE_MAX_BYTES", 1024 * 1024)
# A compressed answer that decodes to more than this is kept as received (a decompression bomb).
LOG_DECODE_MAX_BYTES = _number(int, "LOG_DECODE_MAX_BYTES", 64 * 1024 * 1024)
# A multipart body of more parts than this is kept whole, not split into a file per part.
LOG_MULTIPART_MAX_PARTS = _number(int, "LOG_MULTIPART_MAX_PARTS", 1000, least=1)
LOG_REDACT_HEADERS = _list("LOG_REDACT_HEADERS", [])
LOG_REDACT_QUERY_PARAMS = _list("LOG_REDACT_QUERY_PARAMS", [])
# Optional access keys for the proxy (`name:key` or `key`, comma-separated); empty = open.
GATEWAY_API_KEYS = env.list("GATEWAY_API_KEYS", default=[])
for _entry in GATEWAY_API_KEYS:  # an empty one is most often `name:$VAR` with VAR unset: keys meant, none set
    if not _entry.strip() or (":" in _entry and not _entry.partition(":")[2].strip()):
        raise ImproperlyConfigured(f"GATEWAY_API_KEYS has an entry without a key: {_entry.strip()!r} "
                                   "(entries are name:key or key, comma-separated)")
# With keys (GATEWAY_API_KEYS or any gateway key), also forward requests that present none (no limits apply).
GATEWAY_ALLOW_UNKEYED = _bool("GATEWAY_ALLOW_UNKEYED", False)
# The shared store behind gateway keys' request limits: Redis for several hosts; empty: the database
# (keys/store.py says why). Django's cache framework reads it: redis://127.0.0.1:6379/0.
CACHE_URL = env.str("CACHE_URL", default="")
if CACHE_URL:
    try:
        CACHES = {"default": env.cache_url_config(CACHE_URL)}
    except Exception as exc:  # django-environ raises ImproperlyConfigured or KeyError on an unknown scheme
        raise ImproperlyConfigured(_password_hidden(f"CACHE_URL is not a cache URL Django knows ({exc}): "
                                                    f"{CACHE_URL!r}", CACHE_URL)) from None
    if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
        # redis-py waits 5 s (a read) or forever (a connect) for a Redis that stopped answering, and every
        # limited request waited with it; a second is far above any answer of a working Redis. The URL's
        # own ?socket_timeout=…&socket_connect_timeout=… win.
        _options = CACHES["default"].setdefault("OPTIONS", {})
        _options.setdefault("socket_timeout", 1)
        _options.setdefault("socket_connect_timeout", 1)
# The response cache (docs/cache.md): the TTL for requests without X-Gateway-Cache (0: off unless
# asked for), the bound of the file store under DATA_DIR/cache, the largest answer stored.
CACHE_DEFAULT_TTL = _number(int, "CACHE_DEFAULT_TTL", 0)
CACHE_MAX_BYTES = _number(int, "CACHE_MAX_BYTES", 1024 * 1024 * 1024)
CACHE_MAX_ENTRY_BYTES = _number(int, "CACHE_MAX_ENTRY_BYTES", 16 * 1024 * 1024)
MAX_REQUEST_HEADER_BYTES = _number(int, "MAX_REQUEST_HEADER_BYTES", 64 * 1024, least=1)
# Longest silence allowed while a request body is being received (slow or lying clients).
REQUEST_BODY_TIMEOUT = _number(float, "REQUEST_BODY_TIMEOUT", 60.0, above=True)
JOURNAL_DIR = DATA_DIR / "journal"
# Bodies the log keeps as files wait here (local disk) until the ingest process stores them.
SPOOL_DIR = DATA_DIR / "spool"
JOURNAL_FSYNC = _bool("JOURNAL_FSYNC", False)
# An ingest process with nothing to write for this long exits; the next record starts another.
# At most a year: a wait past threading.TIMEOUT_MAX (about 292 years) killed the log writer thread with an
# OverflowError, and nothing more reached the log, nor could the server stop.
LOG_INGEST_IDLE_SECONDS = _number(float, "LOG_INGEST_IDLE_SECONDS", 60.0, above=True, most=YEAR)
SHUTDOWN_GRACE_SECONDS = _number(float, "SHUTDOWN_GRACE_SECONDS", 10.0)

# Request hooks (docs/hooks.md): dotted paths, run in order; loaded and checked at start (proxy/apps.py).
GATEWAY_HOOKS = _list("GATEWAY_HOOKS", [])
# Hooks (of GATEWAY_HOOKS) whose failure is logged and skipped instead of answering 500.
GATEWAY_HOOKS_SKIP_ON_ERROR = _list("GATEWAY_HOOKS_SKIP_ON_ERROR", [])
# Answers up to this size are collected whole for on_response hooks (larger ones: observe only).
HOOKS_RESPONSE_MAX_BYTES = _number(int, "HOOKS_RESPONSE_MAX_BYTES", 10 * 1024 * 1024, least=1)
# How long one hook call (on_request or on_response) may take before it counts as failed (docs/hooks.md).
HOOK_TIMEOUT_SECONDS = _number(float, "HOOK_TIMEOUT_SECONDS", 30.0, above=True, most=YEAR)
# The shipped gateway_hooks.model_policy.ModelPolicy hook: models allowed (empty: any), max_tokens ceiling (0: none).
MODEL_POLICY_ALLOW = _list("MODEL_POLICY_ALLOW", [])
MODEL_POLICY_MAX_TOKENS = _number(int, "MODEL_POLICY_MAX_TOKENS", 0)
# The hold queue (docs/hold.md): how long a held request waits for a decision, and what then happens.
# At most a year: a deadline past the calendar's end failed every held request (1e12).
HOLD_TIMEOUT_SECONDS = _number(float, "HOLD_TIMEOUT_SECONDS", 60.0, above=True, most=YEAR)
HOLD_TIMEOUT_ACTION = env.str("HOLD_TIMEOUT_ACTION", default="approve").strip().lower()
if HOLD_TIMEOUT_ACTION not in ("approve", "reject-400", "reject-500", "content-policy"):
    raise ImproperlyConfigured("HOLD_TIMEOUT_ACTION must be approve, reject-400, reject-500 or content-policy, "
                               f"not {HOLD_TIMEOUT_ACTION!r}")

# The proxy reads bodies itself (MAX_REQUEST_BODY_BYTES); this caps only form posts to the admin.
DATA_UPLOAD_MAX_MEMORY_SIZE = _number(int, "DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
# The admin's delete of "every exchange matching the filters" posts one field per exchange: Django's 1,000
# refused a delete of 1,200 with a 400 after its confirmation page. 100,000 ids take ~5 MB, in the cap above.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100_000
# Request bodies above this size are received into a spool file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- Security -------------------------------------------------------------------------
SECURE_COOKIES = _bool("SECURE_COOKIES", False)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
CSRF_TRUSTED_ORIGINS = _list("CSRF_TRUSTED_ORIGINS", [])
# HTTPS hardening for the pages Django serves (the admin); see docs/security.md.
SECURE_HSTS_SECONDS = _number(int, "SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", False)
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", False)
# Load balancers probe /health over plain HTTP inside the network: never redirect it.
SECURE_REDIRECT_EXEMPT = [r"^health$"]
# Behind a TLS-terminating reverse proxy that sets X-Forwarded-Proto (and strips the client's).
if _bool("TRUST_X_FORWARDED_PROTO", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Admin login throttling (django-axes): after ADMIN_LOGIN_FAILURE_LIMIT failures within the
# cool-off, a username is locked from every address and an address for every username. The
# failures are rows in the database, so every worker and host sees the same count. The address
# is REMOTE_ADDR, the one uvicorn reports: X-Forwarded-For counts only from the proxies uvicorn
# is told to trust (--forwarded-allow-ips), as for requests.client_addr.
ADMIN_LOGIN_FAILURE_LIMIT = _number(int, "ADMIN_LOGIN_FAILURE_LIMIT", 5, least=1)
ADMIN_LOGIN_COOLOFF_MINUTES = _number(int, "ADMIN_LOGIN_COOLOFF_MINUTES", 15, least=1)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = ADMIN_LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=ADMIN_LOGIN_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own, not the pair
_minutes = f"{ADMIN_LOGIN_COOLOFF_MINUTES} minute{'s' if ADMIN_LOGIN_COOLOFF_MINUTES != 1 else ''}"
AXES_COOLOFF_MESSAGE = (f"Too many failed logins for this username or from this address. Try again in {_minutes} "
                        f"(each further failure restarts the wait), or ask an administrator to unlock it.")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

LOG_LEVEL = env.str("LOG_LEVEL", default="WARNING").strip().upper() or "WARNING"
if not isinstance(logging.getLevelName(LOG_LEVEL), int):
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"suspicious_brief": {"()": "gateway_project.log_filters.SuspiciousBrief"},
                "health_quiet": {"()": "gateway_project.log_filters.HealthProbeQuiet"}},
    # uvicorn's own lines keep uvicorn's format and handlers (its --log-level, --no-access-log): they do not
    # reach the root logger. Secrets are masked when a record is made (logs.redaction.console), before any format.
    "formatters": {"console": {"()": "gateway_project.log_format.ConsoleFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "console"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # Django logs each on a logger of its own name (django.security.<exception>): a filter is not inherited.
    "loggers": {f"django.security.{name}": {"filters": ["suspicious_brief"]} for name in (
        "DisallowedHost", "DisallowedRedirect", "RequestDataTooBig", "TooManyFieldsSent", "TooManyFilesSent",
        "SuspiciousMultipartForm")} | {"django.request": {"filters": ["health_quiet"]}},
}
