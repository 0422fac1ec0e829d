"""A bad setting stops the start with a message naming it and the values it takes."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import ROOT


def _settings_run(tmp_path, code: str = "import gateway_project.settings", **variables: str):
    """Run `code` in a fresh Python that reads the settings with these variables (DATA_DIR: tmp_path unless given)."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), **variables}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name,value,message", [
    ("GATEWAY_PROVIDERS", "openai=https://x", "GATEWAY_PROVIDERS: the name 'openai' is already taken"),
    ("LOG_INGEST_IDLE_SECONDS", "0", "LOG_INGEST_IDLE_SECONDS must be above 0, not 0"),
    ("STREAM_USAGE", "always", "STREAM_USAGE must be 'off' or 'inject', not 'always'"),
    ("ADMIN_LOGIN_FAILURE_LIMIT", "0", "ADMIN_LOGIN_FAILURE_LIMIT must be at least 1, not 0"),
    ("ADMIN_LOGIN_COOLOFF_MINUTES", "0", "ADMIN_LOGIN_COOLOFF_MINUTES must be at least 1, not 0"),
    ("UPSTREAM_MAX_CONNECTIONS", "0", "UPSTREAM_MAX_CONNECTIONS must be at least 1, not 0"),
    ("HOOKS_RESPONSE_MAX_BYTES", "0", "HOOKS_RESPONSE_MAX_BYTES must be at least 1, not 0"),
    ("MODEL_POLICY_MAX_TOKENS", "-1", "MODEL_POLICY_MAX_TOKENS must be at least 0, not -1"),
    ("HOLD_TIMEOUT_SECONDS", "0", "HOLD_TIMEOUT_SECONDS must be above 0, not 0"),
    # Values that parse but cannot work: each was taken, and broke every request or was ignored.
    ("UPSTREAM_READ_TIMEOUT", "-1", "UPSTREAM_READ_TIMEOUT must be above 0, not -1"),
    ("MAX_REQUEST_BODY_BYTES", "-5", "MAX_REQUEST_BODY_BYTES must be at least 0, not -5"),
    ("CACHE_DEFAULT_TTL", "-5", "CACHE_DEFAULT_TTL must be at least 0, not -5"),
    ("OPENAI_UPSTREAM_URL", "127.0.0.1:9501", "OPENAI_UPSTREAM_URL must be an http:// or https:// URL with a host "
                                              "(and a port that is a number to 65535), not '127.0.0.1:9501'"),
    # A port that is no port: every request was a 500 with a traceback.
    ("OPENAI_UPSTREAM_URL", "http://127.0.0.1:95010", "OPENAI_UPSTREAM_URL must be an http:// or https:// URL"),
    ("GATEWAY_PROVIDERS", "ollama=http://127.0.0.1:11434x", "GATEWAY_PROVIDERS entry 'ollama=http://127.0.0.1:11434x'"),
    # The SDKs' base URL (with its /v1) copied into the setting sent every call to /v1/v1/... (the upstream's 404).
    ("OPENAI_UPSTREAM_URL", "https://api.openai.com/v1", "OPENAI_UPSTREAM_URL must not end in /v1: every client "
                                                        "path already starts with it (write https://api.openai.com)"),
    ("ANTHROPIC_UPSTREAM_URL", "http://127.0.0.1:9501/v1/", "ANTHROPIC_UPSTREAM_URL must not end in /v1"),
    ("GEMINI_UPSTREAM_URL", "https://generativelanguage.googleapis.com/v1beta",
     "GEMINI_UPSTREAM_URL must not end in /v1beta"),
    # A query string (Azure's api-version) landed inside every request's path: each one a 404, the query lost.
    ("GATEWAY_PROVIDERS", "azure=https://x.openai.azure.com/openai?api-version=2024-10-21",
     "GATEWAY_PROVIDERS entry 'azure=https://x.openai.azure.com/openai?api-version=2024-10-21': a base URL cannot "
     "hold ?"),
    ("OPENAI_UPSTREAM_URL", "https://proxy.example/openai?team=a", "OPENAI_UPSTREAM_URL cannot hold ? (it would sit "
                                                                   "inside every request's path"),
    ("OPENAI_UPSTREAM_URL", "https://proxy.example/#x", "OPENAI_UPSTREAM_URL cannot hold # (it would sit"),
    ("GATEWAY_PROVIDERS", "groq=https://api.groq.com/openai?", "GATEWAY_PROVIDERS entry 'groq=https://api.groq.com/openai?'"),
    ("GATEWAY_API_KEYS", "alice:", "GATEWAY_API_KEYS has an entry without a key: 'alice:'"),  # was an open gateway
    ("DEBUG", "ture", "DEBUG must be true or false (1/0, yes/no, on/off), not 'ture'"),  # was read as False
    ("TRUST_X_FORWARDED_PROTO", "treu", "TRUST_X_FORWARDED_PROTO must be true or false"),
    ("LOG_LEVEL", "nonsense", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not 'NONSENSE'"),
    ("DATABASE_URL", "notaurl", "DATABASE_URL is not a database URL Django knows"),  # was KeyError: 'ENGINE'
    ("DATABASE_URL", "foo://x", "DATABASE_URL is not a database URL Django knows"),
    ("HOLD_TIMEOUT_SECONDS", "1e2x", "HOLD_TIMEOUT_SECONDS must be a number, not '1e2x'"),  # was read as 12.0
    # "never time out": its deadline past the calendar's end failed every held request with a 500.
    ("HOLD_TIMEOUT_SECONDS", "1e12", "HOLD_TIMEOUT_SECONDS must be at most 31536000 (a year), not 1e12"),
    # The value as written: `{value:g}` showed 31536001 as 3.1536e+07, which reads as the limit itself.
    ("HOOK_TIMEOUT_SECONDS", "31536001", "HOOK_TIMEOUT_SECONDS must be at most 31536000 (a year), not 31536001\n"),
    # Past threading.TIMEOUT_MAX: the log writer thread died of an OverflowError; nothing was logged, no stop ended.
    ("LOG_INGEST_IDLE_SECONDS", "1e20", "LOG_INGEST_IDLE_SECONDS must be at most 31536000 (a year), not 1e20"),
    ("UPSTREAM_READ_TIMEOUT", "nan", "UPSTREAM_READ_TIMEOUT must be a number, not 'nan'"),
    ("CACHE_MAX_BYTES", "1GB", "CACHE_MAX_BYTES must be an integer, not '1GB'"),  # was a bare ValueError
    ("FILE_STORAGE_URL", "bucket/prefix", "FILE_STORAGE_URL must look like s3://bucket/prefix, not 'bucket/prefix'"),
    ("HOLD_TIMEOUT_ACTION", "deny", "HOLD_TIMEOUT_ACTION must be approve, reject-400, reject-500 or content-policy, "
                                    "not 'deny'"),
    # `ALLOWED_HOSTS=$HOST` with HOST unset: taken, and the admin and /health answered 400 to every request.
    ("ALLOWED_HOSTS", "", "ALLOWED_HOSTS is set but names no host"),
    ("ALLOWED_HOSTS", " , ", "ALLOWED_HOSTS is set but names no host"),
])
def test_bad_setting_is_refused_by_name(tmp_path, name, value, message):
    done = _settings_run(tmp_path, **{name: value})
    assert done.returncode != 0
    assert f"ImproperlyConfigured: {message}" in done.stderr


