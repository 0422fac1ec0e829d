"""Interleaved rounds: every target driven once per round in turn, and the paired ratios of the rounds.

Other work on a shared machine slows whole stretches of time down; driving each target once per
round, in turn, lets a slow stretch hit every target of a round alike. A ratio is then computed per
round (paired) and the median of those, with their range, is the figure.
"""

import dataclasses
import statistics
import uuid
from collections.abc import Callable

import httpx

from bench.load import AUTH, SCENARIOS, UNIQUE, Scenario, body_unique, wrk_run


@dataclasses.dataclass(frozen=True)
class Target:
    """One server as wrk drives it: its URL, headers added to every request, which scenarios."""

    name: str
    url: str
    headers: tuple[str, ...] = ()
    unique: bool = False  # every request's body differs from all earlier ones (a cache that is on misses)
    scenarios: frozenset[str] | None = None  # None: every scenario
    duration: float | None = None  # seconds per run; None: the run's --duration

    def drives(self, scenario: str) -> bool:
        """Whether this target takes part in the scenario."""
        return self.scenarios is None or scenario in self.scenarios

    def scenario(self, sc: Scenario) -> Scenario:
        """The scenario as this target is driven with it."""
        return dataclasses.replace(sc, headers=(*sc.headers, *self.headers),
                                   body=body_unique(sc.body) if self.unique else sc.body)


def rounds_drive(targets: list[Target], rounds: int, every_round: set[str], duration: float,
                 after_round: Callable[[], None]) -> dict[str, dict[str, list[dict]]]:
    """wrk runs, per scenario and target, one per round: the scenarios in every_round in each round,
    the others in the first only. Each (target, scenario) is warmed up for 1 s before its first run;
    after_round runs at the end of each round (the probes that are paired too)."""
    table: dict[str, dict[str, list[dict]]] = {sc.name: {} for sc in SCENARIOS}
    for n in range(rounds):
        for sc in SCENARIOS:
            if n and sc.name not in every_round:
                continue
            for t in targets:
                if not t.drives(sc.name):
                    continue
                driven = t.scenario(sc)
                if n == 0:
                    wrk_run(t.url, driven, 1)  # warm-up: connections, lazy imports, caches (a hit's answer)
                    answered_once(t.url, driven)
                table[sc.name].setdefault(t.name, []).append(wrk_run(t.url, driven, t.duration or duration))
        after_round()
        print(f"bench: round {n + 1} of {rounds} done", flush=True)
    return table


def answered_once(url: str, sc: Scenario) -> None:
    """Send one request of the scenario and wait for its answer. wrk leaves the requests in flight at the
    end of a run unanswered; a slow server (LiteLLM) is still working them off when the next run starts,
    and answers this one only after most of them."""
    headers = dict(h.split(": ", 1) for h in (AUTH, *sc.headers))
    body = sc.body.replace(UNIQUE, uuid.uuid4().hex.encode())
    httpx.post(url + sc.path, content=body, headers={"Content-Type": "application/json", **headers}, timeout=60)


def paired(numerators: list[float], denominators: list[float]) -> list[float]:
    """Ratio of each round's pair (rounds in the same order on both sides)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} rounds against {len(denominators)}: not paired")
    return [n / d if d else float("inf") for n, d in zip(numerators, denominators)]


@dataclasses.dataclass(frozen=True)
class Spread:
    """Median and range of a few per-round figures."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Spread":
        """The spread of the values (at least one)."""
        if not values:
            raise ValueError("no rounds")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, fmt: str = "{:.2f}", unit: str = "x") -> str:
        """'1.23x [1.10 .. 1.30]' (no range for a single figure)."""
        head = fmt.format(self.median) + unit
        if self.n == 1:
            return head
        return f"{head} [{fmt.format(self.low)} .. {fmt.format(self.high)}]"


def medians_print(got: dict[str, list[float]], per: str, places: int = 1) -> None:
    """Each kind's CPU time per `per` in every round, and its median: what the in-process benchmarks print."""
    width = max(map(len, got)) + 1
    for name, values in got.items():
        print(f"{name:{width}} CPU per {per}: median {statistics.median(values):.{places}f} us "
              f"(rounds: {', '.join(f'{v:.{places}f}' for v in values)})")
