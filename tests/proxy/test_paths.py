"""The path check: nothing escapes the provider prefix, whatever decodes it; the path goes upstream as sent."""

import posixpath
import string
from urllib.parse import unquote

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from proxy.paths import PathRefused, path_check, route_find
from providers import registry

ATTACKS = [
    "/v1/../admin",
    "/v1/./models",
    "/v1/%2e%2e/admin",
    "/v1/%2E%2E/admin",
    "/v1/.%2e/admin",
    "/v1/%252e%252e/admin",             # double-encoded
    "/v1/%25252e%25252e/admin",         # triple
    "/v1/%2525252525252e%2e/admin",     # more layers than any server decodes
    "/v1//models",
    "//evil.example/v1/models",
    "/v1/%2fadmin",
    "/v1/files%2F..%2Fadmin",
    "/v1/files%5c..%5cadmin",
    "/v1/files\\..\\admin",
    "/v1/..;/admin",                    # Tomcat-style path parameter
    "/v1/\uff0e\uff0e/admin",           # fullwidth dots
    "/v1/%c0%ae%c0%ae/admin",           # overlong UTF-8
    "/v1/%u002e%u002e/admin",           # IIS %u encoding
    "/v1/models%00.json",
    "/v1/models%0d%0aX-Injected:%201",
    "/v1/models%3Fkey=x",               # would change the upstream query
    "/v1/models%23frag",
    "http://evil.example/v1/models",
    "v1/models",
    "/v1/" + "a" * 9000,
]


@pytest.mark.parametrize("raw", ATTACKS)
def test_attacks_are_refused(raw):
    with pytest.raises(PathRefused):
        path_check(raw)


@pytest.mark.parametrize("raw,expected", [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/openai/v1/models", "/openai/v1/models"),
    ("/v1/files/file-abc123/content", "/v1/files/file-abc123/content"),
    ("/v1/models/ft%3Agpt-4o%3Aorg", "/v1/models/ft:gpt-4o:org"),
    ("/v1/models/meta-llama%2FLlama-3-8b", "/v1/models/meta-llama/Llama-3-8b"),  # a model id with a slash
    ("/v1/models/x%252541", "/v1/models/xA"),
    ("/v1/models/", "/v1/models/"),
    ("/v1/vector_stores/vs_1.2/files", "/v1/vector_stores/vs_1.2/files"),
])
def test_ordinary_paths_pass(raw, expected):
    assert path_check(raw) == expected


segment = st.text(alphabet=string.ascii_letters + string.digits + ".%/\\;:-_~" + "\uff0e", max_size=12)


@hsettings(max_examples=500, deadline=None)
@given(raw=st.one_of(st.text(max_size=60), st.lists(segment, max_size=6).map(lambda s: "/v1/" + "/".join(s))))
def test_property_result_never_escapes(raw):
    """Any input: PathRefused or a path in normal form that cannot climb out of its prefix."""
    try:
        path = path_check(raw)
    except PathRefused:
        return
    assert path.startswith("/") and "//" not in path and "\\" not in path
    assert not any(s in (".", "..") for s in path.split("/"))
    assert posixpath.normpath(path) == path.rstrip("/") or path == "/"
    match = registry().match(path)
    if raw.startswith("/v1/") and match:
        assert match[1].startswith("/v1/")


@pytest.mark.parametrize("raw,upstream", [
    ("/v1/models/meta-llama%2FLlama-3-8b", "/v1/models/meta-llama%2FLlama-3-8b"),
    ("/v1/models/x%252541", "/v1/models/x%252541"),
    ("/v1/models/a%2520b", "/v1/models/a%2520b"),
    ("/v1/models/low%2ahex", "/v1/models/low%2ahex"),
    ("/openai/v1/models/org%2Fm", "/v1/models/org%2Fm"),
    ("/anthropic/v1/models/claude%2Dx", "/v1/models/claude%2Dx"),
])
def test_path_goes_upstream_as_sent(raw, upstream):
    route = route_find(raw)
    assert (route.path, route.upstream_path) == (raw, upstream)


@pytest.mark.parametrize("raw", ["/%76%31/models", "/openai%2Fv1/models", "/%61nthropic/v1/messages",
                                 "/anthropic/v1%2Fmessages"])
def test_percent_encoded_prefix_is_refused(raw):
    with pytest.raises(PathRefused, match="must be sent as is"):
        route_find(raw)


@hsettings(max_examples=500, deadline=None)
@given(raw=st.lists(segment, max_size=6).map(lambda s: "/v1/" + "/".join(s)))
def test_property_what_goes_upstream_stays_under_its_prefix(raw):
    """However many times the upstream decodes what it gets, it reads a path under /v1/ without dot segments."""
    try:
        route = route_find(raw)
    except (PathRefused, LookupError):
        return
    layer = route.upstream_path
    for _ in range(8):
        assert layer.startswith("/v1/") and "//" not in layer and "\\" not in layer
        assert not any(s.strip() in (".", "..") for s in layer.split("/"))
        layer = unquote(layer)
