"""Backtest: replay stored daily rows day by day with guardrail state carried across days."""

from __future__ import annotations

from datetime import date, timedelta

from services.rules_engine.backtest import render_backtest, render_money, replay, unbounded_rules
from services.rules_engine.model import Decision, Snapshot
from services.rules_engine.reach_history import ranges, reach_windows
from shared.settings import BudgetGuardrailSettings
from tests.fixtures.guide_rules import guide_rules
from tests.unit.test_rules_logic import adset, days

END = date(2026, 11, 10)


def day(n: int) -> date:
    """Day n of the 10-day history (1 = first)."""
    return END - timedelta(days=10 - n)


def history() -> Snapshot:
    entities = [adset("X", "Broke On Day 4"), adset("Y", "Launched Day 6"), adset("Z", "Steady")]
    x = [(4_000, 2_000, 2_000, 1)] * 3 + [(32_000, 9_000, 9_000, 0)] + [(4_000, 2_000, 2_000, 1)] * 6
    y = [(6_000, 3_000, 3_000, 4)] + [(12_000, 6_000, 6_000, 8)] * 4
    z = [(3_500, 2_000, 2_000, 1)] * 10
    rows = [*days("X", x, end=END), *days("Y", y, end=END), *days("Z", z, end=END)]
    return Snapshot(entities=entities, rows=rows)


def actions_by_day(decisions: list[Decision]) -> dict[tuple[date, str, str], tuple]:
    return {
        (d.evaluated_at.date(), d.rule, d.entity_id): tuple((a.kind, a.budget) for a in d.actions if a.kind != "notify")
        for d in decisions
        if d.outcome in ("acted", "would_act")
    }


def test_backtest_acts_on_the_expected_days() -> None:
    decisions = replay(guide_rules(), history(), days=10).decisions
    assert actions_by_day(decisions) == {
        # X spends $320 with no lead on day 4: budget protection pauses it; it stays paused afterwards,
        # so kill-underperformers (CPL $200 over days 2-4) never needs to act on it
        (day(4), "budget-protection", "X"): (("pause", None),),
        # Y launches on day 6 with 4 leads (too few to judge); from day 7 it is a winner, raised once a day,
        # 20 % at a time, the cooldown spacing the raises
        (day(7), "scale-winners", "Y"): (("change_budget", 12_000),),
        (day(8), "scale-winners", "Y"): (("change_budget", 14_400),),
        (day(9), "scale-winners", "Y"): (("change_budget", 17_280),),
        # day 10's raise to $207.36 is refused by the executor's hard limits (above 2x the $100 at the start,
        # and a 4th raise within a week): see the next test
    }
    insufficient = [d for d in decisions if d.reason == "insufficient_data"]
    assert [(d.evaluated_at.date(), d.entity_id) for d in insufficient] == [(day(6), "Y")]
    assert all(d.evaluated_at.hour == 23 and d.evaluated_at.minute == 59 for d in decisions)


def test_the_executors_hard_limits_apply_in_the_backtest() -> None:
    rules = guide_rules()
    report = replay(rules, history(), days=10)
    refused = [d for d in report.decisions if d.reason == "budget_limit"]
    assert [(d.evaluated_at.date(), d.rule, d.entity_id, d.outcome) for d in refused] == [
        (day(10), "scale-winners", "Y", "skipped")]
    assert "hard_max_budget" in refused[0].explanation
    assert "$207.36 is above the limit of $200.00 (2× the $100.00 at the start)" in refused[0].explanation
    assert report.end["Y"].daily_budget == 17_280  # the refused raise is not applied
    assert report.money[("scale-winners", "USD")].refused == {"hard_max_budget": 1}

    # Without them the raise goes through (the $75 -> $14,834 of issue 15 was such a replay)...
    unlimited = replay(rules, history(), days=10, hard_limits=False)
    assert unlimited.end["Y"].daily_budget == 20_736
    # ... and a week's raises are capped at max_increases_per_week even below the budget limit.
    few = replay(rules, history(), days=10, limits=BudgetGuardrailSettings.model_construct(
        max_multiple_of_first_seen=10, max_increases_per_week=2))
    assert few.end["Y"].daily_budget == 14_400
    assert few.money[("scale-winners", "USD")].refused == {"budget_increases_per_week": 2}


def test_the_backtest_shows_the_money_per_rule_and_in_total() -> None:
    rules = guide_rules()
    report = replay(rules, history(), days=10)
    scale = report.money[("scale-winners", "USD")]
    # +$20 after day 7 for 3 days, +$24 after day 8 for 2, +$28.80 after day 9 for 1
    assert (scale.raises, scale.budget_moved) == (3, 2_000 * 3 + 2_400 * 2 + 2_880 * 1)
    protection = report.money[("budget-protection", "USD")]
    # X paused on day 4: its stored spend on days 5..10 ($40 a day) would not have been spent
    assert (protection.pauses, protection.spend_stopped) == (1, 6 * 4_000)
    assert [(e.id, first, last) for e, first, last in report.budget_changes()] == [("Y", 10_000, 17_280)]

    warnings = unbounded_rules(rules)
    assert len(warnings) == 1
    assert warnings[0].startswith("rule scale-winners raises budgets by 20% each time it acts")
    text = render_money(report, warnings=warnings, unlimited=replay(rules, history(), days=10, hard_limits=False))
    lines = text.splitlines()
    assert lines[1] == "!!! BUDGETS CAN GROW WITHOUT BOUND"
    assert any("without the executor's hard limits this replay ends at $207.36/day (2.07× the start)" in line
               and "with them at $172.80" in line for line in lines)
    assert any(line.split()[:3] == ["scale-winners", "USD", "3"] and "+$136.80" in line for line in lines)
    assert any(line.split()[:2] == ["budget-protection", "USD"] and line.endswith("$240.00") for line in lines)
    assert any(line.split()[:2] == ["total", "USD"] and "+$136.80" in line and "$240.00" in line for line in lines)
    assert any(line.split() == ["Launched", "Day", "6", "$100.00", "$172.80", "1.73×"] for line in lines)
    assert any(line.split() == ["total", "USD", "$100.00", "$172.80", "1.73×"] for line in lines)
    capped = [r.model_copy(update={"guardrails": r.guardrails.model_copy(update={"max_budget": 150})})
              for r in rules]
    assert unbounded_rules(capped) == []
    assert "WITHOUT BOUND" not in render_money(replay(capped, history(), days=10))


