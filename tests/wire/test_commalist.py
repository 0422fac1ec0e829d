"""Comma-separated values with a backslash escape: what a URL's filter or a key's list of models reads."""

import pytest
from hypothesis import given, strategies as st

from wire.commalist import commalist_read, commalist_write


@pytest.mark.parametrize(("text", "values"), [
    ("gpt-4o,o4-mini", ["gpt-4o", "o4-mini"]),  # as before the escape: no comma or backslash in a value
    (",,gpt-4o,,gpt-4o,", ["gpt-4o"]),
    ("org/model\\,v2", ["org/model,v2"]),
    ("a\\\\,b", ["a\\", "b"]),
    ("a\\b", ["a\\b"]),  # a backslash before anything else is itself
    ("a\\", ["a\\"]),
    ("", []),
])
def test_read(text, values):
    assert commalist_read(text) == values


@given(st.lists(st.text(alphabet=st.sampled_from("ab,\\ "), min_size=1), unique=True))
def test_what_is_written_reads_back(values):
    assert commalist_read(commalist_write(values)) == values
