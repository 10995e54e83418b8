"""Scoring many seeds: cost per signed case as a ratio of sums, paired differences with a bootstrap interval.

A seed with no signed case has no cost per signed case, so per-seed ratios are never averaged: the score of a
policy over seeds is total spend / total signed cases, and the paired difference of two policies run on the same
seeds (common random numbers) is bootstrapped by resampling seeds, both policies with the same resample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tests.benchmarks.sim.account import RunResult
from tests.benchmarks.sim.params import SimParams


def cost_per_signed(results: Sequence[RunResult]) -> float:
    signed = sum(r.signed for r in results)
    return sum(r.spend for r in results) / signed if signed else float("inf")


def spend_share(params: SimParams, results: Sequence[RunResult]) -> float:
    """What share of the budget (days 1..acting_days, every seed) was spent."""
    budget = params.daily_budget * params.acting_days * len(results)
    return sum(r.spend for r in results) / budget


@dataclass(frozen=True)
class Paired:
    """``policy`` vs ``baseline`` in cost per signed case: the relative difference and its 95 % interval."""

    diff: float  # -0.15 = 15 % cheaper per signed case than the baseline
    low: float
    high: float

    def text(self) -> str:
        return f"{self.diff:+.1%} [{self.low:+.1%}, {self.high:+.1%}]"

    @property
    def excludes_zero(self) -> bool:
        return self.high < 0 or self.low > 0


def resamples(n: int, count: int = 2000, seed: int = 19) -> list[list[int]]:
    """``count`` bootstrap resamples of ``n`` seed indices (the same for every comparison)."""
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(count)]


def _resampled(results: Sequence[RunResult], draws: list[list[int]]) -> list[float]:
    """Cost per signed case of ``results`` on each bootstrap resample of seeds (inf where it has no signed case)."""
    spend = [r.spend for r in results]
    signed = [r.signed for r in results]
    out = []
    for idx in draws:
        n = sum(map(signed.__getitem__, idx))
        out.append(sum(map(spend.__getitem__, idx)) / n if n else float("inf"))
    return out


def _percentiles(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    k = len(values)
    return values[int(0.025 * k)], values[min(k - 1, int(0.975 * k))]


def interval(results: Sequence[RunResult], draws: list[list[int]]) -> tuple[float, float]:
    """A percentile bootstrap 95 % interval over seeds of the cost per signed case of ``results``."""
    return _percentiles(_resampled(results, draws))


def paired(policy: Sequence[RunResult], baseline: Sequence[RunResult], draws: list[list[int]]) -> Paired:
    """The relative difference in cost per signed case of ``policy`` over ``baseline`` (same seeds, in order),
    with a percentile bootstrap 95 % interval over seeds (both on the same resamples)."""
    if len(policy) != len(baseline):
        raise ValueError("paired results need the same seeds")
    point = cost_per_signed(policy) / cost_per_signed(baseline) - 1
    diffs = [
        float("inf") if a == float("inf") else -1.0 if b == float("inf") else a / b - 1
        for a, b in zip(_resampled(policy, draws), _resampled(baseline, draws), strict=True)
    ]
    return Paired(point, *_percentiles(diffs))
