"""The benchmark's rounds: paired ratios, their median and range, and bodies that never repeat."""

import json
import shutil

import pytest

from bench import load
from bench.rounds import Spread, Target, paired


def test_paired_ratios_pair_each_round_with_its_own():
    assert paired([100.0, 90.0, 120.0], [50.0, 60.0, 40.0]) == [2.0, 1.5, 3.0]
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])


def test_spread_is_the_median_and_range_of_the_rounds():
    s = Spread.of([1.5, 3.0, 2.0])
    assert (s.median, s.low, s.high, s.n) == (2.0, 1.5, 3.0, 3)
    assert s.text() == "2.00x [1.50 .. 3.00]"
    assert Spread.of([0.82]).text() == "0.82x"
    assert Spread.of([1.2, -0.4]).text("{:+.2f}", " ms") == "+0.40 ms [-0.40 .. +1.20]"
    with pytest.raises(ValueError):
        Spread.of([])


def test_a_target_with_unique_bodies_adds_its_headers_and_the_marker():
    chat = next(s for s in load.SCENARIOS if s.name == "chat c1")
    t = Target("gateway+controls", "http://x", ("X-Gateway-Key: gk-1", "X-Gateway-Cache: 3600"), unique=True)
    driven = t.scenario(chat)
    assert driven.headers == ("X-Gateway-Key: gk-1", "X-Gateway-Cache: 3600")
    assert json.loads(driven.body)["messages"][-1]["content"].endswith(" __N__")
    assert Target("hit", "http://x").scenario(chat).body == chat.body
    assert not Target("litellm", "http://x", scenarios=frozenset({"chat c64"})).drives("chat c1")


@pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk")
def test_wrk_sends_a_different_body_each_request_and_run(upstream):
    sc = Target("u", upstream.url, unique=True).scenario(next(s for s in load.SCENARIOS if s.name == "chat c1"))
    load.wrk_run(upstream.url, sc, 1)
    first = [r.body for r in upstream.received]
    load.wrk_run(upstream.url, sc, 1)
    second = [r.body for r in upstream.received][len(first):]
    assert len(first) > 10 and len(second) > 10
    assert len(set(first + second)) == len(first) + len(second)
    assert b"__N__" not in b"".join(first + second)
