"""Every parameter of the simulated account: one frozen model, each field with its default and where it comes from.

The sources are listed in docs/decision-quality.md (the table "Parameters"); a field's description names the source
in short. Override any of them from the benchmark's command line: ``--set daily_noise_sd=0.3``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SimParams(BaseModel):
    """The simulated account and the world around it (Meta's delivery, the CRM)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # --- horizon and budget
    acting_days: int = Field(default=60, ge=1, description="Days 1..N are delivered and scored (issue 19).")
    counting_days: int = Field(default=90, ge=1, description="Signed cases are counted through this day (issue 19).")
    monthly_budget: float = Field(default=7000.0, gt=0, description="USD a month; $7k = the first user (issue 19).")
    adsets_min: int = Field(default=4, ge=1, description="Ad sets per account, drawn uniformly (issue 19: 4-6).")
    adsets_max: int = Field(default=6, ge=1, description="See adsets_min.")

    # --- hidden quality (drawn per ad set)
    cpl_low: float = Field(default=32.0, gt=0, description="Cheapest ad sets' CPL at their starting budget, USD "
                                                          "(doc: cheap ad sets $30-60, quality ones $80-150; "
                                                          "32-160 gives the static account ~115 leads a month "
                                                          "at $7k, as the doc).")
    cpl_high: float = Field(default=160.0, gt=0, description="Dearest ad sets' CPL (doc: $80-150). CPL is drawn "
                                                            "log-uniform between the two.")
    qualified_low: float = Field(default=0.18, ge=0, le=1, description="Lead->qualified of the lowest-quality ad "
                                                                     "set (doc: 15-45 %).")
    qualified_high: float = Field(default=0.45, ge=0, le=1, description="Lead->qualified of the highest-quality ad "
                                                                      "set (doc: 15-45 %).")
    signed_low: float = Field(default=0.22, ge=0, le=1, description="Qualified->signed of the lowest-quality ad set "
                                                                  "(doc: 20-45 %).")
    signed_high: float = Field(default=0.32, ge=0, le=1, description="Qualified->signed of the highest-quality ad set "
                                                                   "(doc: 20-45 %; 0.32 keeps lead->signed within "
                                                                   "3-12 %, most 4-8 %, revenuescale.com, and the "
                                                                   "static account at ~17 signed cases per 60 days "
                                                                   "at $7k, the doc's 16-21).")
    quality_noise_sd: float = Field(default=0.25, ge=0, description="How loosely quality follows CPL: quality index "
                                                                  "= CPL position + N(0, sd), clipped to [0, 1] "
                                                                  "(ours; 0 = CPL fully anti-correlated with quality).")
    junk_probability: float = Field(default=0.25, ge=0, le=1, description="Chance that an account has one junk ad "
                                                                        "set: its cheapest one qualifies at "
                                                                        "junk_factor x (doc scenario 'one junk ad "
                                                                        "set'; ours).")
    junk_factor: float = Field(default=0.4, gt=0, le=1, description="See junk_probability.")

    # --- delivery
    daily_noise_sd: float = Field(default=0.2, ge=0, description="Leads ~ Poisson(spend/CPL x e^eps), eps ~ N(0, sd) "
                                                               "a day (doc; legal CPC swings ~19 %/month, "
                                                               "superads.ai).")
    diminishing_exponent: float = Field(default=0.3, ge=0, lt=1, description="CPL ~ (budget/starting budget)^x "
                                                                           "(doc).")
    cpm: float = Field(default=25.0, gt=0, description="USD per 1,000 impressions (ours; only feeds the rules' "
                                                      "impression guards).")
    daily_frequency: float = Field(default=1.3, ge=1, description="Impressions per person a day (ours; the "
                                                                 "frequency rule reads it).")
    ctr_pct: float = Field(default=1.0, ge=0, description="Clicks per 100 impressions (ours).")

    # --- learning phase
    learning_days: int = Field(default=7, ge=0, description="Learning lasts this many days (doc: 7 days or 50 "
                                                          "events).")
    learning_events: int = Field(default=50, ge=1, description="...or until this many leads (doc).")
    learning_cpl_factor: float = Field(default=1.2, ge=1, description="CPL x this while learning (doc: 1.2, "
                                                                    "sensitivity 1.0-1.4).")
    learning_step_pct: float = Field(default=20.0, gt=0, description="A budget step above this restarts learning "
                                                                   "(practitioner rule; Meta publishes none).")

    # --- CRM outcomes
    qualified_delay_max_days: int = Field(default=2, ge=0, description="Qualified 0..N days after the lead, uniform "
                                                                     "(doc: 0-2 days).")
    signed_delay_median_days: float = Field(default=3.0, gt=0, description="Signed after the lead: lognormal with "
                                                                         "this median (doc: ~3 days).")
    signed_delay_p80_days: float = Field(default=7.0, gt=0, description="...and 80 % within this (doc: ~80 % <= 7 "
                                                                      "days).")
    signed_delay_max_days: int = Field(default=30, ge=0, description="...cut at this (doc: tail 30 days).")

    # --- what the rules see
    insights_lag_days: int = Field(default=1, ge=1, description="At the start of day d the rules see insights "
                                                              "through day d - lag (issue 19: one day late).")
    crm_lag_days: int = Field(default=1, ge=0, description="CRM outcomes known by the end of day d - lag are seen "
                                                         "(ours: the CRM sync runs through the day).")

    # --- Conversions API feedback (CRM stages to Meta)
    capi_ramp_days: int = Field(default=21, ge=0, description="Days for the effect to reach its full size (doc: 2-4 "
                                                            "weeks of learning).")
    capi_qualified_lift: float = Field(default=1.35, ge=1, description="Lead->qualified x this at full effect (doc).")
    capi_cpl_factor: float = Field(default=1.12, ge=1, description="CPL x this at full effect (doc; with the lift: "
                                                                 "cost per qualified lead -17 %).")

    # --- identical for every policy
    max_actions_per_day: int = Field(default=2, ge=0, description="Mutating actions per day across the account, "
                                                                "for every policy (the action allowance; ours).")

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
