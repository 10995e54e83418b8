"""What decisions become: `CampaignCommand`s for the executor and notifications (pure, no I/O).

Each mutating action becomes a `CampaignCommand` whose `command_id` is the action's stable id. Notifications (an
`AlertRaised` the service itself delivers, on the channels of the rule's `notify` action, or RULES_NOTIFY_CHANNELS
when it has none or names none) announce results, not intentions:

* a decision that sends a command is announced when the executor's `CommandResult` comes back: "Paused ad set X
  because ..." once it is paused, "Could not pause ad set X (why). It was tried because ..." when Meta or the
  executor's hard limits refused it (`result_notification`);
* a decision of a rule in shadow mode is announced as "Would pause ad set X because ...", with how to approve it
  or enable the rule (`shadow_notification`);
* a notify-only decision is announced at once (`to_notification`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.alerts import AlertRaised
from contracts.commands import (
    BudgetMove,
    CampaignCommand,
    CommandResult,
    PauseCommand,
    RebalanceBudgetsCommand,
    RotateCreativeCommand,
    SetBudgetCommand,
    UnpauseCommand,
)
from contracts.envelope import Envelope
from contracts.messages import AlertRaisedMessage, CampaignCommandMessage
from services.rules_engine.explain import failed
from services.rules_engine.model import Action, Decision

SERVICE = "rules_engine"


def to_command(action: Action, *, caused_by: Envelope | None = None) -> CampaignCommandMessage | None:
    """The CampaignCommand for a mutating action (None for `notify`)."""
    common = {
        "command_id": action.command_id,
        "requested_by": f"rules_engine:{action.rule}",
        "reason": action.reason[:2000],
        "object_id": action.entity_id,
        "account_id": _act(action.account_id),
    }
    command: PauseCommand | UnpauseCommand | SetBudgetCommand | RotateCreativeCommand | RebalanceBudgetsCommand
    if action.kind == "rotate_creative":
        if action.reserve_id is None or action.adset_id is None:
            raise ValueError(f"rotation of ad {action.entity_id} without a reserve or an ad set")
        command = RotateCreativeCommand(reserve_ad_id=action.reserve_id, adset_id=action.adset_id, **common)
    elif action.kind == "rebalance":  # ids and amounts: the objects' daily budgets, their sum unchanged
        if action.moves_level is None or action.moves_level == "ad":
            raise ValueError(f"rebalance without the level of its moves ({action.entity_id})")
        command = RebalanceBudgetsCommand(
            command_id=action.command_id, requested_by=common["requested_by"], reason=common["reason"],
            account_id=common["account_id"], level=action.moves_level,
            moves=[BudgetMove(object_id=i, from_minor=old, to_minor=new) for i, old, new in action.moves],
        )
    elif action.kind in ("pause", "pause_for_today"):
        command = PauseCommand(level=action.entity_level, **common)
    elif action.kind == "unpause":
        command = UnpauseCommand(level=action.entity_level, **common)
    elif action.kind in ("change_budget", "set_budget"):
        if action.entity_level == "ad" or action.budget is None:
            raise ValueError(f"budget action without a budget on {action.entity_level} {action.entity_id}")
        command = SetBudgetCommand(
            level=action.entity_level,
            budget="lifetime" if action.budget_field == "lifetime_budget" else "daily",
            amount_minor=action.budget,
            expected_current_minor=action.previous_budget,
            **common,
        )
    else:
        return None
    return CampaignCommandMessage.new(CampaignCommand(command), caused_by=caused_by)


def _act(account_id: str) -> str:
    return account_id if account_id.startswith("act_") else f"act_{account_id}"


@dataclass(frozen=True)
class Notification:
    """An acting decision's sentence, for the alerts consumer to deliver."""

    alert: AlertRaisedMessage
    channels: tuple[str, ...]
    email_to: tuple[str, ...] = ()


