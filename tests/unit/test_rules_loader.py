"""Rule files: the shipped defaults load, and broken files are reported by file, line and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.rules_engine.rule_files import RuleLoadError, check_rules, load_rules
from services.rules_engine.rule_terms import Group, window_bounds
from services.rules_engine.rules import DEFAULT_RULES_DIR, ChangeBudgetAction
from shared.money import offset as currency_offset
from shared.money import to_minor

RESOURCES = Path(__file__).parent.parent / "resources" / "rules"
BROKEN = RESOURCES / "broken"


def _line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def test_default_rules_are_the_set_the_benchmark_supports() -> None:
    """docs/decision-quality.md: the guide's CPL kill/scale rules ship disabled (no CPL setting beat static
    budgets), zero-leads waits for $400 over 7 days, and rules on cost per qualified lead over 14 days do the
    steering; budget-protection and frequency-cap stay."""
    assert check_rules(DEFAULT_RULES_DIR) == []
    rules = {r.name: r for r in load_rules(DEFAULT_RULES_DIR)}
    assert set(rules) == {
        "kill-underperformers", "scale-winners", "frequency-cap", "budget-protection", "zero-leads",
        "cut-junk", "raise-qualified", "cut-qualified", "revive-cpl", "rebalance-qualified", "rotate-creatives",
        "refresh-reminder",
    }
    assert {name for name, r in rules.items() if r.enabled and not r.dry_run} == {
        "budget-protection", "zero-leads", "frequency-cap", "cut-junk", "raise-qualified", "rebalance-qualified",
        "refresh-reminder"}
    reminder = rules["refresh-reminder"]
    assert reminder.main_action == "notify"  # changes nothing on the account
    assert reminder.notify_only  # so it needs no consent (its runs record it so, for the console)
    assert {name for name, r in rules.items() if r.notify_only} == {"refresh-reminder"}
    assert reminder.scope.level == "ad"  # an ad's own frequency restarts with a new ad; its ad set's does not
    assert [(c.metric, c.window, c.op, c.value) for c in reminder.conditions.leaves()] == [
        ("frequency", "last_7_days", ">", 2)]
    assert {r.currency for r in rules.values()} == {"USD"}
    # every rule's actions reach the operator's channels (none is log-only)
    for rule in rules.values():
        assert all(a.channels is None or set(a.channels) - {"log"} for a in rule.actions if a.type == "notify")
    zero = rules["zero-leads"]
    assert zero.main_action == "pause"
    assert [(c.metric, c.window, c.op, c.value) for c in zero.conditions.leaves()] == [
        ("spend", "last_7_days", ">=", 400), ("leads", "last_7_days", "==", 0)]
    # the guide's CPL rules are kept, with the guide's numbers, as disabled examples
    kill = rules["kill-underperformers"]
    assert not kill.enabled
    assert kill.main_action == "pause"
    assert [(c.metric, c.window, c.op, c.value, c.infinite_above_spend) for c in kill.conditions.leaves()] == [
        ("cpl", "last_3_days", ">", 50, 100)]
    assert [(c.metric, c.op, c.value) for c in kill.min_data] == [("impressions", ">", 1000)]
    scale = rules["scale-winners"]
    assert not scale.enabled
    assert isinstance(scale.actions[0], ChangeBudgetAction)
    assert scale.actions[0].percent == 20
    assert [(c.metric, c.op, c.value) for c in scale.min_data] == [("leads", ">", 5)]
    freq = rules["frequency-cap"]
    assert [(c.metric, c.window, c.value) for c in freq.conditions.leaves()] == [("frequency", "last_7_days", 4.0)]
    protect = rules["budget-protection"]
    assert [(c.metric, c.window, c.op, c.value) for c in protect.conditions.leaves()] == [
        ("spend", "today", ">", 300),
        ("leads", "today", "==", 0),
    ]
    assert [a.type for a in protect.actions] == ["pause", "notify"]
    # the CRM-truth rules: 14-day cohorts, -20 %/+20 % steps the executor accepts, 72 h between steps
    junk = rules["cut-junk"]
    assert [(c.metric, c.window, c.op, c.value) for c in junk.min_data] == [
        ("leads", "last_14_days", ">=", 15), ("qualified_leads", "last_30_days", ">=", 1)]
    [share] = list(junk.conditions.leaves())
    assert (share.metric, share.window, share.op) == ("qualified_leads", "last_14_days", "<")
    assert share.compare_to is not None
    assert (share.compare_to.metric, share.compare_to.factor) == ("leads", 0.1)
    up = rules["raise-qualified"]
    assert [(c.metric, c.window, c.op, c.value) for c in up.min_data] == [
        ("qualified_leads", "last_14_days", ">=", 3)]
    assert [(c.metric, c.window, c.op, c.value) for c in up.conditions.leaves()] == [
        ("cost_per_qualified_lead", "last_14_days", "<", 220)]
    assert up.guardrails.max_budget == 250
    for name in ("cut-junk", "raise-qualified", "cut-qualified"):
        rule = rules[name]
        [step] = [a for a in rule.actions if isinstance(a, ChangeBudgetAction)]
        assert abs(step.percent) == 20
        assert rule.guardrails.cooldown_hours == 72
        if step.percent < 0:
            assert rule.guardrails.max_budget_decrease_pct == 20
    # the examples ship disabled
    assert not rules["cut-qualified"].enabled
    assert not rules["revive-cpl"].enabled
    assert rules["revive-cpl"].scope.paused_by == ["kill-underperformers"]
    assert rules["revive-cpl"].statuses() == {"PAUSED"}


@pytest.mark.parametrize(
    ("file", "needle", "field", "message"),
    [
        ("unknown_metric.yaml", "cost_per_click", "conditions.all[1].metric", "Input should be 'spend'"),
        ("bad_operator.yaml", '"=>"', "conditions.all[0].op", "unknown operator '=>'"),
        ("missing_field.yaml", "- metric: frequency", "conditions.all[0].op", "Field required"),
        ("missing_field.yaml", "name: missing-actions-and-op", "actions", "Field required"),
        ("bad_values.yaml", "last_3_weeks", "conditions.all[0].window", "unknown window"),
        ("bad_values.yaml", "Car (Accident", "scope.name.regex", "invalid regex"),
        ("bad_values.yaml", "cooldown_hourz", "guardrails.cooldown_hourz", "Extra inputs"),
        ("non_finite.yaml", "value: .inf", "conditions.all[0].value", "finite number"),
    ],
)
def test_check_rules_names_file_line_and_field(file: str, needle: str, field: str, message: str) -> None:
    problems = [p for p in check_rules(BROKEN) if p.file == file and p.field == field]
    assert len(problems) == 1, check_rules(BROKEN)
    problem = problems[0]
    assert problem.line == _line_of(BROKEN / file, needle)
    assert message in problem.message
    assert str(problem).startswith(f"{file}:{problem.line}: {field}: ")


def test_yaml_syntax_error_gives_file_and_line() -> None:
    [problem] = [p for p in check_rules(BROKEN) if p.file == "bad_syntax.yaml"]
    assert problem.field is None
    # the parser trips on the next line; the message points back to where the unclosed mapping starts
    assert problem.line == _line_of(BROKEN / "bad_syntax.yaml", "actions:")
    started = _line_of(BROKEN / "bad_syntax.yaml", "{metric: cpl")
    assert f"started on line {started}" in problem.message


def test_load_rules_refuses_broken_files_unless_told_otherwise(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError) as info:
        load_rules(BROKEN)
    assert {p.file for p in info.value.problems} >= {"unknown_metric.yaml", "bad_syntax.yaml"}

    shutil.copy(BROKEN / "bad_operator.yaml", tmp_path / "a.yaml")
    shutil.copy(DEFAULT_RULES_DIR / "10_kill_underperformers.yaml", tmp_path / "b.yaml")
    assert [r.name for r in load_rules(tmp_path, strict=False)] == ["kill-underperformers"]


def test_lists_documents_nesting_and_shorthands() -> None:
    rules = {r.name: r for r in load_rules(RESOURCES / "good")}
    watch = rules["overspend-watch"]
    assert watch.conditions.mode == "any"
    first, nested = watch.conditions.children
    assert not isinstance(first, Group)
    assert first.compare_to is not None
    assert first.compare_to.metric == "daily_budget"
    assert first.compare_to.factor == 2
    assert isinstance(nested, Group)
    assert [c.op for c in nested.leaves()] == ["==", ">"]
    assert rules["stop-loss"].conditions.mode == "all"  # a plain list means all
    assert rules["stop-loss"].main_action == "pause_for_today"
    assert rules["set-budget-example"].scope.level == "campaign"


def test_duplicate_names_are_a_problem(tmp_path: Path) -> None:
    shutil.copy(DEFAULT_RULES_DIR / "10_kill_underperformers.yaml", tmp_path / "a.yaml")
    shutil.copy(DEFAULT_RULES_DIR / "10_kill_underperformers.yaml", tmp_path / "b.yaml")
    [problem] = check_rules(tmp_path)
    assert problem.file == "b.yaml"
    assert problem.field == "name"
    assert "duplicate" in problem.message


def test_budget_actions_on_ads_and_money_metric_mismatch_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "ad.yaml").write_text(
        "name: x\nscope: {level: ad}\nconditions: [{metric: cpl, op: '>', value: 1}]\n"
        "actions: [{type: change_budget, percent: 10}]\n"
    )
    (tmp_path / "mix.yaml").write_text(
        "name: y\nconditions:\n  - metric: cpl\n    op: '>'\n    compare_to: {metric: ctr}\nactions: [pause]\n"
    )
    problems = {p.file: p for p in check_rules(tmp_path)}
    assert "ads have no budget" in problems["ad.yaml"].message
    assert "one is money" in problems["mix.yaml"].message
    assert problems["mix.yaml"].line == 3


def test_money_and_windows() -> None:
    assert currency_offset("USD") == 100
    assert currency_offset("eur") == 100
    assert currency_offset("JPY") == 1
    assert currency_offset("TWD") == 1
    assert currency_offset("HUF") == 1
    assert to_minor(50, "USD") == 5000
    assert to_minor(62.4, "USD") == 6240
    assert to_minor(0.005, "USD") == 1
    assert to_minor(5000, "JPY") == 5000
    assert window_bounds("today") == (0, 0)
    assert window_bounds("yesterday") == (1, 1)
    assert window_bounds("last_3_days") == (0, 2)
    assert window_bounds("previous_7_days") == (1, 7)
    assert window_bounds("lifetime") == (0, None)
