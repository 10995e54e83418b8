"""Consent and money safety in the rules' pure parts: shadow mode, spend with no leads, a rule's currency, and the
announcements of results (issue 15 items 1, 4 and 5)."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pytest

from contracts.commands import CommandResult, MetaErrorInfo
from services.rules_engine.currency import localize, parse_rates, rate
from services.rules_engine.explain import failed, would
from services.rules_engine.logic import evaluate
from services.rules_engine.messages import result_notification, shadow_notification
from services.rules_engine.model import EngineSettings, EngineState, Entity, Snapshot
from services.rules_engine.rules import Rule
from tests.fixtures.guide_rules import guide_rules
from tests.unit.test_rules_logic import NOW, TODAY, adset, by_outcome, days, guide_snapshot, rule

FRESH = {"1": NOW, "9": NOW}


def state(consented: frozenset[str] | None = frozenset(), **extra: object) -> EngineState:
    return EngineState(data_as_of=FRESH, consented=consented, **extra)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ shadow mode


def test_a_rule_nobody_enabled_would_act_in_shadow_mode_and_sends_nothing() -> None:
    decisions = evaluate(guide_rules(), guide_snapshot(), state(), NOW)
    assert {d.outcome for d in decisions if d.reason is None} == {"would_act"}
    assert all(d.shadow for d in decisions if d.outcome == "would_act")
    found = by_outcome(decisions)
    kill = found["kill-underperformers", "A"]
    assert kill.explanation.startswith("Would pause ad set 'Car Accident - Broad' because CPL over the last 3 days")
    scale = found["scale-winners", "B"]
    assert scale.explanation.startswith("Would raise the daily budget of ad set 'Winners - Lookalike' from $100.00 to")
    # the would-be actions are kept (what approving would apply), but the decision is not "acted"
    assert [a.kind for a in kill.actions] == ["pause", "notify"]


def test_only_the_enabled_rule_acts() -> None:
    decisions = by_outcome(evaluate(guide_rules(), guide_snapshot(),
                                    state(frozenset({"kill-underperformers"})), NOW))
    assert decisions["kill-underperformers", "A"].outcome == "acted"
    assert not decisions["kill-underperformers", "A"].shadow
    assert decisions["scale-winners", "B"].outcome == "would_act"
    assert decisions["scale-winners", "B"].shadow


def test_notify_only_rules_need_no_consent_and_dry_runs_stay_dry_runs() -> None:
    flag = rule({"name": "flag", "priority": 1, "actions": ["notify"],
                 "conditions": [{"metric": "spend", "window": "today", "op": ">", "value": 300}]})
    dry = rule({"name": "dry", "dry_run": True, "conditions": [{"metric": "spend", "window": "today", "op": ">",
                                                                  "value": 300}], "actions": ["pause"]})
    found = by_outcome(evaluate([flag, dry], guide_snapshot(), state(), NOW))
    assert found["flag", "E"].outcome == "acted"
    assert found["dry", "E"].outcome == "would_act"
    assert not found["dry", "E"].shadow
    assert found["dry", "E"].explanation.startswith("Dry run: would have paused")


def test_without_consent_information_every_rule_acts_as_before() -> None:
    """Backtests and previews pass no consent (None): rules act in the simulation."""
    decisions = evaluate(guide_rules(), guide_snapshot(), state(None), NOW)
    assert ("kill-underperformers", "A") in {(d.rule, d.entity_id) for d in decisions if d.outcome == "acted"}


def test_announcement_wording() -> None:
    assert would("Paused ad set 'X' because CPL was $60 (> $50).") == \
        "Would pause ad set 'X' because CPL was $60 (> $50)."
    assert would("Raised the daily budget of ad set 'X' from $10.00 to $12.00 (+20%) because ...").startswith(
        "Would raise the daily budget of ad set 'X' from $10.00 to $12.00")
    assert failed("Paused ad set 'X' because CPL was $60 (> $50).", "Meta answered #100: nope") == (
        "Could not pause ad set 'X' (Meta answered #100: nope). It was tried because CPL was $60 (> $50).")


# ------------------------------------------------------------------------------------------------ spend, no leads


def zero_lead_world(per_day: int, n_days: int = 3) -> Snapshot:
    return Snapshot([adset("Z", "No Leads", budget=25_000)], days("Z", [(per_day, 4_000, 3_000, 0)] * n_days))


def test_three_days_of_250_dollars_without_a_lead_pause() -> None:
    decisions = evaluate(guide_rules(), zero_lead_world(25_000), state(None), NOW)
    acted = [d for d in decisions if d.outcome == "acted"]
    assert [(d.rule, d.entity_id) for d in acted] == [("zero-leads", "Z")]
    assert acted[0].explanation == (
        "Paused ad set 'No Leads' because spend over the last 7 days was $750.00 (≥ $400) and leads over the last "
        "7 days were 0 (= 0).")
    # budget-protection looks at one day over $300, kill-underperformers' CPL at the same ad set (already paused)
    assert ("budget-protection", "Z") not in {(d.rule, d.entity_id) for d in decisions}


def test_cpl_with_no_leads_is_infinite_above_its_spend_floor_and_undefined_below() -> None:
    kill = rule({"name": "kill", "conditions": [{"metric": "cpl", "window": "last_3_days", "op": ">", "value": 50,
                                                 "infinite_above_spend": 100}], "actions": ["pause"]})
    plain = rule({"name": "plain", "conditions": [{"metric": "cpl", "window": "last_3_days", "op": ">",
                                                   "value": 50}], "actions": ["pause"]})
    cheap = rule({"name": "cheap", "conditions": [{"metric": "cpl", "window": "last_3_days", "op": "<", "value": 50,
                                                   "infinite_above_spend": 100}], "actions": ["pause"]})
    over = evaluate([kill, plain, cheap], zero_lead_world(4_000), state(None), NOW)  # $120, 0 leads
    assert [(d.rule, d.outcome) for d in over] == [("kill", "acted")]
    assert "CPL over the last 3 days was infinite (0 leads on $120.00) (> $50)" in over[0].explanation
    assert over[0].metrics["last_3_days"]["cpl"] is None  # stored as undefined (JSON has no infinity)
    assert evaluate([kill, plain, cheap], zero_lead_world(3_000), state(None), NOW) == []  # $90: below the floor


def test_infinite_above_spend_only_on_costs() -> None:
    with pytest.raises(ValueError, match="infinite_above_spend applies to"):
        Rule.model_validate({"name": "x", "conditions": [{"metric": "spend", "op": ">", "value": 1,
                                                          "infinite_above_spend": 5}], "actions": ["pause"]})


# ------------------------------------------------------------------------------------------------ currencies

YEN = Entity(id="J", level="adset", name="Tokyo Winner", status="ACTIVE", account_id="act_9", campaign_id="c9",
             daily_budget=800_000, currency="JPY", timezone="America/New_York")


def yen_world() -> Snapshot:
    # CPL 2,383 JPY (about $16 at 150 yen to the dollar): a winner, not a loser
    return Snapshot([YEN], days("J", [(16_683, 5_000, 4_000, 7)] * 3))


def test_a_usd_rule_judges_a_jpy_account_in_jpy_at_the_configured_rate() -> None:
    rules = [r for r in guide_rules() if r.name in ("kill-underperformers", "scale-winners")]
    settings = EngineSettings(currency_rates=parse_rates(["USD/JPY=150"]))
    found = by_outcome(evaluate(rules, yen_world(), state(None), NOW, settings))
    assert ("kill-underperformers", "J") not in found  # 2,383 JPY is not over 7,500 JPY
    scale = found["scale-winners", "J"]
    assert scale.outcome == "acted"
    assert "CPL over the last 3 days was 2,383 JPY (< 3,750 JPY)" in scale.explanation
    assert scale.actions[0].currency == "JPY"


def test_without_a_rate_a_rule_does_not_judge_an_account_in_another_currency() -> None:
    rules = guide_rules()
    decisions = evaluate(rules, yen_world(), state(None), NOW)
    assert decisions == []  # not "CPL 2,383 JPY (> 50 JPY)"


def test_an_account_with_rule_files_of_its_own_is_judged_by_them() -> None:
    yen_kill = rule({"name": "kill-jpy", "currency": "JPY", "scope": {"level": "adset", "accounts": ["act_9"]},
                     "conditions": [{"metric": "cpl", "window": "last_3_days", "op": ">", "value": 2000}],
                     "actions": ["pause"]})
    [decision] = evaluate([yen_kill], yen_world(), state(None), NOW)
    assert decision.outcome == "acted"
    assert "CPL over the last 3 days was 2,383 JPY (> 2,000 JPY)" in decision.explanation


def test_rates_inverse_and_cross() -> None:
    rates = parse_rates(["USD/JPY=150", "EUR/USD=1.08"])
    assert rate("USD", "JPY", rates) == 150
    assert rate("JPY", "USD", rates) == pytest.approx(1 / 150)
    assert rate("EUR", "JPY", rates) == pytest.approx(162)
    assert rate("GBP", "JPY", rates) is None
    with pytest.raises(ValueError, match="FROM/TO=RATE"):
        parse_rates(["USD:JPY=150"])
    converted = localize(guide_rules()[0], "JPY", rates)
    assert converted is not None
    assert converted.currency == "JPY"
    [cpl] = list(converted.conditions.leaves())
    assert (cpl.value, cpl.infinite_above_spend) == (7_500, 15_000)
    assert [c.value for c in converted.min_data] == [1000]  # impressions are not money


# ------------------------------------------------------------------------------------------------ announcements


def action_row(**extra: object) -> dict[str, object]:
    row: dict[str, object] = {
        "rule": "kill-underperformers", "entity_id": "120", "entity_level": "adset", "account_id": "act_1",
        "kind": "pause", "explanation": "Paused ad set 'Broad' because CPL over the last 3 days was $62.40 (> $50).",
        "announce_channels": ["log", "slack"], "announce_email_to": [], "announced_at": None,
    }
    row.update(extra)
    return row


def result(status: str, **extra: object) -> CommandResult:
    return CommandResult(command_id=uuid.uuid4(), kind="pause", status=status, **extra)  # type: ignore[arg-type]


def test_a_pause_is_announced_as_done_only_once_meta_paused_it() -> None:
    done = result_notification(action_row(), result("ok", detail="status ACTIVE -> PAUSED"))
    assert done is not None
    assert done.alert.payload.summary == "Paused ad set 'Broad' because CPL over the last 3 days was $62.40 (> $50)."
    assert done.alert.payload.code == "rule_acted"
    assert done.channels == ("log", "slack")


def test_a_failed_pause_announces_what_was_tried_and_why_it_failed() -> None:
    error = MetaErrorInfo(code=100, message="Invalid parameter")
    note = result_notification(action_row(), result("failed", meta_error=error, detail="Invalid parameter"))
    assert note is not None
    summary = note.alert.payload.summary
    assert summary.startswith("Could not pause ad set 'Broad' (Meta answered #100: Invalid parameter).")
    assert "It was tried because CPL over the last 3 days was $62.40" in summary
    assert not summary.startswith("Paused")
    assert note.alert.payload.code == "rule_action_failed"
    refused = result_notification(action_row(), result("refused", guardrail="hard_max_budget", detail="over 2x"))
    assert refused is not None
    assert "the executor's guardrail hard_max_budget refused it: over 2x" in refused.alert.payload.summary


def test_nothing_is_announced_twice_or_for_a_dry_run() -> None:
    assert result_notification(action_row(announced_at=NOW), result("ok")) is None
    assert result_notification(action_row(announce_channels=None), result("ok")) is None
    assert result_notification(action_row(), result("dry_run")) is None


def test_a_shadow_decision_says_would_and_how_to_approve() -> None:
    [decision] = [d for d in evaluate(guide_rules(), guide_snapshot(), state(), NOW)
                  if d.rule == "kill-underperformers" and d.outcome == "would_act"]
    note = shadow_notification(decision, 42, ["log", "slack", "email"])
    assert note.alert.payload.summary.startswith("Would pause ad set 'Car Accident - Broad' because")
    assert "nothing was sent to Meta" in note.alert.payload.summary
    assert "leadwire rules approve 42" in (note.alert.payload.fix or "")
    assert note.channels == ("log", "slack", "email")


def test_infinity_never_reaches_stored_metrics() -> None:
    decisions = evaluate(guide_rules(), zero_lead_world(25_000), state(None),
                         NOW + timedelta(minutes=1))
    for d in decisions:
        for values in d.metrics.values():
            assert all(v is None or not math.isinf(v) for v in values.values())
    assert TODAY  # the world is dated in the account's today
