"""Running and scoring many seeds: cost per signed case as a ratio of sums, paired differences with a bootstrap
interval.

`run_many` runs seeds in ``WORKERS`` processes (the benchmark sets it from ``--jobs``): a seed's random numbers are
keyed by the seed alone, so the results are the same in any process and any order.

A seed with no signed case has no cost per signed case, so per-seed ratios are never averaged: the score of a
policy over seeds is total spend / total signed cases, and the paired difference of two policies run on the same
seeds (common random numbers) is bootstrapped by resampling seeds, both policies with the same resample.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from tests.benchmarks.sim import world
from tests.benchmarks.sim.account import Policy, RunResult, simulate
from tests.benchmarks.sim.params import SimParams

WORKERS = 1


def _run_seeds(params: SimParams, seeds: Sequence[int], policies: Sequence[Policy]) -> dict[str, list[RunResult]]:
    out: dict[str, list[RunResult]] = {p.name: [] for p in policies}
    for seed in seeds:
        draws = world.Draws(seed)
        for policy in policies:
            out[policy.name].append(simulate(params, seed, policy, draws))
    return out


def run_many(params: SimParams, seeds: Sequence[int], policies: Sequence[Policy]) -> dict[str, list[RunResult]]:
    """Every policy on every seed (results in seed order); a seed's random numbers are drawn once and shared by its
    policies."""
    seeds = list(seeds)
    if WORKERS <= 1 or len(seeds) < 2 * WORKERS:
        return _run_seeds(params, seeds, policies)
    chunks = [seeds[k::WORKERS] for k in range(WORKERS)]  # interleaved: every process gets early and late seeds
    with ProcessPoolExecutor(WORKERS) as pool:
        parts = list(pool.map(_run_seeds, [params] * WORKERS, chunks, [policies] * WORKERS))
    where = {seed: (k, i) for k, chunk in enumerate(chunks) for i, seed in enumerate(chunk)}
    return {p.name: [parts[where[s][0]][p.name][where[s][1]] for s in seeds] for p in policies}


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
