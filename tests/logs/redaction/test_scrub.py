"""Masking inside bodies: the exchange's own credentials anywhere, and fields named like credentials."""

import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

import logs.redaction.scrub as scrub
from logs.redaction.redact import field_is_secret, header_is_secret, name_is_secret, param_is_secret, value_mask
from logs.redaction.scrub import Masked, Scrubber

KEY = "sk-" + "scrubTEST0123456789abcdefXYZ"


@pytest.mark.parametrize("name, secret", [
    ("api_key", True), ("apiKey", True), ("client_secret", True), ("accessToken", True), ("password", True),
    ("x-api-key", True), ("token", True), ("max_tokens", False), ("prompt_cache_key", False), ("model", False),
    ("key", False), ("signature", False), ("monkey", False), ("authorization", True), ("Authorization", True),
    ("proxy_authorization", True), ("author", False), ("authorized", False),
])
def test_fields_named_like_credentials(name, secret):
    assert field_is_secret(name) is secret


def test_token_is_content_in_answers():
    assert field_is_secret("token") and not field_is_secret("token", answer=True)
    assert field_is_secret("access_token", answer=True)


@pytest.mark.parametrize("name, secret", [
    ("X-Custom-Api-Key", True), ("X-Auth-Token", True), ("x-session-token", True), ("X-Client-Secret", True),
    ("x-ratelimit-remaining-tokens", False), ("idempotency-key", False), ("x-request-id", False),
    ("anthropic-version", False), ("content-type", False),
])
def test_headers_named_like_credentials(name, secret):
    assert header_is_secret(name) is secret and name_is_secret(name) is secret


def test_percent_encoded_parameter_names():
    assert param_is_secret("api%5Fkey") and param_is_secret("API_KEY") and not param_is_secret("alt")


def test_json_fields_masked_in_place_everything_else_byte_for_byte():
    text = '{"model":"m",  "api_key" : "secret-value-123456", "nested": {"clientSecret": "s2-abcdefghijklmn"}, ' \
           '"max_tokens": 5, "text": "the api_key is mine"}'
    masked = Masked()
    out = Scrubber([]).text(text, "application/json", answer=False, masked=masked)
    assert "secret-value-123456" not in out and "s2-abcdefghijklmn" not in out
    assert out.replace('"…3456"', '"secret-value-123456"').replace('"…klmn"', '"s2-abcdefghijklmn"') == text
    assert masked.fields == {"api_key": 1, "clientSecret": 1} and "api_key" in masked.note("request body")
    assert json.loads(out)["text"] == "the api_key is mine"


def test_a_credential_field_holding_a_list_or_object_has_its_keys_masked_not_a_tool_schema():
    text = json.dumps({"credentials": ["sk-live-abcdefghijklmnop"], "api_key": {"value": "sk-inner-abcdefghijklmnop"},
                       "tools": [{"parameters": {"properties": {"password": {"type": "string",
                                                                             "description": "the user's password"}}}}]})
    masked = Masked()
    out = Scrubber([]).text(text, "application/json", answer=False, masked=masked)
    assert "abcdefghijklmnop" not in out and masked.fields == {"credentials": 1, "api_key": 1}
    doc = json.loads(out)
    assert doc["credentials"] == ["sk-…mnop"] and doc["api_key"] == {"value": "sk-…mnop"}
    assert doc["tools"] == json.loads(text)["tools"]  # a schema's words are no credential


@pytest.mark.parametrize("text, field", [
    ('[1, {"deep": [{"x": {"to_ken": "abcdefghijklmnop"}}]}]', "to_ken"),  # in a list, separators in the name
    ('{"\\u0061pi_key": "abcdefghijklmnop"}', "api_key"),  # a JSON-escaped name
    ('{"a": 1, "password": "abcdefghijklmnop"', "password"),  # cut short: not JSON, still masked
])
def test_json_fields_found_wherever_they_hide(text, field):
    masked = Masked()
    out = Scrubber([]).text(text, "application/json", answer=False, masked=masked)
    assert "abcdefghijklmnop" not in out and "…mnop" in out and masked.fields == {field: 1}


def test_json_without_credential_fields_is_kept_as_sent():
    text = '{"model": "m", "messages": [{"role": "user", "content": "my password is long"}], "key": "k-0123456789"}'
    masked = Masked()
    assert Scrubber([]).text(text, "application/json", answer=False, masked=masked) is text and not masked


