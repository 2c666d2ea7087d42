"""Shared harness for the benchmarks in ``bench/``.

Machines here are noisy, so absolute times mean little. Every benchmark therefore
measures **our path** and its **reference ceiling** (the same work done by the raw
library underneath, with nothing of ours in between) in the same run, interleaved,
repeated, and reports medians and their ratio. The headline is the last line::

    ratio=<our throughput / ceiling throughput>     (higher is better, 1.0 = no overhead)

``--json`` prints the same figures as one JSON document instead. ``--large`` makes the
workload bigger; by default every benchmark finishes in under a minute here.

A benchmark module defines ``build(args) -> list[Pair]`` and calls :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REPEATS = 5


@dataclass
class Pair:
    """One comparison: ``ours`` and ``ceiling`` each do ``units`` units of work.

    ``setup`` (optional) runs before every timed call, untimed, and its result is
    passed to the callable (fresh state for each repeat, e.g. an empty database).
    ``headline`` pairs are the ones whose ratios make the final ``ratio=`` line
    (their geometric mean); ``target`` is the issue's acceptance ratio, printed
    next to the measured one.
    """

    name: str
    units: int
    unit: str
    ours: Callable[[Any], Any]
    ceiling: Callable[[Any], Any]
    setup: Callable[[], Any] | None = None
    headline: bool = True
    target: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Result:
    name: str
    unit: str
    units: int
    ours_s: float
    ceiling_s: float
    target: float | None
    headline: bool
    notes: dict[str, Any]

    @property
    def ours_rate(self) -> float:
        return self.units / self.ours_s

    @property
    def ceiling_rate(self) -> float:
        return self.units / self.ceiling_s

    @property
    def ratio(self) -> float:
        return self.ceiling_s / self.ours_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "units": self.units,
            "ours_median_s": self.ours_s,
            "ceiling_median_s": self.ceiling_s,
            "ours_per_s": self.ours_rate,
            "ceiling_per_s": self.ceiling_rate,
            "ratio": self.ratio,
            "target": self.target,
            "meets_target": None if self.target is None else self.ratio >= self.target,
            "headline": self.headline,
            **({"notes": self.notes} if self.notes else {}),
        }


def _timed(fn: Callable[[Any], Any], setup: Callable[[], Any] | None) -> float:
    state = setup() if setup is not None else None
    start = time.perf_counter()
    fn(state)
    return time.perf_counter() - start


def run_pair(pair: Pair, repeats: int) -> Result:
    ours: list[float] = []
    ceiling: list[float] = []
    # Interleave so that a noisy moment hurts both sides alike.
    for i in range(repeats):
        if i % 2 == 0:
            ours.append(_timed(pair.ours, pair.setup))
            ceiling.append(_timed(pair.ceiling, pair.setup))
        else:
            ceiling.append(_timed(pair.ceiling, pair.setup))
            ours.append(_timed(pair.ours, pair.setup))
    return Result(pair.name, pair.unit, pair.units, statistics.median(ours),
                  statistics.median(ceiling), pair.target, pair.headline, pair.notes)


def headline_ratio(results: Sequence[Result]) -> float:
    chosen = [r.ratio for r in results if r.headline] or [r.ratio for r in results]
    return statistics.geometric_mean(chosen)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--large", action="store_true", help="a bigger workload (minutes)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed repeats per side")
    return p


def report(title: str, results: Sequence[Result], extra: dict[str, Any], as_json: bool) -> None:
    ratio = headline_ratio(results)
    if as_json:
        doc = {"benchmark": title, "results": [r.as_dict() for r in results],
               "extra": extra, "ratio": ratio}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    print(f"# {title}  (medians; ratio = ours / ceiling throughput, higher is better)")
    for r in results:
        target = "" if r.target is None else (
            f"  target>={r.target:.2f} {'OK' if r.ratio >= r.target else 'MISSED'}")
        print(f"{r.name:<40} ours {r.ours_rate:>12,.0f} {r.unit}/s   "
              f"ceiling {r.ceiling_rate:>12,.0f} {r.unit}/s   ratio {r.ratio:.3f}{target}")
        for key, value in r.notes.items():
            print(f"    {key}: {value}")
    for key, value in extra.items():
        print(f"{key}: {value}")
    print(f"ratio={ratio:.4f}")


def main(title: str, build: Callable[[argparse.Namespace], tuple[list[Pair], dict[str, Any]]],
         argv: list[str] | None = None, arg_parser: argparse.ArgumentParser | None = None) -> None:
    args = (arg_parser or parser(title)).parse_args(argv)
    pairs, extra = build(args)
    results = [run_pair(p, args.repeats) for p in pairs]
    report(title, results, extra, args.json)