@pytest.mark.parametrize("name,value,message", [
    ("DATABASE_URL", "postgresql+psycopg://gw:S3cretPw0rd@db:5432/gw",  # SQLAlchemy's spelling
     "DATABASE_URL is not a database URL Django knows (postgres://, sqlite:///...): 'postgresql+psycopg://gw:***@db"),
    ("DATABASE_URL", "postgres://gw:S3cretPw0rd@db:notaport/gw", "DATABASE_URL is not a database URL (ValueError"),
    ("CACHE_URL", "rediss+x://:S3cretPw0rd@cache:6379/0", "CACHE_URL is not a cache URL Django knows"),
    # An upstream behind a proxy that wants basic auth (Ollama behind nginx) is given its password in its URL.
    ("OPENAI_UPSTREAM_URL", "htps://gw:S3cretPw0rd@llm.internal", "OPENAI_UPSTREAM_URL must be an http:// or https://"),
    ("OPENAI_UPSTREAM_URL", "https://gw:S3cretPw0rd@llm.internal/v1", "OPENAI_UPSTREAM_URL must not end in /v1"),
    ("GATEWAY_PROVIDERS", "ollama=http://gw:S3cretPw0rd@llm.internal/v1", "GATEWAY_PROVIDERS entry 'ollama=http://gw:***@"),
    ("GATEWAY_PROVIDERS", "ollama=htp://gw:S3cretPw0rd@llm.internal", "GATEWAY_PROVIDERS entry 'ollama=htp://gw:***@"),
    ("GATEWAY_PROVIDERS", "ollama=http://gw:S3cretPw0rd@llm.internal?a=1", "GATEWAY_PROVIDERS entry 'ollama=http://gw:***@"),
    ("OPENAI_UPSTREAM_URL", "https://gw:S3cretPw0rd@llm.internal?a=1", "OPENAI_UPSTREAM_URL cannot hold ?"),
    ("FILE_STORAGE_URL", "s4://AKIAKEY:S3cretPw0rd@bucket/prefix", "FILE_STORAGE_URL must look like s3://bucket/prefix"),
    # Never used by boto3 (it signs with AWS keys), and quoted whole in every storage error it raised.
    ("AWS_S3_ENDPOINT_URL", "https://minio:S3cretPw0rd@s3.internal", "AWS_S3_ENDPOINT_URL must not hold a user or "
                                                                     "password"),
])
def test_a_refused_url_setting_is_named_without_its_password(tmp_path, name, value, message):
    # The refusal quoted the URL whole: the database's or Redis's password went to the console, the server's
    # journal, a CI log.
    done = _settings_run(tmp_path, **{name: value})
    assert done.returncode != 0 and f"ImproperlyConfigured: {message}" in done.stderr
    assert "S3cretPw0rd" not in done.stderr and "***@" in done.stderr


