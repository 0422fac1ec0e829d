"""Credential masking: headers, cookies, query strings, echoes in text, and console log lines."""

import dataclasses
import logging
import string
from urllib.parse import unquote

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from logs.records import RequestRecord, ResponseRecord, record_line, record_parse
from logs.redaction.console import record_redact, text_redact
from logs.redaction.redact import (KEY_SHAPES, SECRET_HEADERS, SHAPE_MARKS, credentials_collect, header_is_secret, headers_mask, headers_safe,
                                   key_fingerprint, path_mask, query_mask, shapes_mask, token_mask, value_mask)
from logs.redaction.scrub import line_scrub, record_scrub, secret_needles, text_scrub

KEY = "sk-" + "proj" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4" + "9f2c"
TOKEN_CHARS = string.ascii_letters + string.digits + "-_.~+/="


def test_bearer_keeps_scheme_kind_and_last_four():
    assert value_mask(f"Bearer {KEY}") == "Bearer sk-…9f2c"


@pytest.mark.parametrize("name", sorted(SECRET_HEADERS - {"cookie", "set-cookie"}))
def test_every_credential_header_is_masked(name):
    masked = dict(headers_mask([(name.title(), KEY), ("Content-Type", "application/json")]))
    assert masked[name.title()] == "sk-…9f2c"
    assert masked["Content-Type"] == "application/json"


def test_short_secret_reveals_nothing():
    assert value_mask("Bearer abc123") == "Bearer …"
    assert value_mask("abcdefghijk") == "…"


def test_unknown_first_word_is_not_taken_for_a_scheme():
    masked = value_mask("hunter2secretword rest-of-the-secret")
    assert "hunter2" not in masked and masked.endswith("cret")


def test_cookies_keep_names_and_attributes(settings):
    pairs = [("Cookie", f"theme=dark; session={KEY}"), ("Set-Cookie", f"sid={KEY}; Path=/; HttpOnly; Secure")]
    masked = dict(headers_mask(pairs))
    assert masked["Cookie"] == "theme=…; session=sk-…9f2c"
    assert masked["Set-Cookie"] == "sid=sk-…9f2c; Path=/; HttpOnly; Secure"


def test_log_redact_headers_extends_the_set(settings):
    opaque = "tenant" + "A1b2C3d4E5f6G7h8" + "9f2c"  # no key's shape: only its header's name can say it is secret
    assert dict(headers_mask([("x-tenant-ref", opaque)]))["x-tenant-ref"] == opaque  # asked (and kept) before...
    settings.LOG_REDACT_HEADERS = ["X-Tenant-Ref"]  # ...the setting changes: answered anew
    assert dict(headers_mask([("x-tenant-ref", opaque)]))["x-tenant-ref"] == "…9f2c"
    settings.LOG_REDACT_HEADERS = ["X-Tenant-Secret"]
    masked = dict(headers_mask([("x-tenant-secret", opaque), ("x-other", opaque)]))
    assert masked["x-tenant-secret"] == "…9f2c" and masked["x-other"] == opaque


def test_query_mask_touches_only_credentials(settings):
    q = f"a=1&key={KEY}&b=%20x+y&api_key={KEY}&empty="
    assert query_mask(q) == "a=1&key=sk-…9f2c&b=%20x+y&api_key=sk-…9f2c&empty="
    assert query_mask("tenant_ref=opaque-signature-9f2c") == "tenant_ref=opaque-signature-9f2c"
    settings.LOG_REDACT_QUERY_PARAMS = ["tenant_ref"]
    assert query_mask("tenant_ref=opaque-signature-9f2c") == "tenant_ref=…9f2c"
    settings.LOG_REDACT_QUERY_PARAMS = ["session"]
    assert query_mask(f"session={KEY}") == "session=sk-…9f2c"
    assert query_mask("") == "" and query_mask("novalue&&x") == "novalue&&x"


def test_query_mask_sees_through_percent_encoding():
    masked = query_mask("k%65y=" + KEY.replace("-", "%2D"))
    assert KEY not in masked and "2D" not in masked


SHAPED = {  # keys known by their shape, each as a client may percent-encode it in an ordinary parameter
    "gk-" + "ZHiiZ9y_n1-u1KRpkJf5h5JpGzHrO-N6VslCmN9j9WE": ("gk%2D", 3),
    KEY: ("sk%2d", 3),
    "r8_" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78": ("r8%5F", 3),
    "gsk_" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78": ("gsk%5F", 4),
    "AIza" + "Sy_Ab12Cd34Ef56Gh78Ij90Kl12Mn34": ("AIza", 4),
}


