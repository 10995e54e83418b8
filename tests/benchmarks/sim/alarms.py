"""The alarm rules, measured: what the shipped `zero-leads` and `frequency-cap` do for cost per signed case, and how
much money broken ad sets burn before they are caught, with each rule, without it, and with other thresholds.

Every variant is the shipped default set (`services/rules_engine/default_rules/`, enabled rules) with one rule
replaced or removed, run on the same held-out seeds as the rest of the benchmark (common random numbers), and
compared with the shipped set itself (paired bootstrap interval).
"""

from __future__ import annotations

from services.rules_engine.rules import Rule
from tests.benchmarks.sim import policies as P
from tests.benchmarks.sim.account import Policy, RunResult
from tests.benchmarks.sim.params import SimParams
from tests.benchmarks.sim.score import cost_per_signed, paired, resamples, spend_share

SHIPPED = "shipped default rules"
ZERO_LEADS = "zero-leads"
FREQUENCY_CAP = "frequency-cap"


def variants() -> list[tuple[str, dict[str, Rule | None]]]:
    """(label, {rule name: its replacement, None = removed}) for each variant of the shipped set."""
    return [
        (SHIPPED, {}),
        (f"without {ZERO_LEADS}", {ZERO_LEADS: None}),
        (f"without {FREQUENCY_CAP}", {FREQUENCY_CAP: None}),
        ("without either", {ZERO_LEADS: None, FREQUENCY_CAP: None}),
        *((f"{ZERO_LEADS} ${spend} / 7 days", {ZERO_LEADS: P.zero_leads(spend)}) for spend in (300, 250, 200)),
        (f"{ZERO_LEADS} $150 / 7 days and >= 5x 30-day CPL", {ZERO_LEADS: P.zero_leads(150, cpl_multiple=5)}),
        *((f"{FREQUENCY_CAP} {cap:g}", {FREQUENCY_CAP: P.frequency_cap(cap)}) for cap in (3.0, 2.5)),
    ]


def policies() -> list[Policy]:
    out = [Policy("static")]
    for label, changes in variants():
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

