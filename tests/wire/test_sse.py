"""Server-sent events: framing across chunks, parsing, splitting and filtering (wire/sse.py)."""

import json

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from wire.jsonutil import json_or_none
from wire.sse import EventFilter, SSEEvent, SSEFramer, SSESplitter, event_parse, sse_blocks, sse_events


def _drop_marked(payload) -> bool:
    """The drop predicate of these tests: events whose data is {"drop": true, ...}."""
    return isinstance(payload, dict) and payload.get("drop") is True


def _ends_per_chunk(chunks: list[bytes]) -> list[list[int]]:
    framer = SSEFramer()
    return [framer.ends(chunk) for chunk in chunks]


def _split(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = SSESplitter()
    blocks = [block for chunk in chunks for block in splitter.feed(chunk)]
    return blocks, splitter.rest()


def _filtered(chunks: list[bytes], drop=_drop_marked) -> tuple[bytes, int]:
    f = EventFilter(drop)
    out = b"".join(f(chunk) for chunk in chunks) + f.rest()
    return out, f.dropped


# --- framing


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"])
def test_lf_crlf_and_cr_framing(eol):
    first = f"event: e{eol}data: a{eol}{eol}"
    text = first + f"data: b{eol}{eol}"
    raw = text.encode()
    assert SSEFramer().ends(raw) == [len(first), len(raw)]
    assert sse_events(text) == [SSEEvent("e", "a"), SSEEvent(None, "b")]
    assert sse_blocks(raw) == [first.encode(), f"data: b{eol}{eol}".encode()]


def test_mixed_line_ends_in_one_stream():
    raw = b"data: a\r\n\ndata: b\n\r\ndata: c\r\r"
    assert SSEFramer().ends(raw) == [10, 20, 29]
    assert [e.data for e in sse_events(raw)] == ["a", "b", "c"]


def test_crlf_pair_split_across_two_chunks():
    # Without memory of the CR, the LF opening the second chunk would read as a blank line.
    assert _ends_per_chunk([b"data: a\r", b"\n\r\n"]) == [[], [3]]
    # A CR that ends the blank line completes the event at once; its LF in the next chunk is no new line.
    assert _ends_per_chunk([b"data: a\r\n\r", b"\ndata: b\r", b"\n\r\n"]) == [[10], [], [3]]
    # Two CRs are two line ends, split or not.
    assert _ends_per_chunk([b"data: a\r", b"\r"]) == [[], [1]]
    # An empty chunk changes nothing.
    assert _ends_per_chunk([b"data: a\r", b"", b"\n\r\n"]) == [[], [], [3]]


def test_blank_lines_alone_end_no_event():
    assert SSEFramer().ends(b"\n\n\r\n\r\r\n") == []
    assert sse_events(b"\n\n\r\n") == []
    # Extra blank lines after an event belong to the next block, never make an event of their own.
    assert SSEFramer().ends(b"data: a\n\n\n\n\ndata: b\n\n") == [9, 21]
    assert sse_blocks(b"data: a\n\n\n\n\ndata: b\n\n") == [b"data: a\n\n", b"\n\n\ndata: b\n\n"]


def test_a_line_split_anywhere_is_one_line():
    assert _ends_per_chunk([b"da", b"ta: a", b"\n", b"\n"]) == [[], [], [], [1]]
    assert _ends_per_chunk([b"data: a\n", b"\n"]) == [[], [1]]


# --- comments, fields, multi-line data


def test_a_comment_only_block_is_an_event_so_indexes_match_offsets():
    raw = b":keepalive\n\ndata: a\n\n"
    assert SSEFramer().ends(raw) == [12, 21]
    assert sse_events(raw) == [SSEEvent(), SSEEvent(None, "a")]


def test_comment_lines_inside_an_event_are_ignored():
    assert sse_events(b"data: a\n: note\ndata: b\n\n") == [SSEEvent(None, "a\nb")]


def test_multi_line_data_and_field_forms():
    assert event_parse(b"data: a\ndata:b\ndata\ndata:  c\n\n") == SSEEvent(None, "a\nb\n\n c")
    assert event_parse(b"event: delta\r\nid: 42\r\nretry: 10\r\nfoo: bar\r\ndata: {}\r\n\r\n") == SSEEvent(
        "delta", "{}", "42")
    assert event_parse(b"event: x\n\n") == SSEEvent("x", None, None)  # no data line: data is None, not ""
    assert event_parse(b"data: \xff\xfe\n\n") == SSEEvent(None, "\ufffd\ufffd")  # invalid UTF-8 replaced


def test_sse_events_takes_text_or_bytes():
    text = "event: é\ndata: ünï\n\n"
    assert sse_events(text) == sse_events(text.encode()) == [SSEEvent("é", "ünï")]


def test_unterminated_tail_is_still_an_event():
    assert sse_events(b"data: a\n\ndata: b") == [SSEEvent(None, "a"), SSEEvent(None, "b")]
    assert sse_events(b"data: a\n\ndata: b\n") == [SSEEvent(None, "a"), SSEEvent(None, "b")]
    assert sse_blocks(b"data: a\n\ndata: b") == [b"data: a\n\n", b"data: b"]
    assert sse_blocks(b"data: a\n\n\n\n") == [b"data: a\n\n"]  # trailing blank lines are no event


# --- splitter and filter


def test_splitter_returns_whole_events_and_keeps_the_rest():
    splitter = SSESplitter()
    assert splitter.feed(b"data: a\n") == []
    assert splitter.feed(b"\ndata: b\n\ndata: ") == [b"data: a\n\n", b"data: b\n\n"]
    assert splitter.feed(b"c") == []
    assert splitter.rest() == b"data: c"
    assert splitter.rest() == b""  # rest() forgets what it returned


def test_filter_drops_picked_events_and_passes_the_rest_byte_for_byte():
    kept_a = b'data: {"n": 1}\n\n'
    dropped = b'data: {"drop": true, "usage": {}}\n\n'
    kept_b = b"data: [DONE]\n\n"
    stream = kept_a + dropped + kept_b
    assert _filtered([stream]) == (kept_a + kept_b, 1)
    assert _filtered([stream[i:i + 1] for i in range(len(stream))]) == (kept_a + kept_b, 1)


def test_filter_holds_an_event_until_it_ends_and_releases_an_unterminated_tail():
    f = EventFilter(_drop_marked)
    assert f(b'data: {"n": ') == b""
    assert f(b"1}\n\n") == b'data: {"n": 1}\n\n'
    assert f(b"data: cut") == b""
    assert f.rest() == b"data: cut"


def test_filter_keeps_blank_lines_that_precede_a_dropped_event():
    stream = b"data: a\n\n\n\ndata: {\"drop\": true}\n\ndata: b\n\n"
    assert _filtered([stream]) == (b"data: a\n\n\n\ndata: b\n\n", 1)


def test_filter_drops_the_whole_crlf_terminator_when_its_pair_is_split():
    kept_a = b'data: {"n": 1}\r\n\r\n'
    dropped = b'data: {"drop": true}\r\n\r\n'
    kept_b = b"data: [DONE]\r\n\r\n"
    stream = kept_a + dropped + kept_b
    cut = len(kept_a) + len(dropped) - 1  # between the CR and the LF ending the dropped event
    assert _filtered([stream[:cut], stream[cut:]]) == (kept_a + kept_b, 1)


# --- properties: any chunking of a stream reads the same


EOLS = (b"\n", b"\r\n", b"\r")
NAMES = st.sampled_from([b"message_start", b"content_block_delta", b"response.output_text.delta", b"ping",
                         "é".encode()])
DATA = st.one_of(
    st.fixed_dictionaries({"n": st.integers(0, 99), "text": st.text(max_size=8)}),
    st.fixed_dictionaries({"drop": st.just(True), "usage": st.fixed_dictionaries({"n": st.integers(0, 9)})}),
).map(lambda d: b"data: " + json.dumps(d, ensure_ascii=False).encode())


@st.composite
def sse_event_lines(draw) -> list[bytes]:
    """The lines of one event: a keep-alive comment, or optional event/id/comment lines and its data."""
    kind = draw(st.sampled_from(["data", "data", "data", "comment", "more"]))
    if kind == "comment":
        return [draw(st.sampled_from([b": keep-alive", b":", b": ping"]))]
    lines = []
    if draw(st.booleans()):
        lines.append(b"event: " + draw(NAMES))
    if draw(st.booleans()):
        lines.append(b"id: %d" % draw(st.integers(0, 999)))
    if draw(st.integers(0, 3)) == 0:
        lines.append(b": note")
    lines.append(draw(DATA | st.just(b"data: [DONE]")))
    if kind == "more":  # a second data line (the data is then no JSON), or a field the parser ignores
        lines.append(draw(st.sampled_from([b"data: line two", b"data:", b"retry: 100", b"foo: bar"])))
    return lines


@st.composite
def sse_streams(draw) -> bytes:
    """A realistic stream: events ended by a blank line (or a run), mostly one line end style, some mixed."""
    main = draw(st.sampled_from(EOLS))
    eol = st.sampled_from([main] * 5 + list(EOLS))
    out = []
    if draw(st.integers(0, 4)) == 0:
        out.append(draw(eol))  # stray blank line first
    for _ in range(draw(st.integers(0, 6))):
        out.extend(line + draw(eol) for line in draw(sse_event_lines()))
        out.append(b"".join(draw(st.lists(eol, min_size=1, max_size=3))))  # the blank line (or a run)
    tail = draw(st.sampled_from(["none", "none", "cut line", "cut event"]))
    if tail == "cut line":
        out.append(draw(DATA)[:draw(st.integers(1, 20))])
    elif tail == "cut event":
        out.extend(line + draw(eol) for line in draw(sse_event_lines()))
    return b"".join(out)


@st.composite
def chunked(draw) -> tuple[bytes, list[bytes]]:
    """A stream and a chunking of it (cuts anywhere, often between a CR and an LF, empty chunks too)."""
    stream = draw(sse_streams())
    points = st.integers(0, len(stream))
    after_cr = [i + 1 for i, b in enumerate(stream) if b == 0x0D]
    if after_cr:
        points = st.one_of(points, st.sampled_from(after_cr))
    cuts = sorted(draw(st.lists(points, max_size=10)))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def _completing_byte(stream: bytes, end: int) -> int:
    """Where the final line-end token of the blank line ending at `end` begins."""
    return end - 2 if stream[end - 2:end] == b"\r\n" else end - 1


def _chunk_of(chunks: list[bytes], pos: int) -> int:
    start = 0
    for i, chunk in enumerate(chunks):
        if start <= pos < start + len(chunk):
            return i
        start += len(chunk)
    raise AssertionError(f"byte {pos} is in no chunk")


@hsettings(deadline=None)
@given(case=chunked())
def test_property_any_chunking_gives_the_same_events_at_the_right_chunk(case):
    stream, chunks = case
    whole_ends = SSEFramer().ends(stream)
    expected_chunk = [_chunk_of(chunks, _completing_byte(stream, end)) for end in whole_ends]
    arrival = [i for i, ends in enumerate(_ends_per_chunk(chunks)) for _ in ends]
    assert arrival == expected_chunk

    blocks, rest = _split(chunks)
    assert len(blocks) == len(whole_ends)  # one arrival offset per complete event
    assert b"".join(blocks) + rest == stream
    parsed = [event_parse(b) for b in blocks] + ([event_parse(rest)] if rest.strip() else [])
    assert parsed == sse_events(stream)


@hsettings(deadline=None)
@given(case=chunked())
def test_property_filter_removes_exactly_the_dropped_events(case):
    stream, chunks = case
    whole_ends = SSEFramer().ends(stream)
    expected, dropped, start = b"", 0, 0
    for end in whole_ends:
        block = stream[start:end]
        if _drop_marked(json_or_none(event_parse(block).data)):
            dropped += 1
            expected += block[:len(block) - len(block.lstrip(b"\r\n"))]  # leading blank lines stay
        else:
            expected += block
        start = end
    expected += stream[start:]  # an unterminated tail is passed on when the upstream ends
    assert _filtered(chunks) == (expected, dropped)