def test_backtest_carries_cooldowns_across_days() -> None:
    rules = [
        r.model_copy(update={"guardrails": r.guardrails.model_copy(update={"cooldown_hours": 48})})
        for r in guide_rules()
    ]
    decisions = replay(rules, history(), days=10).decisions
    raises = sorted(d.evaluated_at.date() for d in decisions if d.rule == "scale-winners" and d.outcome == "acted")
    held = sorted(d.evaluated_at.date() for d in decisions if d.rule == "scale-winners" and d.reason == "cooldown")
    assert raises == [day(7), day(9)]
    assert held == [day(8), day(10)]


def test_dry_run_rules_are_simulated_and_rendered() -> None:
    rules = [r.model_copy(update={"dry_run": True}) for r in guide_rules()]
    decisions = replay(rules, history(), days=10).decisions
    assert {d.outcome for d in decisions if d.actions and d.reason != "budget_limit"} == {"would_act"}
    assert len([d for d in decisions if d.rule == "scale-winners" and d.outcome == "would_act"]) == 3
    text = render_backtest(decisions)
    lines = text.splitlines()
    assert lines[0].split() == ["day", "rule", "entity", "outcome", "action", "explanation"]
    assert any(
        line.startswith(day(7).isoformat()) and "scale-winners" in line and "budget $100.00->$120.00" in line
        for line in lines
    )
    assert "budget-protection: would_act x1" in text
    assert "scale-winners: skipped:insufficient_data x1" in text
    assert render_backtest(decisions, include_skipped=False).count("insufficient_data") == 1  # the summary only


def test_empty_history() -> None:
    assert replay(guide_rules(), Snapshot(entities=[], rows=[])).decisions == []


def test_the_backtest_judges_frequency_over_7_days_by_the_windows_reach() -> None:
    """Frequency over a window = impressions / Meta's deduplicated reach of that window on that day. Summed daily
    reach (3 a day here) never reaches the frequency cap's 4; the window's reach does from the day it is known."""
    rules = [r for r in guide_rules() if r.name == "frequency-cap"]
    history = Snapshot(entities=[adset("F", "Fatigued")], rows=days("F", [(3_000, 3_000, 1_000, 1)] * 10, end=END))
    assert [d for d in replay(rules, history, days=10).decisions if d.actions] == []
    # Meta: 7 days reached 4,000 people, not the 7,000 the daily numbers add up to (21,000 impressions: 5.25).
    reach = {day(n): {("F", "last_7_days"): 4_000} for n in (8, 9, 10)}
    decisions = [d for d in replay(rules, history, days=10, window_reach_by_day=reach).decisions if d.actions]
    assert [(d.evaluated_at.date(), d.entity_id, d.outcome) for d in decisions] == [(day(8), "F", "acted")]
    assert decisions[0].metrics["last_7_days"]["frequency"] == 21_000 / 4_000


def test_each_window_reach_range_is_asked_once_for_all_the_days_it_serves() -> None:
    rules = [r for r in guide_rules() if r.name == "frequency-cap"]
    assert reach_windows(rules) == {"last_7_days"}
    assert reach_windows([r for r in guide_rules() if r.name == "scale-winners"]) == set()
    wanted = ranges({"last_7_days", "previous_7_days"}, [day(9), day(10)])
    # day 10's previous_7_days (days 3..9) is day 9's last_7_days: one range, two uses
    assert wanted[(day(3), day(9))] == [(day(9), "last_7_days"), (day(10), "previous_7_days")]
    assert len(wanted) == 3


def test_the_account_ceiling_holds_raises_in_the_backtest() -> None:
    # X, Y and Z have $100 a day each; X is paused on day 4, so $200 stays active: a $205 ceiling leaves no room
    # for Y's +$20.
    limits = BudgetGuardrailSettings.model_construct(daily_ceiling=205.0)
    report = replay(guide_rules(), history(), days=10, limits=limits)
    assert report.end["Y"].daily_budget == 10_000
    held = [d for d in report.decisions if d.rule == "scale-winners" and d.reason == "ceiling"]
    assert [d.evaluated_at.date() for d in held] == [day(n) for n in (7, 8, 9, 10)]
    assert report.money[("scale-winners", "USD")].refused == {"daily_ceiling": 4}
    # By default the ceiling is 2x the active total at the start ($300 -> $600): no raise here reaches it.
    assert replay(guide_rules(), history(), days=10).end["Y"].daily_budget == 17_280
