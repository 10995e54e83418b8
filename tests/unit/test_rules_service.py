"""The service side of the rules engine without a broker: commands from actions, notifications, settings, CLI."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from contracts.commands import PauseCommand, SetBudgetCommand, UnpauseCommand
from contracts.messages import CampaignCommandMessage
from services.__main__ import main
from services.rules_engine.messages import to_command, to_notification
from services.rules_engine.model import Action, Decision
from services.rules_engine.rule_files import load_rules
from services.rules_engine.rules import DEFAULT_RULES_DIR
from services.rules_engine.settings import RulesSettings
from services.rules_engine.snapshot import levels_of, lookback_days

RESOURCES = Path(__file__).parents[1] / "resources" / "rules"
NOW = datetime(2026, 11, 20, 20, 0, tzinfo=UTC)


def action(kind: str, **extra: object) -> Action:
    fields: dict = {"kind": kind, "rule": "scale-winners", "entity_id": "120210000000000123",
                    "entity_level": "adset", "account_id": "act_1000000001", "reason": "Because.",
                    "idempotency_key": f"scale-winners:120210000000000123:{kind}:20261120T200000"}
    fields.update(extra)
    return Action(**fields)


def decision(*actions: Action, outcome: str = "acted") -> Decision:
    return Decision(rule="scale-winners", entity_id="120210000000000123", entity_level="adset", entity_name="Broad",
                    account_id="act_1000000001", currency="USD", outcome=outcome, actions=actions,
                    explanation="Raised the daily budget of ad set 'Broad' from $75.00 to $90.00 (+20%) because ...",
                    evaluated_at=NOW)


def test_budget_action_becomes_an_absolute_set_budget_with_the_expected_current_value() -> None:
    a = action("change_budget", budget_field="daily_budget", budget=9000, previous_budget=7500, currency="USD")
    message = to_command(a)
    assert isinstance(message, CampaignCommandMessage)
    command = message.payload.root
    assert isinstance(command, SetBudgetCommand)
    assert (command.amount_minor, command.expected_current_minor, command.budget) == (9000, 7500, "daily")
    assert command.command_id == a.command_id == to_command(a).payload.root.command_id  # stable across retries
    assert command.requested_by == "rules_engine:scale-winners"
    assert command.reason == "Because."
    # Valid on the wire as an outside system would send it.
    CampaignCommandMessage.model_validate_json(message.model_dump_json())


def test_lifetime_budget_and_accounts_without_prefix() -> None:
    a = action("set_budget", budget_field="lifetime_budget", budget=50_000, previous_budget=40_000,
               account_id="1000000001")
    command = to_command(a).payload.root
    assert command.budget == "lifetime"
    assert command.account_id == "act_1000000001"


@pytest.mark.parametrize(("kind", "expected"), [("pause", PauseCommand), ("pause_for_today", PauseCommand),
                                                ("unpause", UnpauseCommand)])
def test_status_actions(kind: str, expected: type) -> None:
    command = to_command(action(kind)).payload.root
    assert isinstance(command, expected)
    assert command.level == "adset"


def test_notify_is_not_a_command() -> None:
    assert to_command(action("notify", channels=("log",))) is None


def test_notification_uses_the_rules_channels_or_the_default() -> None:
    notify = action("notify", channels=("slack", "email"), email_to=("partner@example.com",))
    with_notify = to_notification(decision(action("pause"), notify), ["log", "slack"])
    assert with_notify.channels == ("log", "slack", "email")
    assert with_notify.email_to == ("partner@example.com",)
    assert with_notify.alert.payload.summary.startswith("Raised the daily budget of ad set 'Broad'")
    assert with_notify.alert.payload.severity == "warning"
    plain = to_notification(decision(action("pause")), ["log", "email"])
    assert plain.channels == ("log", "email")
    no_channels = to_notification(decision(action("pause"), action("notify")), ["slack", "email"])
    assert no_channels.channels == ("log", "slack", "email")  # a notify action naming none: the operator's


def test_settings_defaults_and_lists() -> None:
    settings = RulesSettings(qualified_events="QualifiedLead, MQL", signed_events="SignedCase")
    assert settings.qualified_events == ["QualifiedLead", "MQL"]
    assert settings.signed_events == ["SignedCase"]
    defaults = RulesSettings()
    assert defaults.dir == DEFAULT_RULES_DIR
    assert defaults.interval_seconds == 900
    assert defaults.signed_events == ["SignedCase", "Signed Case", "Purchase"]
    assert defaults.skipped_retention_days == 14
    with pytest.raises(ValidationError):  # the Automation page's 7-day counts must not lose a decision
        RulesSettings(skipped_retention_days=7)


def test_snapshot_reads_only_the_days_and_levels_the_rules_need() -> None:
    rules = [r for r in load_rules(DEFAULT_RULES_DIR) if r.enabled]
    assert lookback_days(rules, cap=35) == 30  # cut-junk's CRM guard reads the last 30 days
    assert lookback_days([r for r in rules if r.name != "cut-junk"], cap=35) == 14  # raise-qualified's cohort
    assert lookback_days([r for r in rules if r.name == "zero-leads"], cap=35) == 7
    assert lookback_days(rules, cap=5) == 5
    assert levels_of(rules) == {"adset", "ad"}  # refresh-reminder reads each ad's own frequency
    assert levels_of([r for r in rules if r.name != "refresh-reminder"]) == {"adset"}


def test_rules_check_prints_file_line_field(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(RESOURCES / "broken")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "bad_operator.yaml:5: conditions.all[0].op: unknown operator '=>'; use one of > >= < <= == !=" in out
    assert "bad_values.yaml:12: guardrails.cooldown_hourz: Extra inputs are not permitted" in out
    assert out[-1].endswith("problem(s)")


def test_rules_check_of_good_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(DEFAULT_RULES_DIR)]) == 0
    assert capsys.readouterr().out == f"{len(load_rules(DEFAULT_RULES_DIR))} rule(s) OK\n"


def test_command_ids_differ_per_decision() -> None:
    first = action("pause")
    later = action("pause", idempotency_key="scale-winners:120210000000000123:pause:20261121T200000")
    assert first.command_id != later.command_id
    assert isinstance(first.command_id, uuid.UUID)


def test_the_command_line_refuses_consent_for_a_notify_only_rule(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The shipped refresh-reminder only notifies: `leadwire rules enable` says so and sends nothing (it returns
    # before it opens the database, which this test has none of).
    monkeypatch.setenv("RULES_DIR", str(DEFAULT_RULES_DIR))
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["rules", "enable", "refresh-reminder"]) == 2
    assert "needs no consent" in capsys.readouterr().err
