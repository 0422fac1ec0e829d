"""Which bytes a Range header asks for (RFC 9110 section 14)."""

import pytest

from wire.ranges import RangeNotSatisfiable, byte_range


@pytest.mark.parametrize(("header", "size", "wanted"), [
    ("bytes=0-99", 1000, (0, 100)),
    ("bytes=100-199", 1000, (100, 200)),
    ("bytes=999-999", 1000, (999, 1000)),
    ("bytes=900-5000", 1000, (900, 1000)),  # the end cut to the file's
    ("bytes=900-", 1000, (900, 1000)),
    ("bytes=0-", 1000, (0, 1000)),
    ("bytes=-100", 1000, (900, 1000)),
    ("bytes=-5000", 1000, (0, 1000)),  # more than there is: all of it
    (" bytes = 1 - 2 ", 1000, (1, 3)),
])
def test_satisfiable_ranges(header, size, wanted):
    assert byte_range(header, size) == wanted


@pytest.mark.parametrize("header", ["", "bytes=", "bytes=-", "items=0-10", "bytes=5-2", "bytes=0-1,5-6", "bytes=a-b",
                                    "bytes=0-1;x", "0-10"])
def test_headers_not_understood_ask_for_the_whole_file(header):
    assert byte_range(header, 1000) is None


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=1000-2000", 1000), ("bytes=-0", 1000),
                                              ("bytes=0-", 0), ("bytes=-10", 0)])
def test_ranges_past_the_end_are_unsatisfiable(header, size):
    with pytest.raises(RangeNotSatisfiable):
        byte_range(header, size)
