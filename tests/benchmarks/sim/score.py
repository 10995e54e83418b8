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


def cost_per_signed(results: Sequence[RunResult]) -> float:
    signed = sum(r.signed for r in results)
    return sum(r.spend for r in results) / signed if signed else float("inf")


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


def paired(policy: Sequence[RunResult], baseline: Sequence[RunResult], draws: list[list[int]]) -> Paired:
    """The relative difference in cost per signed case of ``policy`` over ``baseline`` (same seeds, in order),
    with a percentile bootstrap 95 % interval over seeds."""
    if len(policy) != len(baseline):
        raise ValueError("paired results need the same seeds")
    point = cost_per_signed(policy) / cost_per_signed(baseline) - 1
    a_spend = [r.spend for r in policy]
    a_signed = [r.signed for r in policy]
    b_spend = [r.spend for r in baseline]
    b_signed = [r.signed for r in baseline]
    diffs = []
    for idx in draws:
        sa = sum(map(a_signed.__getitem__, idx))
        sb = sum(map(b_signed.__getitem__, idx))
        if sa == 0 or sb == 0:
            diffs.append(float("inf") if sa == 0 else -1.0)
            continue
        ca = sum(map(a_spend.__getitem__, idx)) / sa
        cb = sum(map(b_spend.__getitem__, idx)) / sb
        diffs.append(ca / cb - 1)
    diffs.sort()
    k = len(diffs)
    return Paired(point, diffs[int(0.025 * k)], diffs[min(k - 1, int(0.975 * k))])