@pytest.mark.parametrize("key", list(SHAPED))
@pytest.mark.parametrize("encode", [
    lambda k: k,  # as is
    lambda k: SHAPED[k][0] + k[SHAPED[k][1]:],  # its separator encoded: gk%2D..., r8%5F...
    lambda k: "".join(f"%{ord(c):02X}" for c in k),  # every character encoded
    lambda k: SHAPED[k][0].replace("%", "%25") + k[SHAPED[k][1]:],  # encoded twice: sk%252D...
    lambda k: "my+key+is+" + k.replace("_", "%5F").replace("-", "%2D") + "%21",  # inside a sentence
], ids=["plain", "separator", "every-char", "twice", "in-text"])
def test_a_key_known_by_its_shape_in_any_query_parameter_is_masked(key, encode):
    """?note=gk%2D...: no parameter name says "secret", but the value is a key once decoded. The log row, the
    forwarded note, the pages and exports (logged=True) and the console all mask it; the rest stays as sent."""
    value = encode(key)
    query = f"a=1&note={value}&b=%20x+y"
    secret = key[4:-4]  # all but a kind prefix and the last 4
    for masked in (query_mask(query), query_mask(query, logged=True), text_redact(f'"GET /v1/x?{query} HTTP/1.1"')):
        assert secret not in unquote(masked) and secret not in masked, masked
        assert masked.count(key[-4:]) == 1 and masked.count("…") == 1, masked
        assert "a=1&note=" in masked and masked.endswith(("&b=%20x+y", '&b=%20x+y HTTP/1.1"')), masked
    assert query_mask(query_mask(query), logged=True) == query_mask(query)  # the logged form stays as it is
    assert key in credentials_collect([], query)  # an upstream echoing it gets it masked too


def test_every_key_shape_has_the_mark_that_finds_it_fast():
    for key in [*SHAPED, "hf_" + "Ab12Cd34Ef56Gh78Ij90Kl12", "xai-" + "Ab12Cd34Ef56Gh78Ij90Kl12"]:
        assert KEY_SHAPES.fullmatch(key) and sum(mark in key for mark in SHAPE_MARKS) >= 1, key


@pytest.mark.parametrize("key", list(SHAPED))
@pytest.mark.parametrize("name", ["X-Gateway-Meta-Note", "X-Gateway-User", "X-Upstream-Cred"])
def test_a_key_known_by_its_shape_in_any_header_is_masked(key, name):
    """A header whose name says nothing (a metadata tag, the end user, a custom one) holding a key: masked by its
    shape as in a query parameter, in the row, on pages and exports of rows logged before, and wherever the
    request's tags or an answer repeat it."""
    value = f"mine is {key}, thanks"
    for pairs in (headers_mask([(name, value)]), headers_safe([[name, value]])):
        assert pairs == [(name, f"mine is {token_mask(key)}, thanks")] and key[4:-4] not in token_mask(key)
    assert key in credentials_collect([(name, value)])


@pytest.mark.parametrize("key", list(SHAPED))
@pytest.mark.parametrize("encode", [
    lambda k: k,
    lambda k: SHAPED[k][0] + k[SHAPED[k][1]:],  # its separator encoded: /models/gk%2D...
    lambda k: "".join(f"%{ord(c):02X}" for c in k),
], ids=["plain", "separator", "every-char"])
def test_a_key_known_by_its_shape_in_the_path_is_masked(key, encode):
    """/v1/models/sk-...: a key in the path that is not the request's credential; the log's endpoint and the
    forwarded note mask it, the other segments stay as sent, and an answer echoing it gets it masked too."""
    path = f"/v1/a%20b/models/{encode(key)}:x+y/gemini-2.0-flash"
    masked = path_mask(path)
    assert key[4:-4] not in unquote(masked) and masked.count("…") == 1 and key[-4:] in masked, masked
    assert masked.startswith("/v1/a%20b/models/") and masked.endswith(":x+y/gemini-2.0-flash"), masked
    assert key in credentials_collect([], "", path)
    line = text_redact(f'"GET {path} HTTP/1.1" 200')  # uvicorn's access line, httpx's request line
    assert key[4:-4] not in unquote(line) and line.endswith(':x+y/gemini-2.0-flash HTTP/1.1" 200'), line


def test_a_path_without_a_key_is_kept_byte_for_byte():
    for path in ("/v1/chat/completions", "/v1beta/models/gemini-2.0-flash:streamGenerateContent",
                 "/v1/files/file-abc123/content", "/v1/a%2Fb/%E2%82%AC+x", "/v1/predictions/r8_short"):
        assert path_mask(path) == path


def test_a_key_known_by_its_shape_as_a_bare_query_piece_or_name_is_masked():
    key = "gk-" + "ZHiiZ9y_n1-u1KRpkJf5h5JpGzHrO-N6VslCmN9j9WE"
    for query in (key.replace("-", "%2D"), f"{key.replace('-', '%2D')}=1", f"x&{key}"):
        for masked in (query_mask(query), text_redact(f"GET /v1/models?{query} HTTP/1.1")):
            assert "n1-u1KRpkJf5h5JpGzHrO" not in masked and "N6VslCmN9j9WE"[-4:] in masked, masked


