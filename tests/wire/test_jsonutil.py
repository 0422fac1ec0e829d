"""JSON in: what orjson refuses read by json, with what no UTF-8 writer takes made writable."""

import json

from wire.jsonutil import json_or_none, json_parse, text_valid


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
