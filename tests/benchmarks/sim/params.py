"""Every parameter of the simulated account: one frozen model, each field with its default and, in its docstring,
what it means and where it comes from ("doc" = shared/docs/decision-quality.md's published figures, "ours" = a
modelling choice with no published figure, to be challenged with ``--set``).

The field types carry the bounds (a share, a day count, a multiplier...), the docstrings the sources, and
``python -m tests.benchmarks.sim.params`` prints the table "Parameters" of docs/decision-quality.md from them (a unit
test holds the two equal). Override any of them from the benchmark's command line: ``--set daily_noise_sd=0.3``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Count = Annotated[int, Field(ge=1)]  # at least one
Days = Annotated[int, Field(ge=0)]  # a number of days, 0 allowed
Amount = Annotated[float, Field(gt=0)]  # a positive amount (USD, days, people...)
Share = Annotated[float, Field(ge=0, le=1)]  # a probability or a fraction
Factor = Annotated[float, Field(ge=1)]  # a multiplier that can only worsen (or, for a lift, improve) a rate
Spread = Annotated[float, Field(ge=0)]  # a standard deviation, a slope


class SimParams(BaseModel):
    """The simulated account and the world around it (Meta's delivery, the CRM, the operator)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    # --- horizon and budget
    acting_days: Count = 60
    """Days 1..N are delivered and scored (issue 19)."""
    counting_days: Count = 90
    """Signed cases are counted through this day (issue 19)."""
    monthly_budget: Amount = 7000.0
    """USD a month; $7k = the first user (issue 19); the benchmark also runs $30k. A month is 365/12 days: $7k =
    $230/day."""
    adsets_min: Count = 4
    """Ad sets per account, drawn uniformly (issue 19: 4-6)."""
    adsets_max: Count = 6
    """See adsets_min (issue 19). The budget starts evenly split."""

    # --- hidden quality (drawn per ad set)
    cpl_low: Amount = 32.0
    """Cheapest ad sets' CPL at their starting budget, USD (doc: cheap ad sets $30-60, quality ones $80-150; 32-160
    gives the static account ~115 leads a month at $7k, as the doc)."""
    cpl_high: Amount = 160.0
    """Dearest ad sets' CPL (doc: $80-150). CPL is drawn log-uniform between the two."""
    qualified_low: Share = 0.18
    """Lead->qualified of the lowest-quality ad set (doc: 15-45 %)."""
    qualified_high: Share = 0.45
    """Lead->qualified of the highest-quality ad set (doc: 15-45 %)."""
    signed_low: Share = 0.22
    """Qualified->signed of the lowest-quality ad set (doc: 20-45 %)."""
    signed_high: Share = 0.32
    """Qualified->signed of the highest-quality ad set (doc: 20-45 %; 0.32 keeps lead->signed within 3-12 %, most 4-8
    %, revenuescale.com, and the static account at ~17 signed cases per 60 days at $7k, the doc's 16-21)."""
    quality_noise_sd: Spread = 0.25
    """How loosely quality follows CPL: quality index = CPL position + N(0, sd), clipped to [0, 1] (ours; 0 = CPL fully
    anti-correlated with quality)."""
    junk_probability: Share = 0.25
    """Chance that an account has one junk ad set: its cheapest one qualifies at junk_factor x (doc scenario 'one junk
    ad set'; ours)."""
    junk_factor: Share = 0.4
    """See junk_probability (ours)."""

    # --- delivery
    daily_noise_sd: Spread = 0.2
    """Leads ~ Poisson(spend/CPL x e^eps), eps ~ N(0, sd) a day (doc; legal CPC swings ~19 %/month, superads.ai)."""
    diminishing_exponent: Share = 0.3
    """CPL ~ (budget/starting budget)^x (doc)."""
    cpm: Amount = 25.0
    """USD per 1,000 impressions (ours; only feeds the rules' impression guards)."""
    daily_frequency: Factor = 1.3
    """Impressions per person in one day's insights row (ours; the 7-day frequency the rules read is frequency_start
    and its growth below)."""
    ctr_pct: Spread = 1.0
    """Clicks per 100 impressions (ours)."""

    # --- learning phase
    learning_days: Days = 7
    """Learning lasts this many days (doc: 7 days or 50 events)."""
    learning_events: Count = 50
    """...or until this many leads (doc)."""
    learning_cpl_factor: Factor = 1.2
    """CPL x this while learning (doc: 1.2, sensitivity 1.0-1.4)."""
    learning_step_pct: Amount = 20.0
    """A budget step above this restarts learning, as do an unpause and a new creative (practitioner rule; Meta
    publishes none)."""

    # --- broken ad sets (a lead form, pixel or delivery failure)
    broken_probability: Share = 0.1
    """Chance that an ad set breaks during the acting days, on a day drawn uniformly over them (ours: no published
    rate; with 4-6 ad sets ~40 % of accounts have a break in 60 days)."""
    broken_lead_factor: Share = 0.05
    """Leads x this while broken: spend continues, leads drop to ~0 (ours; a partial failure, one form variant or
    browser, still lets a few through)."""
    broken_unnoticed_days: Days = 14
    """Days until the firm notices a broken ad set on its own and fixes it, without an alert (ours: a fifth of the
    leads missing is not obvious at 4 leads a day)."""

    # --- creative fatigue
    frequency_start: Factor = 1.3
    """7-day frequency of a fresh creative (practitioners: ~1.0 at launch, 1.8-2.0 after 2-4 weeks, spendcortex)."""
    frequency_growth_low: Spread = 0.1
    """7-day frequency gained per week of delivery at the starting budget, lowest ad set; drawn uniformly per ad set
    and scaled by budget / starting budget (spendcortex: ~0.25 a week, above 3 by week 8; small audiences faster)."""
    frequency_growth_high: Spread = 0.5
    """See frequency_growth_low (highest ad set: past the frequency cap of 4 in ~5 weeks)."""
    fatigue_onset_frequency: Factor = 2.0
    """CPL starts rising once the 7-day frequency passes this (spendcortex: CTR falls once frequency crosses 2;
    franchiseninja: > 2.5 for cold audiences)."""
    fatigue_cpl_per_frequency: Spread = 0.3
    """CPL x (1 + this x (frequency - onset)) past the onset (freeonlinecal: frequency 2 -> 4.5, CTR -30 %, CPA +50 %;
    spendcortex: CTR -30-50 % above 3)."""
    refresh_every_days: Days = 42
    """The firm refreshes a creative on its own once it is this old, 0 = never (ours; practitioners advise every 7-21
    days, thematchbox; a small firm does it less often). A refresh resets the frequency and restarts learning."""
    reserve_creatives: Days = 2
    """Paused reserve creatives ([reserve] in their names) each ad set has ready from the start, for the engine's
    `rotate_creative` (ours: what leadwire's rotation asks the operator to prepare; a policy without rotation never
    uses them)."""
    operator_response_days: Days = 1
    """Days after leadwire announces a pause until the operator looks: a broken ad set is fixed, a fatigued one
    (frequency past the onset) gets a new creative, and either is unpaused (ours)."""
    operator_heeds_reminders: Share = 1.0
    """Chance that the operator, reading a notify-only rule's alert about an ad set (e.g. "time for a new
    creative"), acts on it ``operator_response_days`` later: a fatigued ad set (frequency past the onset) gets a new
    creative; nothing else changes (ours; 1 = every reminder read and heeded)."""
    operator_unpauses_healthy: Share = 0.0
    """Chance that the operator, finding nothing broken or tired in an ad set a rule paused, unpauses it (ours; 0 =
    trusts the rule and leaves it paused, the conservative case for the rules; 1 = always checks and restores)."""

    # --- CRM outcomes
    qualified_delay_max_days: Days = 2
    """Qualified 0..N days after the lead, uniform (doc: 0-2 days)."""
    signed_delay_median_days: Amount = 3.0
    """Signed after the lead: lognormal with this median (doc: ~3 days)."""
    signed_delay_p80_days: Amount = 7.0
    """...and 80 % within this (doc: ~80 % <= 7 days)."""
    signed_delay_max_days: Days = 30
    """...cut at this (doc: tail 30 days)."""

    # --- what the rules see
    insights_lag_days: Count = 1
    """At the start of day d the rules see insights through day d - lag (issue 19: one day late)."""
    crm_lag_days: Days = 1
    """CRM outcomes known by the end of day d - lag are seen (ours: the CRM sync runs through the day)."""

    # --- Conversions API feedback (CRM stages to Meta)
    capi_ramp_days: Days = 21
    """Days for the effect to reach its full size (doc: 2-4 weeks of learning)."""
    capi_qualified_lift: Factor = 1.35
    """Lead->qualified x this at full effect (doc)."""
    capi_cpl_factor: Factor = 1.12
    """CPL x this at full effect (doc; with the lift: cost per qualified lead -17 %)."""

    # --- identical for every policy
    max_actions_per_day: Days = 2
    """Mutating actions per day across the account, for every policy (the action allowance; ours)."""

    @property
    def daily_budget(self) -> float:
        """The account's daily budget in USD: a month is 365/12 days."""
        return self.monthly_budget * 12 / 365

    def with_(self, **changes: Any) -> SimParams:
        return self.model_validate({**self.model_dump(), **changes})


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["name=value", ...]`` from the command line into field values (typed by the model)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in SimParams.model_fields:
            raise SystemExit(f"--set {pair!r}: expected name=value with a name of SimParams")
        out[name] = value
    return out


def markdown_table() -> str:
    """The table "Parameters" of docs/decision-quality.md, from the model."""
    rows = ["| parameter | default | meaning and source |", "|---|---|---|"]
    for name, field in SimParams.model_fields.items():
        rows.append(f"| `{name}` | {field.default} | {' '.join((field.description or '').split())} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
