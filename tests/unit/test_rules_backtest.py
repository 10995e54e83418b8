"""Backtest: replay stored daily rows day by day with guardrail state carried across days."""

from __future__ import annotations

from datetime import date, timedelta

from services.rules_engine.backtest import backtest, render_backtest
from services.rules_engine.model import Decision, Snapshot
from services.rules_engine.rules import DEFAULT_RULES_DIR, load_rules
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
    decisions = backtest(load_rules(DEFAULT_RULES_DIR), history(), days=10)
    assert actions_by_day(decisions) == {
        # X spends $320 with no lead on day 4: budget protection pauses it; it stays paused afterwards,
        # so kill-underperformers (CPL $200 over days 2-4) never needs to act on it
        (day(4), "budget-protection", "X"): (("pause", None),),
        # Y launches on day 6 with 4 leads (too few to judge); from day 7 it is a winner, raised once a day,
        # 20 % at a time, the cooldown spacing the raises
        (day(7), "scale-winners", "Y"): (("change_budget", 12_000),),
        (day(8), "scale-winners", "Y"): (("change_budget", 14_400),),
        (day(9), "scale-winners", "Y"): (("change_budget", 17_280),),
        (day(10), "scale-winners", "Y"): (("change_budget", 20_736),),
    }
    insufficient = [d for d in decisions if d.reason == "insufficient_data"]
    assert [(d.evaluated_at.date(), d.entity_id) for d in insufficient] == [(day(6), "Y")]
    assert all(d.evaluated_at.hour == 23 and d.evaluated_at.minute == 59 for d in decisions)


def test_backtest_carries_cooldowns_across_days() -> None:
    rules = [
        r.model_copy(update={"guardrails": r.guardrails.model_copy(update={"cooldown_hours": 48})})
        for r in load_rules(DEFAULT_RULES_DIR)
    ]
    decisions = backtest(rules, history(), days=10)
    raises = sorted(d.evaluated_at.date() for d in decisions if d.rule == "scale-winners" and d.outcome == "acted")
    held = sorted(d.evaluated_at.date() for d in decisions if d.rule == "scale-winners" and d.reason == "cooldown")
    assert raises == [day(7), day(9)]
    assert held == [day(8), day(10)]


def test_dry_run_rules_are_simulated_and_rendered() -> None:
    rules = [r.model_copy(update={"dry_run": True}) for r in load_rules(DEFAULT_RULES_DIR)]
    decisions = backtest(rules, history(), days=10)
    assert {d.outcome for d in decisions if d.actions} == {"would_act"}
    assert len([d for d in decisions if d.rule == "scale-winners" and d.outcome == "would_act"]) == 4
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
    assert backtest(load_rules(DEFAULT_RULES_DIR), Snapshot(entities=[], rows=[])) == []