def test_logprobs_tokens_in_an_answer_stay():
    text = '{"choices": [{"logprobs": {"content": [{"token": "Hello", "logprob": -0.1}]}}]}'
    masked = Masked()
    assert Scrubber([]).text(text, "application/json", answer=True, masked=masked) == text and not masked


def test_form_fields_masked():
    masked = Masked()
    out = Scrubber([]).text("user=ann&password=hunter2hunter2&x=1", "application/x-www-form-urlencoded",
                            answer=False, masked=masked)
    assert out.startswith("user=ann&password=") and "hunter2hunter2" not in out and out.endswith("&x=1")


def test_files_lose_echoes_in_every_encoding_and_credential_named_multipart_fields(tmp_path):
    body = (b"--B\r\nContent-Disposition: form-data; name=\"api_key\"\r\n\r\n" + KEY.encode() +
            b"\r\n--B\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nhunter2-hunter2\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nurl-encoded: " +
            KEY.replace("-", "%2D").encode() + b" and " + json.dumps(KEY).encode() +
            b"\r\n--B--\r\n")
    path = tmp_path / "body"
    path.write_bytes(body)
    masked = Masked()
    assert Scrubber([KEY]).file(path, "multipart/form-data; boundary=B", answer=False, masked=masked)
    out = path.read_bytes()
    assert KEY.encode() not in out and b"hunter2-hunter2" not in out and b"url-encoded: " in out
    assert masked.echoes >= 2 and "password" in masked.fields
    assert out.count(value_mask(KEY).encode()) >= 2


def test_credential_named_multipart_parts_are_masked_with_a_filename_and_when_large(tmp_path):
    # curl -F password=@secret.txt sends the field with a filename; a large one cannot be read as text.
    big = b"s3cr3t" * (scrub.FIELD_MAX // 6 + 10)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"password\"; filename=\"secret.txt\"\r\n"
            b"Content-Type: text/plain\r\n\r\nhunter2-hunter2\r\n"
            b"--B\r\nContent-Disposition: form-data; name=\"api_key\"; filename=\"k\"\r\n\r\n" + big +
            b"\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nkept as sent"
            b"\r\n--B--\r\n")
    path = tmp_path / "body"
    path.write_bytes(body)
    masked = Masked()
    assert Scrubber([]).file(path, "multipart/form-data; boundary=B", answer=False, masked=masked)
    out = path.read_bytes()
    assert b"hunter2-hunter2" not in out and b"s3cr3t" not in out and b"kept as sent" in out
    assert masked.fields == {"password": 1, "api_key": 1}
    assert out.count(b'filename="secret.txt"') == 1 and out.endswith(b"\r\n--B--\r\n")


def test_a_clean_file_is_left_alone(tmp_path):
    path = tmp_path / "body"
    path.write_bytes(b"nothing to see" * 1000)
    assert not Scrubber([KEY]).file(path, "application/octet-stream", answer=True, masked=Masked())
    assert path.read_bytes() == b"nothing to see" * 1000 and not list(tmp_path.glob("*.scrub"))


@hsettings(deadline=None)
@given(before=st.binary(max_size=300), after=st.binary(max_size=300), chunk=st.integers(min_value=1, max_value=64),
       copies=st.integers(min_value=1, max_value=4))
def test_property_echoes_are_found_across_any_chunk_boundary(tmp_path_factory, before, after, chunk, copies):
    path = tmp_path_factory.mktemp("p") / "body"
    path.write_bytes(before + (KEY.encode() + after) * copies)
    masked, real = Masked(), scrub.CHUNK
    scrub.CHUNK = chunk  # small reads: the key falls across read boundaries
    try:
        Scrubber([KEY]).file(path, "application/octet-stream", answer=True, masked=masked)
    finally:
        scrub.CHUNK = real
    assert KEY.encode() not in path.read_bytes() and masked.echoes >= copies


def test_an_mcp_tools_authorization_is_masked_in_a_request_body():
    """OpenAI's Responses API carries an MCP server's token in the tool: `authorization` and its headers."""
    token = "mcp-oauth-" + "TOKEN0123456789abcdefghijklmnopqrstuv"
    body = json.dumps({"model": "gpt-4o-mini", "input": "hi", "tools": [{
        "type": "mcp", "server_label": "x", "server_url": "https://mcp.example.com/sse", "authorization": token,
        "headers": {"Authorization": f"Bearer {token}"}}]})
    masked = Scrubber([]).text(body, "application/json", answer=False, masked=Masked())
    assert token not in masked and masked.count(token[-4:]) == 2 and "https://mcp.example.com/sse" in masked
