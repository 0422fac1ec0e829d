"""JSON in: what orjson refuses read by json, with what no UTF-8 writer takes made writable."""

import json

import pytest

from wire.jsonutil import json_ambiguity, json_long_number, json_or_none, json_parse, text_valid


def test_escaped_lone_surrogates_read_as_replacement_characters_anywhere():
    text = json.dumps({"k\ud800": ["v\udc00 x", {"deep": [["\udfff"]]}], "pair": "\U0001f600", "n": float("nan")})
    assert "\\ud800" in text  # json escapes it: valid JSON that orjson refuses
    assert json_parse(text)["k\ud800"][0] == "v\udc00 x"  # exact: the journal's records keep any text
    value = json_or_none(text)  # to read and show
    assert value["k\ufffd"] == ["v\ufffd x", {"deep": [["\ufffd"]]}]
    assert value["pair"] == "\U0001f600" and value["n"] != value["n"]  # a pair is one character; NaN kept
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # writable
    assert json_or_none(b'["\\uDC00"]') == ["\ufffd"] and json_or_none('"\\ud800"') == "\ufffd"  # bytes, upper hex


def test_text_valid_leaves_valid_text_alone():
    plain, emoji = "abc", "h\u00e9 \U0001f600"
    assert text_valid(plain) is plain and text_valid(emoji) is emoji
    assert text_valid("a\ud800b") == "a\ufffdb"


def test_json_read_otherwise_by_other_parsers_is_named():
    assert json_ambiguity('{"setup": {"model": "a", "model": "b"}}') == "repeats a key"
    assert json_ambiguity(b'{"model": "a", "mod\\u0065l": "b"}') == "repeats a key"  # the same key, escaped
    assert json_ambiguity('{"a": ' + "[" * 5000 + "]" * 5000 + "}") == "nests too deep to read"
    # Positive controls: the same key in two objects, and what is no JSON, read alike everywhere (or nowhere).
    assert json_ambiguity('{"items": [{"model": "a"}, {"model": "b"}], "model": "c"}') == ""
    assert json_ambiguity("not json") == "" and json_ambiguity('{"a": 1,}') == ""


@pytest.mark.parametrize("text, value", [
    ("18446744073709551616", 2**64), ("-9223372036854775809", -2**63 - 1), ("[123456789012345678901234567890]",
                                                                           [123456789012345678901234567890]),
    ("18446744073709551615", 2**64 - 1),
    ('{"a": 1.5, "b": "1234567890123456789012"}', {"a": 1.5, "b": "1234567890123456789012"}),
])
def test_json_parse_keeps_every_digit(text, value):
    for data in (text, text.encode()):
        parsed = json_parse(data)
        assert parsed == value and type(parsed) is type(value)
    assert json_long_number(text)


def test_json_long_number_is_false_for_short_numbers():
    assert not json_long_number(b'{"a": 123456789012345678, "b": "x" }') and not json_long_number("")
