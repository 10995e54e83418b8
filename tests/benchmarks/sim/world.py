"""The simulated world, pure: hidden ad-set quality, Meta's delivery (CPL, noise, diminishing returns, learning,
Conversions API feedback) and the CRM's outcome delays. No engine here; `account.py` steps it day by day.

Common random numbers: every random draw comes from a stream named by (seed, what, ad set, day), and a day's
draws are taken in a fixed order, so two policies run on the same seed see the same noise on the same ad set and
day, and their k-th lead of an ad set's day the same uniforms (inversion sampling keeps counts monotone in the
mean: more spend never means fewer leads on the same draw).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from statistics import NormalDist

from tests.benchmarks.sim.params import SimParams

_NORMAL = NormalDist()
_Z80 = _NORMAL.inv_cdf(0.8)


def stream(seed: int, *key: int | str) -> random.Random:
    """An independent random stream for ``key`` under ``seed`` (the same key gives the same draws, in every process:
    hashes of ints, strings excepted, are not salted, so strings are spelt out as their bytes)."""
    parts = [k if isinstance(k, int) else int.from_bytes(k.encode(), "big") for k in (seed, *key)]
    return random.Random(hash(tuple(parts)) & 0xFFFF_FFFF_FFFF_FFFF)


class Draws:
    """The uniforms of one seed's ad set x day streams, drawn once and shared by every policy run on the seed:
    ``day(adset, day)`` gives (noise, count, then four per lead: qualified, signed, qualified delay, signed
    delay), extended as a policy buys more leads."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: dict[tuple[int, int], tuple[random.Random, list[float]]] = {}

    def day(self, adset: int, day: int, needed: int) -> list[float]:
        key = (adset, day)
        found = self._cache.get(key)
        if found is None:
            rng = stream(self.seed, "day", adset, day)
            found = self._cache[key] = (rng, [])
        rng, values = found
        while len(values) < needed:
            values.extend(rng.random() for _ in range(max(needed - len(values), 42)))
        return values


@dataclass(frozen=True)
class AdSetTruth:
    """What Meta and the CRM know about an ad set and the rules never see.

    ``cpl`` is the CPL at the starting budget ``base_budget`` (USD a day) out of learning and without CAPI;
    ``qualified`` is lead->qualified, ``signed`` qualified->signed.
    """

    name: str
    cpl: float
    qualified: float
    signed: float
    base_budget: float
    broken_day: int | None = None  # the day its form, pixel or delivery breaks (None: never)
    frequency_growth: float = 0.0  # 7-day frequency gained per week of delivery at base_budget


    @property
    def lead_to_signed(self) -> float:
        return self.qualified * self.signed

    @property
    def cost_per_signed(self) -> float:
        """At the starting budget, out of learning, without CAPI."""
        return self.cpl / self.lead_to_signed


def between(low: float, high: float, w: float) -> float:
    """The point ``w`` (0..1) of the way from ``low`` to ``high``."""
    return low + (high - low) * w


def draw_account(params: SimParams, seed: int) -> list[AdSetTruth]:
    """4-6 ad sets whose CPL is anti-correlated with their quality (cheap leads that rarely sign, dear ones that
    sign more), the budget split evenly at the start; each may break on a day of its own, and its creative tires
    at a pace of its own (both from streams of their own: switching them off leaves every other draw as it was)."""
    rng = stream(seed, "account")
    n = rng.randint(params.adsets_min, params.adsets_max)
    base = params.daily_budget / n
    junk = rng.random() < params.junk_probability
    positions = [rng.random() for _ in range(n)]
    cheapest = min(range(n), key=positions.__getitem__)
    out = []
    for i, z in enumerate(positions):
        cpl = params.cpl_low * (params.cpl_high / params.cpl_low) ** z
        w = min(1.0, max(0.0, z + rng.gauss(0.0, params.quality_noise_sd)))
        qualified = between(params.qualified_low, params.qualified_high, w)
        signed = between(params.signed_low, params.signed_high, w)
        if junk and i == cheapest:
            qualified *= params.junk_factor
        fate = stream(seed, "fate", i)
        broken = fate.random() < params.broken_probability
        broken_day = fate.randint(1, params.acting_days)
        growth = between(params.frequency_growth_low, params.frequency_growth_high, fate.random())
        out.append(AdSetTruth(f"Ad set {i + 1}", cpl, qualified, signed, base, broken_day if broken else None,
                              growth))
    return out


def poisson(mean: float, u: float) -> int:
    """The Poisson(mean) count at quantile ``u`` (inversion: monotone in ``mean`` for a fixed ``u``)."""
    if mean <= 0:
        return 0
    term = math.exp(-mean)
    if term == 0.0:  # a mean in the hundreds: no small account gets there; the normal approximation is plenty
        return max(0, round(mean + math.sqrt(mean) * _NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))))
    k, cdf = 0, term
    while u > cdf and k < 10_000:
        k += 1
        term *= mean / k
        cdf += term
    return k


def qualified_delay(params: SimParams, u: float) -> int:
    """Days from the lead to its qualification: uniform over 0..qualified_delay_max_days."""
    return min(int(u * (params.qualified_delay_max_days + 1)), params.qualified_delay_max_days)


def signed_sigma(params: SimParams) -> float:
    """The lognormal's sigma that puts 80 % of signings within ``signed_delay_p80_days``."""
    return math.log(params.signed_delay_p80_days / params.signed_delay_median_days) / _Z80