def test_an_ordinary_query_is_kept_byte_for_byte():
    """Values that only look a little like keys (too short, part of a word) and odd encodings stay as sent."""
    query = "note=sk%2Dshort&task=ask-me-anything-today-please&x=%E2%82%AC&y=a+b%2Bc&flag&=v&z=%zz"
    assert query_mask(query) == query and query_mask(query, logged=True) == query


def test_echoed_credentials_are_scrubbed_from_any_text():
    secrets = credentials_collect([("Authorization", f"Bearer {KEY}")], "key=AIzaSyD-0123456789abcdefghij")
    text = f'upstream said: bad key {KEY} (from Bearer {KEY}) url=?key=AIzaSyD-0123456789abcdefghij'
    clean = text_scrub(text, secrets)
    assert KEY not in clean and "AIzaSyD-0123456789abcdefghij" not in clean and "sk-…9f2c" in clean


def _scrub(record: RequestRecord | ResponseRecord, secrets: list[str]) -> bytes:
    """A record's journal line as an exchange submits it: its request's secrets masked."""
    return line_scrub(record_line(record), secrets, secret_needles(secrets))


def test_line_scrub_cleans_nested_records():
    secrets = credentials_collect([("x-api-key", KEY)])
    record = ResponseRecord(id="r1", body=f'{{"echo": "{KEY}"}}', headers=[["X-Echo", KEY]], status=3,
                            error=f"upstream said {KEY}")
    line = _scrub(record, secrets)
    assert KEY.encode() not in line
    scrubbed = record_parse(line)
    assert scrubbed.headers == [["X-Echo", "sk-…9f2c"]] and scrubbed.body == '{"echo": "sk-…9f2c"}'
    assert scrubbed == dataclasses.replace(record, body=scrubbed.body, headers=scrubbed.headers,
                                           error="upstream said sk-…9f2c")  # the rest untouched
    assert record_scrub({"a": KEY}, []) == {"a": KEY}  # nothing to scrub: untouched


def test_line_scrub_hands_on_a_clean_line_as_is_and_finds_escaped_keys():
    odd_key = 'k"ey-\\with-é-0123456789'  # quote, backslashes, non-ASCII: escaped in JSON
    secrets = credentials_collect([("x-api-key", KEY), ("api-key", odd_key)])
    needles = secret_needles(secrets)
    clean = record_line(RequestRecord(id="r1", body="hello", headers=[["x-api-key", "sk-…x"]]))
    assert line_scrub(clean, secrets, needles) is clean  # nothing to scrub: the line goes on unchanged
    # orjson writes é as is; a line json had to write (a lone surrogate) has it as \u00e9.
    for body in (f"echo {odd_key}!", f"echo {odd_key}! \ud800"):
        record = RequestRecord(id="r2", body=body)
        scrubbed = record_parse(line_scrub(record_line(record), secrets, needles))
        assert odd_key not in scrubbed.body and scrubbed.body.startswith("echo ") and scrubbed.body.endswith(body[-1])
        assert scrubbed == dataclasses.replace(record, body=scrubbed.body)


def test_fingerprint_is_keyed_and_short(settings):
    fp = key_fingerprint(KEY)
    assert len(fp) == 12 and fp == key_fingerprint(KEY) and fp not in KEY
    settings.SECRET_KEY = "another-secret-key-for-this-test-only-0123456789abcdef"
    assert key_fingerprint(KEY) != fp
    assert key_fingerprint("") == ""


@pytest.mark.parametrize("line", [
    f'127.0.0.1:5000 - "GET /v1/models?key={KEY}&x=1 HTTP/1.1" 200',
    f"HTTP Request: POST http://up/v1/x?api_key={KEY} \"HTTP/1.1 200 OK\"",
    f"headers={{'authorization': 'Bearer {KEY}'}}",
    f"Authorization: Bearer {KEY}",
    f"failed for {KEY}",
    f"X-Api-Key={KEY}",
])
def test_console_lines_are_scrubbed(line):
    assert KEY not in text_redact(line)


@pytest.mark.parametrize("key", [
    "gk-" + "ZHiiZ9y_n1-u1KRpkJf5h5JpGzHrO-N6VslCmN9j9WE",  # the gateway's own secret
    "r8_" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78",  # Replicate
    "gsk_" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78",  # Groq
    "xai-" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78",  # xAI
    "hf_" + "Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56Qr78",  # Hugging Face
])
def test_keys_known_by_their_shape_are_scrubbed_in_a_path_or_a_query_value(key):
    """uvicorn's access log prints the path and query: a key in either is masked by its shape alone."""
    for line in (f'127.0.0.1:5000 - "GET /v1/models/{key} HTTP/1.1" 200',
                 f'127.0.0.1:5000 - "POST /v1/chat/completions?x={key} HTTP/1.1" 401'):
        scrubbed = text_redact(line)
        assert key not in scrubbed and key[-4:] in scrubbed