def route(decision: Decision, default_channels: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(channels, e-mail recipients) of a decision's announcement: its rule's `notify` action, else the defaults;
    always the log too."""
    notify = next((a for a in decision.actions if a.kind == "notify"), None)
    chosen = notify.channels if notify is not None and notify.channels else tuple(default_channels)
    return tuple(dict.fromkeys(["log", *chosen])), notify.email_to if notify is not None else ()


def subject(rule: str, level: str, entity_id: str, account_id: str) -> str:
    return f"rule {rule}, {level} {entity_id} ({account_id})"


def to_notification(
    decision: Decision, default_channels: Sequence[str], *, caused_by: Envelope | None = None
) -> Notification:
    """The announcement of a decision that sends nothing to Meta (a notify-only rule): at once."""
    channels, email_to = route(decision, default_channels)
    alert = AlertRaised(
        severity="warning",
        code="rule_acted",
        summary=decision.explanation,
        service=SERVICE,
        subject=subject(decision.rule, decision.entity_level, decision.entity_id, decision.account_id),
    )
    return Notification(AlertRaisedMessage.new(alert, caused_by=caused_by), channels, email_to)


def shadow_notification(
    decision: Decision, decision_id: int, default_channels: Sequence[str], *, caused_by: Envelope | None = None
) -> Notification:
    """"Would pause ad set X because ...": what a rule in shadow mode would have done, and how to let it."""
    channels, email_to = route(decision, default_channels)
    alert = AlertRaised(
        severity="info",
        code="rule_would_act",
        summary=f"{decision.explanation} (shadow mode: nothing was sent to Meta)",
        service=SERVICE,
        subject=subject(decision.rule, decision.entity_level, decision.entity_id, decision.account_id),
        fix=(f"To apply this one: `leadwire rules approve {decision_id}` (or Approve on the console's Automation "
             f"page). To let the rule act from now on: `leadwire rules enable {decision.rule}`."),
    )
    return Notification(AlertRaisedMessage.new(alert, caused_by=caused_by), channels, email_to)


def result_notification(
    action: Mapping[str, Any], result: CommandResult, *, caused_by: Envelope | None = None
) -> Notification | None:
    """The announcement of an acted decision once the executor answered (None when it has nothing to say: a dry
    run, or a decision announced already)."""
    if result.status == "dry_run" or action["announce_channels"] is None or action["announced_at"] is not None:
        return None
    sentence = action["explanation"] or f"{action['kind']} {action['entity_level']} {action['entity_id']}"
    if result.status == "ok":
        summary, severity, code = sentence, "warning", "rule_acted"
        if result.forced:
            summary += " (forced)"
    else:
        summary, severity, code = failed(sentence, _why(result)), "critical", "rule_action_failed"
    alert = AlertRaised(
        severity=severity,  # type: ignore[arg-type]
        code=code,
        summary=summary[:4000],
        service=SERVICE,
        subject=subject(action["rule"], action["entity_level"], action["entity_id"], action["account_id"]),
        fix=None if result.status == "ok" else
        "See the decision on the console's Automation page; the rule tries again after its cooldown.",
    )
    return Notification(AlertRaisedMessage.new(alert, caused_by=caused_by), tuple(action["announce_channels"]),
                        tuple(action["announce_email_to"] or ()))


def _why(result: CommandResult) -> str:
    """Why a command was not applied, in words."""
    if result.status == "refused":
        guard = f" {result.guardrail}" if result.guardrail else ""
        return f"the executor's guardrail{guard} refused it: {result.detail}" if result.detail else \
            f"the executor's guardrail{guard} refused it"
    error = result.meta_error
    if error is not None and (error.code is not None or error.message):
        code = "" if error.code is None else f" #{error.code}" + (f"/{error.subcode}" if error.subcode else "")
        return f"Meta answered{code}: {error.user_message or error.message or result.detail}"
    return f"it failed: {result.detail}" if result.detail else "it failed"
