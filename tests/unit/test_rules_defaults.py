"""The packaged default rules as shipped (services/rules_engine/default_rules/), chosen on the decision-quality
benchmark (docs/decision-quality.md): what they do, what they leave alone, and that none can grow a budget without
bound. The engine's mechanics are tested on the guide's rules (tests/fixtures/guide_rules.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from services.rules_engine.backtest import replay, unbounded_rules
from services.rules_engine.logic import evaluate
from services.rules_engine.model import MetricRow, Snapshot
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rules import DEFAULT_RULES_DIR, Rule
from tests.fixtures.guide_rules import guide_rules
from tests.unit.test_rules_logic import NOW, TODAY, acted, adset, by_outcome, days, fresh_state, guide_snapshot


def shipped() -> list[Rule]:
    return load_rules(DEFAULT_RULES_DIR)


def crm(entity_id: str, qualified_by_day: dict[int, int]) -> list[MetricRow]:
    """CRM rows (no delivery): qualified leads attributed to the lead's ad set and creation day (days ago)."""
    return [MetricRow(date=TODAY - timedelta(days=ago), adset_id=entity_id, qualified_leads=n)
            for ago, n in qualified_by_day.items()]


def crm_world() -> Snapshot:
    """14 days of four ad sets at $60 a day ($840 in the window), 1-2 leads a day:
    J: 20 leads, 1 qualified (5 %)            -> junk: cut-junk -20 %
    Q: 14 leads, 5 qualified ($168 each)      -> raise-qualified +20 %, capped at max_budget $250
    M: 21 leads, 3 qualified ($280 each)      -> nothing (neither junk nor cheap)
    N: 20 leads, no CRM data at all           -> nothing (without a CRM sync every ad set would look like junk)"""
    entities = [adset("J", "Cheap Junk", budget=10_000), adset("Q", "Qualifies Cheaply", budget=22_000),
                adset("M", "Middling", budget=6_000), adset("N", "No CRM Sync", budget=6_000)]
    leads = {"J": [2, 1] * 7, "Q": [1] * 14, "M": [2, 1, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2], "N": [2, 1] * 7}
    spend = {"J": 6_000, "Q": 6_000, "M": 6_000, "N": 6_000}
    rows = [r for e, n in leads.items() for r in days(e, [(spend[e], 2_000, 1_800, k) for k in n])]
    rows += crm("J", {9: 1}) + crm("Q", {2: 1, 4: 2, 8: 1, 12: 1}) + crm("M", {3: 1, 6: 1, 10: 1})
    return Snapshot(entities=entities, rows=rows)


def test_no_default_rule_can_grow_a_budget_without_bound() -> None:
    enabled = [r for r in shipped() if r.enabled]
    assert unbounded_rules(enabled) == []
    # ...while the guide's scale-winners, which ships disabled, would be flagged if it were switched on
    assert [w.split()[1] for w in unbounded_rules(guide_rules())] == ["scale-winners"]


def test_the_defaults_leave_the_guides_cpl_losers_and_winners_alone() -> None:
    """The guide's snapshot has no CRM data: CPL alone moves nothing; only broken and fatigued ad sets are paused."""
    decisions = evaluate(shipped(), guide_snapshot(), fresh_state(), NOW)
    assert acted(decisions) == {("frequency-cap", "D"), ("budget-protection", "E")}
    found = by_outcome(decisions)
    assert ("kill-underperformers", "A") not in found
    assert ("scale-winners", "B") not in found
    # the guide's rules on the same snapshot pause A and raise B
    assert {("kill-underperformers", "A"), ("scale-winners", "B")} <= acted(
        evaluate(guide_rules(), guide_snapshot(), fresh_state(), NOW))


def test_cut_junk_and_raise_qualified_act_on_crm_truth() -> None:
    found = by_outcome(evaluate(shipped(), crm_world(), fresh_state(), NOW))
    assert acted(list(found.values())) == {("cut-junk", "J"), ("raise-qualified", "Q")}
    junk = found["cut-junk", "J"]
    assert junk.actions[0].kind == "change_budget"
    assert junk.actions[0].budget == 8_000  # -20 %
    assert "qualified leads over the last 14 days were 1" in junk.explanation
    up = found["raise-qualified", "Q"]
    assert up.actions[0].budget == 25_000  # +20 % of $220 is $264: held at the rule's max_budget of $250
    assert "capped at the rule's maximum $250.00" in up.explanation
    assert up.metrics["last_14_days"]["cost_per_qualified_lead"] == 84_000 / 5
    # no CRM data for N: cut-junk waits for its guard instead of cutting an ad set it cannot judge
    assert found["cut-junk", "N"].reason == "insufficient_data"
    assert ("cut-junk", "M") not in acted(list(found.values()))


def test_a_cut_never_steps_further_than_the_executor_allows() -> None:
    """On $97.53 a -20 % cut rounded to the nearest cent ($78.02) is a 20.004 % step the executor refuses; the
    defaults' cuts round toward the current budget."""
    world = crm_world()
    entities = [replace(e, daily_budget=9_753) if e.id == "J" else e for e in world.entities]
    [junk] = [d for d in evaluate(shipped(), Snapshot(entities=entities, rows=world.rows), fresh_state(), NOW)
              if d.rule == "cut-junk" and d.outcome == "acted"]
    assert junk.actions[0].budget == 7_803
    assert (9_753 - 7_803) / 9_753 <= 0.20


def test_zero_leads_waits_for_400_dollars_over_7_days() -> None:
    """A dear but healthy ad set (CPL ~$160) often goes 3 days and $100 without a lead: the guide's threshold
    paused ~30 % of the simulated account's spend. $400 over 7 days with no lead is a broken ad set."""
    dear = Snapshot([adset("Z", "Dear But Healthy")],
                    days("Z", [(5_000, 2_000, 1_800, n) for n in (1, 0, 1, 0, 0, 0, 0)]))
    assert acted(evaluate(shipped(), dear, fresh_state(), NOW)) == set()
    broken = Snapshot([adset("Z", "Broken Form")], days("Z", [(6_000, 2_000, 1_800, 0)] * 7))
    [pause] = [d for d in evaluate(shipped(), broken, fresh_state(), NOW) if d.outcome == "acted"]
    assert (pause.rule, pause.actions[0].kind) == ("zero-leads", "pause")
    assert "spend over the last 7 days was $420.00 (≥ $400)" in pause.explanation


def test_the_raise_stops_at_max_budget_in_a_replay() -> None:
    """Replayed day after day, raise-qualified takes Q to its $250 cap and no further (cooldown 72 h)."""
    report = replay(shipped(), crm_world(), days=7)
    assert report.end["Q"].daily_budget == 25_000
    raises = [d.evaluated_at.date() for d in report.decisions if d.rule == "raise-qualified" and d.outcome == "acted"]
    assert len(raises) == 1
