"""The alarm rules, measured: what the shipped `zero-leads` and `frequency-cap` do for cost per signed case, and how
much money broken ad sets burn before they are caught, with each rule, without it, and with other thresholds; and
what `rebalance-qualified` (toward the campaign's own average cost per qualified lead), the notify-only
`refresh-reminder` (time for a new creative) and the `rotate-creatives` example (reserve creatives for tired ones)
add to the shipped set.

Every variant is the shipped default set (`services/rules_engine/default_rules/`, enabled rules) with one rule
replaced or removed, run on the same held-out seeds as the rest of the benchmark (common random numbers), and
compared with the shipped set itself (paired bootstrap interval). The zero-leads thresholds are run a second time
with an operator who checks every ad set a rule paused and restores a healthy one (``operator_unpauses_healthy``
= 1): a false alarm then costs a day and a learning phase instead of the ad set.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.rules_engine.rules import Rule
from tests.benchmarks.sim import policies as P
from tests.benchmarks.sim.account import Policy, RunResult
from tests.benchmarks.sim.params import SimParams
from tests.benchmarks.sim.score import cost_per_signed, paired, resamples, run_many, spend_share

SHIPPED = "shipped default rules"
ZERO_LEADS = "zero-leads"
FREQUENCY_CAP = "frequency-cap"
ROTATE = "rotate-creatives"
REBALANCE = "rebalance-qualified"
REMINDER = "refresh-reminder"


def variants() -> list[tuple[str, dict[str, Rule | None]]]:
    """(label, {rule name: its replacement, None = removed}) for each variant of the shipped set."""
    return [
        (SHIPPED, {}),
        (f"{ZERO_LEADS} with a 24 h cooldown", {ZERO_LEADS: P.zero_leads(400, cooldown_hours=24)}),
        (f"without {ZERO_LEADS}", {ZERO_LEADS: None}),
        (f"without {FREQUENCY_CAP}", {FREQUENCY_CAP: None}),
        ("without either", {ZERO_LEADS: None, FREQUENCY_CAP: None}),
        *((f"{ZERO_LEADS} ${spend} / 7 days", {ZERO_LEADS: P.zero_leads(spend)}) for spend in (300, 250, 200)),
        *((f"{FREQUENCY_CAP} {cap:g}, 168 h cooldown", {FREQUENCY_CAP: P.frequency_cap(cap, 168)})
          for cap in (3.0, 2.5)),
        (f"with {ROTATE}", {ROTATE: P.rotate_creatives()}),
        (f"without {REBALANCE}", {REBALANCE: None}),
        (f"without {REMINDER}", {REMINDER: None}),
        *((f"{REMINDER} at {f:g}", {REMINDER: P.refresh_reminder(f)}) for f in (2.0, 2.5, 3.0)
          if f != P.reminder_frequency(P.shipped_rules())),
    ]


def policies(only: str | None = None) -> list[Policy]:
    """Static budgets and the variants (``only``: those whose label starts with it, and the shipped set)."""
    out = [Policy("static")]
    for label, changes in variants():
        if only is not None and label != SHIPPED and not label.startswith(only):
            continue
        rules = P.shipped_rules()
        for name, by in changes.items():
            rules = P.replace_rule(rules, name, by)
        out.append(Policy(label, rules))
    return out


HEADER = ("policy", "cost/signed", "vs shipped [95% CI]", "vs static [95% CI]", "spend", "signed",
          "broken spend", "breaks caught", "new creatives", "actions")


def table(params: SimParams, results: dict[str, list[RunResult]]) -> list[tuple[str, ...]]:
    """One row per policy of ``results`` (as `policies()` names them); money per account and 60 days."""
    shipped, static = results[SHIPPED], results["static"]
    draws = resamples(len(shipped))
    rows = []
    for name, rs in results.items():
        n = len(rs)
        broken = sum(r.broken_spend for r in rs) / n
        rows.append((
            name, f"${cost_per_signed(rs):,.0f}", paired(rs, shipped, draws).text(), paired(rs, static, draws).text(),
            f"{spend_share(params, rs):.0%}", f"{sum(r.signed for r in rs) / n:.2f}",
            f"${broken:,.0f} ({broken / (params.daily_budget * params.acting_days):.1%})",
            f"{sum(r.caught for r in rs)} of {sum(r.breaks for r in rs)}",
            f"{sum(r.refreshes for r in rs) / n:.1f}", f"{sum(r.actions for r in rs) / n:.1f}",
        ))
    return rows



OPERATORS = (("the operator leaves a paused healthy ad set paused", None),
             ("the operator restores a paused healthy ad set", ZERO_LEADS))


def run(params: SimParams, seeds: Sequence[int]) -> list[tuple[str, list[tuple[str, ...]]]]:
    """The alarm tables: every variant, then the zero-leads thresholds with an operator who restores false alarms."""
    out = []
    for title, only in OPERATORS:
        p = params if only is None else params.with_(operator_unpauses_healthy=1.0)
        out.append((title, table(p, run_many(p, seeds, policies(only)))))
    return out