@pytest.mark.parametrize("line,shown", [
    ('HTTP Request: GET http://gw:s3cret-pw@127.0.0.1:11434/v1/models "HTTP/1.1 200 OK"', "http://gw:***@127.0.0.1"),
    ("connecting to redis://s3cret-pw@cache:6379/0", "redis://***@cache"),
    ("HTTP Request: GET https://:s3cret-pw@llm.internal/v1/models", "https://:***@llm.internal"),
])
def test_a_urls_password_is_scrubbed_from_console_lines(line, shown):
    """GATEWAY_PROVIDERS=ollama=http://gw:password@host (a server behind basic auth): httpx's request log printed
    the upstream URL, password and all, on every request at LOG_LEVEL=DEBUG."""
    scrubbed = text_redact(line)
    assert "s3cret-pw" not in scrubbed and shown in scrubbed


def test_an_exceptions_class_is_not_taken_for_a_credentials_name():
    """`KeyError: 'messages'` (a hook's failure, a traceback's last line) names the missing key: kept."""
    assert text_redact("KeyError: 'messages'") == "KeyError: 'messages'"
    assert text_redact("TokenError: 'unterminated string'") == "TokenError: 'unterminated string'"
    assert text_redact(f"api_key: '{KEY}'") == "api_key: 'sk-…9f2c'"  # a name that is one still is


def test_console_records_keep_their_format_args():
    # uvicorn's access formatter unpacks record.args: they must stay a tuple of the same length.
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", f"/v1/models?key={KEY}", "1.1", 200), None)
    record_redact(record)
    assert len(record.args) == 5 and record.args[4] == 200
    assert KEY not in record.getMessage() and "key=sk-…9f2c" in record.getMessage()


def test_console_arguments_cannot_forge_log_lines():
    record = logging.LogRecord("django.request", logging.WARNING, __file__, 1, "Not Found: %s",
                               ("/v1/models\r\nINFO fake line",), None)
    record_redact(record)
    assert record.getMessage() == "Not Found: /v1/models\\r\\nINFO fake line"


def test_console_tracebacks_are_scrubbed(caplog):
    log = logging.getLogger("tests.redact")
    try:
        raise ValueError(f"bad url http://up/v1?key={KEY}")
    except ValueError:
        log.exception("while calling with %s", f"Bearer {KEY}")
    assert caplog.records and KEY not in caplog.text


# --- properties -------------------------------------------------------------------------

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=80)
schemes = st.sampled_from(["", "Bearer ", "Basic ", "bearer ", "Token "])


@hsettings(deadline=None)
@given(name=st.sampled_from(sorted(SECRET_HEADERS)), scheme=schemes, token=tokens,
       upper=st.booleans())
def test_property_no_credential_survives_header_masking(name, scheme, token, upper):
    header = name.upper() if upper else name
    value = f"session={token}" if "cookie" in name else scheme + token
    (_, masked), = headers_mask([(header, value)])
    revealed = masked.split("…")
    # At most a short kind prefix and the last 4 characters stay; never the whole secret.
    assert len(masked.replace(scheme.strip(), "", 1)) <= len("session=") + 1 + 4 + 4
    if len(token) >= 8:
        assert token not in masked
    assert len(revealed) == 2 and len(revealed[1].split(";")[0]) <= 4


@hsettings(deadline=None)
@given(pairs=st.lists(st.tuples(st.text(max_size=30), st.text(max_size=200)), max_size=8),
       query=st.text(max_size=200))
def test_property_masking_never_raises_on_any_input(pairs, query):
    masked = headers_mask(pairs)
    assert [k for k, _ in masked] == [k for k, _ in pairs]
    assert all(v == shapes_mask(pv) for (k, v), (_, pv) in zip(masked, pairs) if not header_is_secret(k))
    query_mask(query)
    text_redact(query)
    secrets = credentials_collect(pairs, query)
    for s in secrets:
        assert s not in text_scrub(f"x {s} y", secrets)


@hsettings(deadline=None)
@given(param=st.sampled_from(["key", "api_key", "token", "access_token", "KEY"]), token=tokens,
       before=st.text(alphabet=string.ascii_lowercase + "=&", max_size=20))
def test_property_no_credential_survives_query_masking(param, token, before):
    query = f"{before}&{param}={token}" if before else f"{param}={token}"
    masked = query_mask(query)
    assert f"{param}={token}" not in masked or len(token) < 1
    if len(token) >= 8:
        assert token not in masked.split("&")[-1]