def test_list_settings_are_read_without_the_spaces_after_their_commas(tmp_path):
    """`ALLOWED_HOSTS=gw.example.com, localhost` refused localhost (' localhost' was the host allowed), and
    `MODEL_POLICY_ALLOW=gpt-4o, gpt-4o-mini` refused gpt-4o-mini."""
    names = ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "MODEL_POLICY_ALLOW", "GATEWAY_HOOKS_SKIP_ON_ERROR",
             "LOG_REDACT_HEADERS", "LOG_REDACT_QUERY_PARAMS", "REPLICATE_FILE_HOSTS")
    done = _settings_run(tmp_path, f"import json, gateway_project.settings as s; print(json.dumps([getattr(s, n) "
                                   f"for n in {names!r}]))", **{n: " a.example, b.example ,, " for n in names})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [["a.example", "b.example"]] * len(names)


def test_an_upstream_url_with_a_path_of_its_own_is_taken(tmp_path):
    """A base path that is not an API version (a corporate proxy's /openai) is still a usable upstream."""
    done = _settings_run(tmp_path, "import gateway_project.settings as s; print(s.UPSTREAM_URLS['openai'])",
                         OPENAI_UPSTREAM_URL="https://proxy.example/openai/v1x")
    assert done.stdout.strip() == "https://proxy.example/openai/v1x", done.stderr


@pytest.mark.parametrize("kind,message", [("folder", "cannot be read: Is a directory"), ("empty", "is empty")])
def test_a_secret_key_file_that_cannot_be_used_is_refused_by_name(tmp_path, kind, message):
    """A folder (or an unreadable file) where DATA_DIR/secret_key goes stopped the start with an OSError traceback."""
    key_file = tmp_path / "secret_key"
    key_file.mkdir() if kind == "folder" else key_file.write_text("\n")
    done = _settings_run(tmp_path, SECRET_KEY="")
    assert done.returncode != 0
    assert f"ImproperlyConfigured: SECRET_KEY is unset and {str(key_file)!r} {message}" in done.stderr