def signed_delay(params: SimParams, u: float) -> int:
    """Days from the lead to its signing: lognormal (median, 80th percentile), rounded, at most the cut."""
    u = min(max(u, 1e-12), 1 - 1e-12)
    days = params.signed_delay_median_days * math.exp(signed_sigma(params) * _NORMAL.inv_cdf(u))
    return min(round(days), params.signed_delay_max_days)


def capi_progress(params: SimParams, day: int) -> float:
    """How far Meta's delivery has adapted to CRM feedback sent since day 1: 0 -> 1, linearly over the ramp."""
    if params.capi_ramp_days <= 0:
        return 1.0
    return min(1.0, max(0.0, (day - 1) / params.capi_ramp_days))


def fatigue_factor(params: SimParams, frequency: float) -> float:
    """CPL x this at a 7-day ``frequency``: 1 up to the onset, then rising linearly (creative fatigue)."""
    return 1 + params.fatigue_cpl_per_frequency * max(0.0, frequency - params.fatigue_onset_frequency)


def frequency_gain(truth: AdSetTruth, spend: float) -> float:
    """The 7-day frequency a day's ``spend`` adds: the ad set's weekly growth / 7, faster on a bigger budget (the
    same audience sees more impressions)."""
    return truth.frequency_growth / 7 * spend / truth.base_budget


def clicks(params: SimParams, seed: int, adset: int, day: int, impressions: int, frequency: float) -> int:
    """A day's link clicks: Poisson around impressions x CTR, the CTR falling as the creative tires (CTR / the
    fatigue factor: freeonlinecal's CTR -30 % as CPA rises 50 %). From a stream of its own: the leads' draws are
    the same with or without it."""
    mean = impressions * params.ctr_pct / 100 / fatigue_factor(params, frequency)
    return poisson(mean, stream(seed, "clicks", adset, day).random())


def expected_leads(
    params: SimParams, truth: AdSetTruth, spend: float, *, learning: bool, capi: float, noise: float = 0.0,
    frequency: float = 1.0, broken: bool = False,
) -> float:
    """Poisson mean of a day's leads: spend / CPL, the CPL raised by diminishing returns on budget above the
    starting one, the learning phase, creative fatigue at the 7-day ``frequency`` and the CAPI trade-off (fewer,
    better leads), times e^noise; nearly none while ``broken``."""
    if spend <= 0:
        return 0.0
    cpl = truth.cpl * (spend / truth.base_budget) ** params.diminishing_exponent
    if learning:
        cpl *= params.learning_cpl_factor
    cpl *= fatigue_factor(params, frequency)
    cpl *= between(1.0, params.capi_cpl_factor, capi)
    return spend / cpl * math.exp(noise) * (params.broken_lead_factor if broken else 1.0)


def qualified_rate(params: SimParams, truth: AdSetTruth, capi: float) -> float:
    """Lead->qualified with CAPI feedback at ``capi`` (0..1) of its full effect."""
    return min(0.95, truth.qualified * between(1.0, params.capi_qualified_lift, capi))


@dataclass(frozen=True, slots=True)
class Lead:
    """One lead's hidden fate: the day it was created, when (if ever) it qualifies and signs."""

    adset: int
    day: int
    qualified_day: int | None
    signed_day: int | None


def deliver(
    params: SimParams, draws: Draws, adset: int, truth: AdSetTruth, day: int, spend: float, *, learning: bool,
    capi: float, frequency: float = 1.0, broken: bool = False,
) -> list[Lead]:
    """The leads one ad set's ``spend`` buys on ``day``, each with its outcome and reveal days."""
    u = draws.day(adset, day, 2)
    noise = params.daily_noise_sd * _NORMAL.inv_cdf(min(max(u[0], 1e-12), 1 - 1e-12))
    mean = expected_leads(params, truth, spend, learning=learning, capi=capi, noise=noise, frequency=frequency,
                          broken=broken)
    count = poisson(mean, u[1])
    u = draws.day(adset, day, 2 + 4 * count)
    q = qualified_rate(params, truth, capi)
    leads = []
    for k in range(count):
        u_qualified, u_signed, u_qdelay, u_sdelay = u[2 + 4 * k: 6 + 4 * k]
        qualified_day = signed_day = None
        if u_qualified < q:
            qualified_day = day + qualified_delay(params, u_qdelay)
            if u_signed < truth.signed:
                signed_day = max(qualified_day, day + signed_delay(params, u_sdelay))
        leads.append(Lead(adset, day, qualified_day, signed_day))
    return leads


def oracle_split(params: SimParams, truths: list[AdSetTruth], *, cap: float = 2.0) -> list[float]:
    """The static daily budgets (USD) that maximise expected signed cases for the account's budget, knowing each
    ad set's true quality, no ad set above ``cap`` times its starting budget (the executor's hard limit).

    With CPL ~ budget^x, an ad set's signed cases grow as budget^(1-x) x quality/CPL, so the optimum gives ad set i
    a budget proportional to (lead_to_signed / CPL)^(1/x), water-filled under the cap.
    """
    total = params.daily_budget
    x = max(params.diminishing_exponent, 1e-6)
    weights = [(t.lead_to_signed / t.cpl) ** (1 / x) for t in truths]
    caps = [cap * t.base_budget for t in truths]
    budgets = [0.0] * len(truths)
    free = set(range(len(truths)))
    left = total
    while free and left > 1e-9:
        scale = left / sum(weights[i] for i in free)
        over = [i for i in free if weights[i] * scale > caps[i]]
        if not over:
            for i in free:
                budgets[i] = weights[i] * scale
            break
        for i in over:
            budgets[i] = caps[i]
            left -= caps[i]
            free.discard(i)
    return budgets
