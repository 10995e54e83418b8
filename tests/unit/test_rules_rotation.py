"""Creative rotation in the rules engine (pure): which reserve takes a fatigued ad's place, the ad set never left
without an active ad, the window reach of the ad, shadow mode, and the command the decision becomes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from contracts.commands import RotateCreativeCommand
from services.rules_engine.backtest import replay
from services.rules_engine.logic import evaluate, record_actions
from services.rules_engine.messages import to_command
from services.rules_engine.model import Entity, MetricRow, Snapshot
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rules import DEFAULT_RULES_DIR, Rule
from shared.creatives import is_reserve_name
from tests.unit.test_rules_logic import ACCOUNT, NOW, TODAY, by_outcome, fresh_state

ROTATE = {
    "name": "rotate",
    "scope": {"level": "ad"},
    "min_data": [{"metric": "impressions", "window": "last_7_days", "op": ">", "value": 1000}],
    "conditions": {"any": [
        {"metric": "frequency", "window": "last_7_days", "op": ">", "value": 3.5},
        {"metric": "ctr", "window": "last_3_days", "op": "<",
         "compare_to": {"metric": "ctr", "window": "previous_14_days", "factor": 0.7}},
    ]},
    "actions": ["rotate_creative", "notify"],
    "guardrails": {"cooldown_hours": 72},
}


def ad(ad_id: str, name: str, *, adset_id: str = "11", status: str = "ACTIVE") -> Entity:
    return Entity(id=ad_id, level="ad", name=name, status=status, account_id=ACCOUNT, adset_id=adset_id,
                  campaign_id="c1", timezone="America/New_York")


def delivery(ad_id: str, adset_id: str, *, days: int, impressions: int, reach: int, clicks: int) -> list[MetricRow]:
    return [MetricRow(date=TODAY - timedelta(days=k), ad_id=ad_id, adset_id=adset_id, campaign_id="c1",
                      spend=2_000, impressions=impressions, reach=reach, clicks=clicks) for k in range(days)]


def world(*extra: Entity, window_reach: dict[tuple[str, str], int] | None = None) -> Snapshot:
    """Ad set 11: a fatigued ad 101 (1,000 impressions a day to the same ~250 people, CTR steady), a healthy ad 102
    (frequency 1.1), reserves '[reserve] 2 ...' and '[Reserve] 1 ...' (paused), a paused ad without the tag."""
    entities = [
        ad("101", "Crash - video A"),
        ad("102", "Crash - carousel"),
        ad("202", "[reserve] 2 Crash - video C", status="PAUSED"),
        ad("201", "[Reserve] 1 Crash - video B", status="PAUSED"),
        ad("301", "Crash - old static", status="PAUSED"),
        *extra,
    ]
    rows = [*delivery("101", "11", days=15, impressions=1_000, reach=900, clicks=10),
            *delivery("102", "11", days=15, impressions=1_000, reach=900, clicks=10)]
    reach = {("101", "last_7_days"): 1_750, ("102", "last_7_days"): 6_300} if window_reach is None else window_reach
    return Snapshot(entities=entities, rows=rows, window_reach=reach)


def rotate_rule(**changes: object) -> Rule:
    return Rule.model_validate({**ROTATE, **changes})


def test_the_tag_is_in_the_name_in_any_case() -> None:
    assert is_reserve_name("[reserve] Crash - video B")
    assert is_reserve_name("Crash - video B [RESERVE]")
    assert not is_reserve_name("Crash - reserve B")
    assert not is_reserve_name("")


def test_a_fatigued_ad_is_rotated_out_for_the_first_reserve_in_name_order() -> None:
    decisions = evaluate([rotate_rule()], world(), fresh_state(consented=frozenset({"rotate"})), NOW)
    found = by_outcome(decisions)
    rotated = found[("rotate", "101")]
    assert rotated.outcome == "acted"
    # Frequency on the ad's own 7-day window reach: 7,000 / 1,750 = 4.0 (summed daily reach would say 1.1).
    assert rotated.metrics["last_7_days"]["frequency"] == 4.0
    assert rotated.explanation.startswith(
        "Rotated ad 'Crash - video A' out for reserve ad '[Reserve] 1 Crash - video B' of the same ad set because "
        "frequency over the last 7 days was 4.00 (> 3.5)")
    [action, _notify] = rotated.actions
    assert (action.kind, action.entity_id, action.reserve_id, action.adset_id) == (
        "rotate_creative", "101", "201", "11")
    assert ("rotate", "102") not in found  # healthy: frequency 1.1, CTR steady
    command = to_command(action)
    assert command is not None
    sent = command.payload.root
    assert isinstance(sent, RotateCreativeCommand)
    assert (sent.object_id, sent.reserve_ad_id, sent.adset_id, sent.account_id) == ("101", "201", "11", "act_1")
    assert sent.requested_by == "rules_engine:rotate"
    assert set(command.payload.model_dump()) == {"kind", "command_id", "requested_by", "reason", "dry_run", "force",
                                                 "object_id", "reserve_ad_id", "adset_id", "account_id", "level"}


def test_no_reserve_means_no_pause_and_the_sentence_says_so() -> None:
    snapshot = world()
    no_reserves = Snapshot([e for e in snapshot.entities if not is_reserve_name(e.name)], snapshot.rows,
                           snapshot.window_reach)
    [decision] = [d for d in evaluate([rotate_rule()], no_reserves, fresh_state(), NOW) if d.entity_id == "101"]
    assert (decision.outcome, decision.reason, decision.actions) == ("skipped", "no_reserve", ())
    assert decision.explanation.startswith(
        "Did not rotate out ad 'Crash - video A' (its ad set has no paused reserve creative (an ad with [reserve] in "
        "its name) to take its place, so it was not paused: an ad set is never left without an active ad) although "
        "frequency over the last 7 days was 4.00")


def test_reserves_of_another_ad_set_active_ones_and_retired_ones_are_not_used() -> None:
    snapshot = world(ad("401", "[reserve] 0 other ad set", adset_id="12", status="PAUSED"))
    state = fresh_state(retired_ads=frozenset({"201"}))
    [decision] = [d for d in evaluate([rotate_rule()], snapshot, state, NOW) if d.entity_id == "101"]
    assert decision.actions[0].reserve_id == "202"
    state = fresh_state(retired_ads=frozenset({"201", "202"}))
    [decision] = [d for d in evaluate([rotate_rule()], snapshot, state, NOW) if d.entity_id == "101"]
    assert decision.reason == "no_reserve"


def test_two_fatigued_ads_of_one_ad_set_take_two_reserves_and_a_third_keeps_running() -> None:
    snapshot = world()
    rows = [*snapshot.rows, *delivery("103", "11", days=15, impressions=1_000, reach=900, clicks=10),
            *delivery("104", "11", days=15, impressions=1_000, reach=900, clicks=10)]
    reach = {**snapshot.window_reach, ("103", "last_7_days"): 1_000, ("104", "last_7_days"): 1_000}
    entities = [*snapshot.entities, ad("103", "Crash - video D"), ad("104", "Crash - video E")]
    decisions = evaluate([rotate_rule()], Snapshot(entities, rows, reach), fresh_state(), NOW)
    found = by_outcome(decisions)
    reserves = {d.entity_id: d.actions[0].reserve_id for d in decisions if d.outcome == "acted"}
    assert reserves == {"101": "201", "103": "202"}
    assert found[("rotate", "104")].reason == "no_reserve"
    # The reserves just activated are not judged again in the same run.
    assert ("rotate", "201") not in found or found[("rotate", "201")].reason == "conflict"


def test_a_falling_ctr_rotates_too() -> None:
    snapshot = world()
    rows = [r for r in snapshot.rows if r.ad_id != "102"]
    # H: CTR 1 % for 12 days, then 0.5 % over the last 3 days (below 70 % of the 14 days before today).
    rows += [MetricRow(date=TODAY - timedelta(days=k), ad_id="102", adset_id="11", campaign_id="c1", spend=2_000,
                       impressions=1_000, reach=900, clicks=5 if k < 3 else 10) for k in range(15)]
    decisions = evaluate([rotate_rule()], Snapshot(snapshot.entities, rows, snapshot.window_reach), fresh_state(),
                         NOW)
    rotated = {d.entity_id: d for d in decisions if d.outcome == "acted"}
    assert set(rotated) == {"101", "102"}
    assert "CTR over the last 3 days was 0.50%" in rotated["102"].explanation
    assert rotated["102"].actions[0].reserve_id == "202"


def test_in_shadow_mode_the_rotation_would_act_and_a_second_run_is_held_by_the_cooldown() -> None:
    state = fresh_state(consented=frozenset())
    [decision] = [d for d in evaluate([rotate_rule()], world(), state, NOW) if d.entity_id == "101"]
    assert (decision.outcome, decision.shadow) == ("would_act", True)
    assert decision.explanation.startswith("Would rotate ad 'Crash - video A' out for reserve ad")
    acted_state = record_actions(fresh_state(), evaluate([rotate_rule()], world(), fresh_state(), NOW))
    assert acted_state.retired_ads == {"101"}
    later = NOW + timedelta(hours=2)
    again = evaluate([rotate_rule()], world(), acted_state, later)
    assert by_outcome(again)[("rotate", "101")].reason == "cooldown"


def test_rotation_is_for_ad_level_rules_only() -> None:
    with pytest.raises(ValidationError, match="rotate_creative rotates ads"):
        rotate_rule(scope={"level": "adset"})
    with pytest.raises(ValidationError, match="at most one of"):
        rotate_rule(actions=["rotate_creative", "pause"])


def test_the_shipped_example_is_off_and_rotates_in_a_backtest() -> None:
    [example] = [r for r in load_rules(DEFAULT_RULES_DIR) if r.name == "rotate-creatives"]
    assert (example.enabled, example.dry_run, example.main_action) == (False, True, "rotate_creative")
    assert evaluate([example], world(), fresh_state(), NOW) == []  # disabled: not evaluated
    on = example.model_copy(update={"enabled": True, "dry_run": False})
    report = replay([on], world(), days=1, end=TODAY, window_reach_by_day={TODAY: world().window_reach})
    rotations = [a for d in report.decisions if d.outcome == "acted" for a in d.actions if a.kind == "rotate_creative"]
    assert rotations, "the example rotates the fatigued ad"
    assert report.end["101"].status == "PAUSED"
    assert report.end[rotations[0].reserve_id or ""].status == "ACTIVE"