@pytest.mark.parametrize("name", ["DATA_DIR", "FILE_STORAGE_PATH", "DB_PATH"])
def test_a_folder_that_cannot_be_made_is_refused_by_name(tmp_path, name):
    """A data folder under a file (or on a missing or read-only disk) stopped the start with an OSError naming
    no setting; it names the setting and the folder."""
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "sub"
    done = _settings_run(tmp_path, **{"DATA_DIR": str(tmp_path / "data"),
                                      name: str(bad / "x.db" if name == "DB_PATH" else bad)})
    assert done.returncode != 0
    assert f"ImproperlyConfigured: {name}: cannot make the folder {str(bad)!r}: Not a directory" in done.stderr


def test_a_bad_setting_stops_uvicorn_with_workers_in_one_line(tmp_path):
    """With --workers (the Dockerfile's command), a worker that died of a bad setting was replaced by another
    that died the same way, each printing a 60-line traceback, forever: the gateway never started nor stopped.
    Now uvicorn stops, and the console says what is wrong in one line per worker."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), "STREAM_USAGE": "always"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", "0",
                             "--workers", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"uvicorn kept restarting its workers:\n{output[-2000:]}")
    # Dated and levelled as every console line of the gateway, for a server log that a supervisor keeps.
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z CRITICAL gateway_project\.asgi: ImproperlyConfigured: "
                     r"STREAM_USAGE must be 'off' or 'inject', not 'always'$", output, re.M), output
    assert "Traceback" not in output


def test_a_bad_setting_stops_a_command_in_one_line(tmp_path):
    """`manage.py migrate` (run before every start and upgrade) with a bad setting printed Django's traceback."""
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HOLD_TIMEOUT_ACTION": "deny"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run([sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("ImproperlyConfigured: HOLD_TIMEOUT_ACTION must be approve, reject-400, reject-500 or "
                           "content-policy, not 'deny'\n")


def test_a_command_on_a_database_not_migrated_says_so_in_one_line(tmp_path):
    """`gateway_key list` (or export_logs, hold status...) before `migrate` on a new machine printed Django's
    40-line traceback ending in "no such table"."""
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "DB_PATH"):
        env.pop(name, None)
    for args in (["gateway_key", "list"], ["hold", "status"]):
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("OperationalError: no such table: ")
        assert done.stderr.endswith("(is the database up, and migrated? python manage.py migrate)\n")


RECORDER = """
import json, sys
import environ
seen = {}
real = environ.Env.get_value
def record(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
    seen.setdefault(var, None if default is environ.Env.NOTSET else default)
    return real(self, var, cast=cast, default=default, parse_default=parse_default)
environ.Env.get_value = record
import gateway_project.settings
print(json.dumps(seen))
"""


