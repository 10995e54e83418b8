"""Budget rebalancing (issue 20): the pure allocation (total kept to the cent, ≤ 20 % steps, minimum data,
shrinkage, limits), the rule over the engine's views (CBO, hard limits, shadow mode) and the command it becomes."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import timedelta

import pytest
from pydantic import ValidationError

from contracts.commands import BudgetMove, RebalanceBudgetsCommand
from services.rules_engine.backtest import replay
from services.rules_engine.logic import evaluate, record_actions
from services.rules_engine.messages import to_command
from services.rules_engine.model import ActionRecord, BudgetLimit, Decision, EngineState, Entity, MetricRow, Snapshot
from services.rules_engine.rebalance import Holder, Params, allocate, approval_scope, shrunk_cost
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rules import DEFAULT_RULES_DIR, Rule
from services.rules_engine.snapshot import segments
from tests.unit.test_rules_logic import ACCOUNT, NOW, TODAY, adset, fresh_state

STEP = 0.20


def holder(object_id: str, budget: int, spend: int, events: int, *, step: float = STEP) -> Holder:
    return Holder(object_id, budget, spend, events, floor=-(-int(budget * (1 - step) * 100) // 100),
                  ceiling=int(budget * (1 + step)))


# ---------------------------------------------------------------------------------------------------------------
# The pure allocation


def test_money_moves_from_the_dear_to_the_cheap_and_the_total_is_kept_to_the_cent() -> None:
    p = Params(target=18_000, min_events=3, prior_events=3)
    dear = holder("A", 10_001, spend=140_000, events=4)  # $350 per qualified lead
    cheap = holder("B", 6_003, spend=84_000, events=10)  # $84
    middling = holder("C", 7_777, spend=100_000, events=6)  # $167: within 10 % of $180 after shrinkage
    result = allocate([dear, cheap, middling], p)
    assert result.moved > 0
    assert set(result.budgets) == {"A", "B"}
    assert result.budgets["A"] < 10_001
    assert result.budgets["B"] > 6_003
    assert result.budgets["A"] + result.budgets["B"] == 10_001 + 6_003
    assert result.budgets["A"] >= dear.floor
    assert result.budgets["B"] <= cheap.ceiling


@pytest.mark.parametrize("seed", range(200))
def test_any_allocation_keeps_the_total_and_each_step_within_twenty_percent(seed: int) -> None:
    rng = random.Random(seed)
    p = Params(target=rng.randint(2_000, 30_000), min_events=rng.randint(1, 5), prior_events=rng.choice([0, 1, 3, 5]),
               deadband_pct=rng.choice([0, 5, 10]), min_move=rng.choice([1, 100, 500]))
    holders = [holder(str(i), rng.randint(500, 90_000), rng.randint(0, 400_000), rng.randint(0, 30))
               for i in range(rng.randint(2, 8))]
    result = allocate(holders, p)
    before = {h.id: h.budget for h in holders}
    after = {**before, **result.budgets}
    assert sum(after.values()) == sum(before.values())  # to the minor unit
    for h in holders:
        assert h.floor <= after[h.id] <= h.ceiling
        assert abs(after[h.id] - h.budget) <= h.budget * STEP + 1e-9
    if result:
        assert result.moved >= p.min_move
        assert sum(before[i] - after[i] for i in after if after[i] < before[i]) == result.moved


def test_the_minor_units_left_by_rounding_go_to_the_largest_remainders() -> None:
    """$0.10 moved to three equal recipients: 3, 3 and 4 cents, the extra cent to the lowest id (tie)."""
    p = Params(target=10_000, min_events=1, prior_events=0, deadband_pct=0, min_move=1)
    donor = Holder("9", 1_000, spend=50_000, events=1, floor=990, ceiling=1_000)  # offers 10 cents
    takers = [Holder(str(i), 1_000, spend=1_000, events=1, floor=1_000, ceiling=1_200) for i in (1, 2, 3)]
    result = allocate([donor, *takers], p)
    assert result.moved == 10
    assert result.budgets == {"9": 990, "1": 1_004, "2": 1_003, "3": 1_003}


def test_too_little_data_moves_nothing_and_shrinkage_damps_a_lucky_lead() -> None:
    p = Params(target=18_000, min_events=3, prior_events=3)
    # one qualified lead at $20: not judged (1 < 3 and $20 < 3 x $180)
    lucky = holder("A", 10_000, spend=2_000, events=1)
    unlucky = holder("B", 10_000, spend=50_000, events=0)  # $500, none: not judged either ($500 < $540)
    assert not allocate([lucky, unlucky], p)
    # 3 leads at $60: shrunk to ($180 + 3 x $180) / 6 = $120, not $60
    assert shrunk_cost(holder("C", 10_000, 18_000, 3), p) == pytest.approx(12_000)
    # with no prior, a spender with no event is infinitely dear once it spent min_events x target
    donor = holder("D", 10_000, spend=60_000, events=0)
    taker = holder("E", 10_000, spend=30_000, events=5)
    result = allocate([donor, taker], Params(target=18_000, min_events=3, prior_events=0))
    assert result.budgets == {"D": 8_000, "E": 12_000}


def test_limits_bound_the_move_to_what_the_recipients_can_take() -> None:
    p = Params(target=18_000, min_events=3, prior_events=0)
    donor = holder("A", 10_000, spend=200_000, events=4)  # $500: wants the full -20 % ($20)
    capped = Holder("B", 10_000, spend=30_000, events=5, floor=8_000, ceiling=10_500)  # hard limit: +$5 only
    result = allocate([donor, capped], p)
    assert result.budgets == {"A": 9_500, "B": 10_500}
    frozen = Holder("B", 10_000, spend=30_000, events=5, floor=10_000, ceiling=10_000)  # e.g. 3 raises this week
    assert not allocate([donor, frozen], p)


# ---------------------------------------------------------------------------------------------------------------
# The rule in the engine


def rebalance_rule(level: str = "adset", **action: object) -> Rule:
    return Rule.model_validate({
        "name": "rebalance-qualified", "scope": {"level": level},
        "conditions": {"all": [{"metric": "spend", "window": "last_14_days", "op": ">", "value": 0}]},
        "actions": [{"type": "rebalance", "metric": "cpl", "target": 50, "window": "last_14_days", "min_events": 3,
                     "prior_events": 3, **action}],
        "guardrails": {"cooldown_hours": 72},
    })


def rows(entity_id: str, spend_per_day: int, leads: int, *, level: str = "adset", campaign: str = "c1"
         ) -> list[MetricRow]:
    """14 days ending yesterday (nothing spent today: no spend floor), ``leads`` on the last day."""
    out = []
    for ago in range(1, 15):
        ids = {"adset_id": entity_id, "campaign_id": campaign} if level == "adset" else {"campaign_id": entity_id}
        out.append(MetricRow(date=TODAY - timedelta(days=ago), spend=spend_per_day, leads=leads if ago == 1 else 0,
                             **ids))  # type: ignore[arg-type]
    return out


def world() -> Snapshot:
    """Campaign c1 has ad set budgets; campaign c2 is CBO: its ad sets have no daily budget of their own."""
    entities = [adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000),
                adset("104", "Under CBO", budget=None, campaign_id="c2", campaign_name="CBO campaign"),
                adset("105", "Under CBO too", budget=None, campaign_id="c2", campaign_name="CBO campaign")]
    return Snapshot(entities=entities, rows=[*rows("101", 2_000, 2), *rows("102", 1_000, 10),
                                             *rows("104", 1_000, 1, campaign="c2"),
                                             *rows("105", 1_000, 9, campaign="c2")])


def only(decisions: list[Decision], entity_id: str) -> Decision:
    found = [d for d in decisions if d.entity_id == entity_id]
    assert len(found) == 1, decisions
    return found[0]


def test_the_rule_moves_budget_within_a_campaign_and_the_command_keeps_the_total() -> None:
    snapshot = Snapshot(entities=[adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000),
                                  adset("103", "New", budget=5_000)],
                        rows=[*rows("101", 2_000, 2), *rows("102", 1_000, 10), *rows("103", 100, 1)])
    decision = only(evaluate([rebalance_rule()], snapshot, fresh_state(), NOW), "c1")
    assert decision.outcome == "acted"
    assert decision.entity_level == "campaign"
    action = decision.actions[0]
    assert action.kind == "rebalance"
    assert action.moves_level == "adset"
    moves = {i: (old, new) for i, old, new in action.moves}
    assert set(moves) == {"101", "102"}  # D: 1 lead on $14, too little data
    assert moves["101"][1] < 10_000 < moves["102"][1]
    assert sum(new for _, new in moves.values()) == 20_000
    assert all(abs(new - old) <= old * 0.2 for old, new in moves.values())
    # one sentence with the numbers
    assert decision.explanation.startswith("Moved $")
    assert "total $200.00 unchanged" in decision.explanation
    assert "$50.00 target CPL" in decision.explanation
    message = to_command(action)
    assert message is not None
    command = message.payload.root
    assert isinstance(command, RebalanceBudgetsCommand)
    assert command.account_id == ACCOUNT
    assert command.level == "adset"
    assert sum(m.from_minor for m in command.moves) == sum(m.to_minor for m in command.moves) == 20_000
    # the cooldown holds the next run, the moved objects count as changed
    state = record_actions(fresh_state(), [decision])
    later = evaluate([rebalance_rule()], snapshot, EngineState(actions=state.actions, data_as_of={"1": NOW}),
                     NOW + timedelta(hours=1))
    assert only(later, "c1").reason == "cooldown"


@pytest.mark.parametrize("scale", [1, 10])
def test_the_average_target_moves_toward_the_groups_own_cost_whatever_the_firms_typical_cost(scale: int) -> None:
    """``target: average``: the group's pooled cost (spend ÷ events over the window) is the target, so the same
    account at ten times the costs moves the same way; a fixed $50 target at those costs finds no recipient."""
    snapshot = Snapshot(entities=[adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000),
                                  adset("103", "New", budget=5_000)],
                        rows=[*rows("101", 2_000 * scale, 2), *rows("102", 1_000 * scale, 10),
                              *rows("103", 100 * scale, 1)])
    decision = only(evaluate([rebalance_rule(target="average")], snapshot, fresh_state(), NOW), "c1")
    assert decision.outcome == "acted"
    moves = {i: (old, new) for i, old, new in decision.actions[0].moves}
    assert moves["101"][1] < 10_000 < moves["102"][1]
    assert sum(new for _, new in moves.values()) == 20_000
    average = (2_000 + 1_000 + 100) * 13 * scale / 13 / 100  # 13 days before today: $403 x scale over 13 leads
    assert f"group's average of ${average:,.2f} CPL" in decision.explanation
    fixed = only(evaluate([rebalance_rule()], snapshot, fresh_state(), NOW), "c1")
    assert (fixed.outcome == "acted") == (scale == 1)


def test_the_average_target_needs_an_event_and_is_the_only_word_taken() -> None:
    snapshot = Snapshot(entities=[adset("101", "A", budget=10_000), adset("102", "B", budget=10_000)],
                        rows=[*rows("101", 2_000, 0), *rows("102", 1_000, 0)])
    decision = only(evaluate([rebalance_rule(target="average")], snapshot, fresh_state(), NOW), "c1")
    assert decision.outcome == "skipped"
    assert decision.reason == "insufficient_data"
    assert "no average cost" in decision.explanation
    for bad in ("avg", 0, -5, "nan", float("inf"), "1e400"):
        with pytest.raises(ValidationError):
            rebalance_rule(target=bad)


def test_a_cbo_campaign_is_not_rebalanced_inside_and_campaign_budgets_are_at_campaign_level() -> None:
    snapshot = world()
    cbo = only(evaluate([rebalance_rule()], snapshot, fresh_state(), NOW), "c2")
    assert cbo.outcome == "skipped"
    assert cbo.reason == "no_budget"
    assert "campaign budget (CBO)" in cbo.explanation
    campaigns = [Entity(id=i, level="campaign", name=f"Campaign {i}", status="ACTIVE", account_id=ACCOUNT,
                        daily_budget=20_000, timezone="America/New_York") for i in ("201", "202")]
    snap = Snapshot(entities=campaigns, rows=[*rows("201", 2_000, 2, level="campaign"),
                                              *rows("202", 2_000, 20, level="campaign")])
    decision = only(evaluate([rebalance_rule("campaign")], snap, fresh_state(), NOW), ACCOUNT)
    assert decision.outcome == "acted"
    action = decision.actions[0]
    assert action.moves_level == "campaign"
    assert {i for i, _, _ in action.moves} == {"201", "202"}
    assert sum(new for _, _, new in action.moves) == 40_000
    command = to_command(action).payload.root  # type: ignore[union-attr]
    assert isinstance(command, RebalanceBudgetsCommand)
    assert command.level == "campaign"
    abo = [replace(c, daily_budget=None) for c in campaigns]
    skipped = only(evaluate([rebalance_rule("campaign")], replace(snap, entities=abo), fresh_state(), NOW), ACCOUNT)
    assert skipped.reason == "no_budget"
    assert "scope level adset" in skipped.explanation


def test_the_executors_hard_limits_bound_what_a_recipient_receives() -> None:
    snapshot = Snapshot(entities=[adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000)],
                        rows=[*rows("101", 2_000, 2), *rows("102", 1_000, 10)])
    # B was first seen at $52.50: 2x = $105, so it may receive $5 only
    state = fresh_state(budget_limits={"102": BudgetLimit(first_seen=5_250)})
    action = only(evaluate([rebalance_rule()], snapshot, state, NOW), "c1").actions[0]
    assert sorted(action.moves) == [("101", 10_000, 9_500), ("102", 10_000, 10_500)]
    # three raises this week: it receives nothing, so nothing moves
    state = fresh_state(budget_limits={"102": BudgetLimit(increases_week=3)})
    decision = only(evaluate([rebalance_rule()], snapshot, state, NOW), "c1")
    assert decision.outcome == "skipped"
    assert decision.reason == "no_change"


def test_an_object_another_rule_changed_within_the_cooldown_is_left_alone() -> None:
    snapshot = Snapshot(entities=[adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000),
                                  adset("103", "Cheap too", budget=10_000)],
                        rows=[*rows("101", 2_000, 2), *rows("102", 1_000, 10), *rows("103", 1_000, 10)])
    raised = ActionRecord(rule="raise-qualified", entity_id="102", kind="change_budget", at=NOW - timedelta(hours=10))
    action = only(evaluate([rebalance_rule()], snapshot, fresh_state(actions=(raised,)), NOW), "c1").actions[0]
    assert {i for i, _, _ in action.moves} == {"101", "103"}


def test_shadow_mode_decides_but_sends_nothing() -> None:
    snapshot = Snapshot(entities=[adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000)],
                        rows=[*rows("101", 2_000, 2), *rows("102", 1_000, 10)])
    decision = only(evaluate([rebalance_rule()], snapshot, fresh_state(consented=frozenset()), NOW), "c1")
    assert decision.outcome == "would_act"
    assert decision.shadow
    assert decision.explanation.startswith("Would move $")


def test_the_shipped_rule_moves_toward_the_campaigns_own_average() -> None:
    """On by default (issue 19's benchmark), in shadow mode until the operator's consent like every rule, and with
    no firm-specific figure to set."""
    rules = {r.name: r for r in load_rules(DEFAULT_RULES_DIR)}
    example = rules["rebalance-qualified"]
    assert example.enabled
    assert not example.dry_run
    assert example.main_action == "rebalance"
    assert example.rebalance is not None
    assert example.rebalance.metric == "cost_per_qualified_lead"
    assert example.rebalance.step_pct <= 20
    assert example.rebalance.target == "average"


def test_today_is_its_own_segment_whatever_the_windows() -> None:
    """A cut's spend floor reads today's spend: the snapshot must not fold today into the first window segment."""
    assert segments([rebalance_rule()], 15) == [0, 1, 14]


def test_an_approval_re_evaluates_the_whole_group() -> None:
    assert approval_scope(rebalance_rule(), "c1") == {"campaign_ids": ["c1"]}
    assert approval_scope(rebalance_rule("campaign"), ACCOUNT) == {"accounts": [ACCOUNT]}


def test_the_command_refuses_moves_that_change_the_total() -> None:
    common = {"command_id": "5d0c3c7e-4f55-4b8e-9a53-0c0d2f6b8f11", "requested_by": "test", "account_id": ACCOUNT,
              "level": "adset"}
    with pytest.raises(ValidationError, match="keeps it"):
        RebalanceBudgetsCommand(**common, moves=[BudgetMove(object_id="11", from_minor=100, to_minor=90),  # type: ignore[arg-type]
                                                 BudgetMove(object_id="12", from_minor=100, to_minor=111)])
    ok = RebalanceBudgetsCommand(**common, moves=[BudgetMove(object_id="11", from_minor=100, to_minor=90),  # type: ignore[arg-type]
                                                  BudgetMove(object_id="12", from_minor=100, to_minor=110)])
    assert ok.kind == "rebalance_budgets"


def test_a_backtest_replays_the_moves_and_keeps_the_total() -> None:
    entities = [adset("101", "Dear", budget=10_000), adset("102", "Cheap", budget=10_000),
                adset("103", "Middling", budget=8_000)]
    history = [MetricRow(date=TODAY - timedelta(days=ago), adset_id=i, campaign_id="c1", spend=spend,
                         leads=leads if ago % 2 else 0)
               for ago in range(1, 30) for i, spend, leads in (("101", 10_000, 1), ("102", 10_000, 8),
                                                                ("103", 8_000, 3))]
    report = replay([rebalance_rule()], Snapshot(entities=entities, rows=history), days=10, end=TODAY)
    acted = [d for d in report.decisions if d.outcome == "acted"]
    # The replay judges each day at 23:59: a day with its spend already in can give nothing (Meta's spend floor,
    # 110 % of today's spend), so only the last day, with no row yet, moves money.
    assert len(acted) == 1, [d.explanation for d in report.decisions]
    assert sum(e.daily_budget or 0 for e in report.end.values()) == 28_000
    assert report.end["101"].daily_budget < 10_000 < report.end["102"].daily_budget  # type: ignore[operator]
    moved = report.money[("rebalance-qualified", "USD")]
    assert moved.raises == moved.cuts == len(acted)