def _settings_read(tmp_path) -> dict:
    """Every variable settings.py reads, with the default it passes, from a clean start."""
    env = {"PATH": os.environ.get("PATH", ""), "DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", RECORDER], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _example_lines() -> dict[str, tuple[str, bool]]:
    """NAME -> (value, commented) for each variable line of .env.example."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        commented = line.startswith("#")
        # django-environ keeps what follows a value on its line, comment included: only a commented-out
        # line may say more after its value.
        body = line.lstrip("# ").split("  #", 1)[0].strip() if commented else line.strip()
        match = re.fullmatch(r"([A-Z][A-Z0-9_]+)=(.*)", body)
        if match:
            out[match.group(1)] = (match.group(2).strip(), commented)
    return out


def _same(default, shown: str) -> bool:
    """Whether an .env.example value is the default settings.py uses."""
    if isinstance(default, bool):
        return shown == str(default).lower()
    if isinstance(default, (int, float)):
        return float(shown) == float(default)
    if isinstance(default, list):
        return shown == ",".join(default)
    if isinstance(default, str) and default.startswith(str(ROOT)):
        return (ROOT / shown).resolve() == Path(default).resolve()
    return shown == default


def test_every_setting_is_documented_with_its_true_default(tmp_path):
    read = _settings_read(tmp_path)
    assert {"DATA_DIR", "OPENAI_UPSTREAM_URL", "LOG_INGEST_IDLE_SECONDS"} <= set(read)  # the recorder saw settings.py
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", (ROOT / "docs" / "configuration.md").read_text(), re.M))
    example = _example_lines()
    assert sorted(set(read) - documented) == [], "read by settings.py, missing from docs/configuration.md"
    assert sorted(set(read) - set(example)) == [], "read by settings.py, missing from .env.example"
    assert sorted((documented | set(example)) - set(read)) == [], "documented but not read by settings.py"
    wrong = {name: (shown, read[name]) for name, (shown, commented) in example.items()
             if not commented and not _same(read[name], shown)}
    assert wrong == {}, ".env.example values that are not the defaults"
    commented = sorted(name for name, (_, c) in example.items() if c)
    # Only variables whose default is computed at start are shown commented out: DATA_DIR's is the project's
    # folder, which `./data` copied into .env would have meant only when the gateway starts there.
    assert commented == ["DATABASE_URL", "DATA_DIR", "DB_PATH", "FILE_STORAGE_PATH", "SECRET_KEY"]


@pytest.mark.parametrize("url, timeouts", [
    ("redis://127.0.0.1:6379/0", {"socket_timeout": 1, "socket_connect_timeout": 1}),
    ("redis://127.0.0.1:6379/0?socket_timeout=3", {"socket_timeout": 3, "socket_connect_timeout": 1}),
])
def test_a_redis_cache_url_gets_timeouts_a_hung_redis_cannot_outwait(tmp_path, url, timeouts):
    # redis-py's own: 5 s a read, no limit to connect; every limited request waited that long.
    done = _settings_run(tmp_path, "import json, gateway_project.settings as s; "
                                   "print(json.dumps(s.CACHES['default'].get('OPTIONS', {})))", CACHE_URL=url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == timeouts


@pytest.fixture(scope="module")
def seeded_env(tmp_path_factory) -> dict[str, str]:
    """The environment of manage.py commands on a log of 300 exchanges (about 1 MB exported)."""
    env = {**os.environ, "DATA_DIR": str(tmp_path_factory.mktemp("seeded"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    for args in (["migrate", "-v", "0"], ["seed_logs", "300", "--no-files"]):
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True,
                       timeout=120)
    return env


def test_a_command_whose_reader_goes_away_ends_quietly(seeded_env):
    # `export_logs | head`, `hold list | head -1`: a BrokenPipeError traceback otherwise.
    export = subprocess.Popen([sys.executable, "manage.py", "export_logs"], cwd=ROOT, env=seeded_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert export.stdout.read(10) == b'{"request"'  # a reader that has what it wanted, and goes
    export.stdout.close()
    _, stderr = export.communicate(timeout=120)
    assert export.returncode == 1 and b"Traceback" not in stderr and b"BrokenPipe" not in stderr, stderr


def test_a_command_stopped_with_ctrl_c_says_so_in_one_line(seeded_env):
    # A long export_logs stopped with Ctrl-C printed KeyboardInterrupt's traceback, then sqlite3's
    # "Exception ignored ... Cannot operate on a closed database" for the cursor it left open.
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &`) hands its children SIGINT
    # ignored, and Python then leaves it so.
    export = subprocess.Popen([sys.executable, "manage.py", "export_logs"], cwd=ROOT, env=seeded_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert export.stdout.read(10) == b'{"request"'  # under way (soon waiting on the full pipe)
    export.send_signal(signal.SIGINT)
    _, stderr = export.communicate(timeout=120)
    assert (export.returncode, stderr.decode()) == (130, "interrupted\n")
