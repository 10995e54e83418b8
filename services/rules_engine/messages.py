"""What acting decisions become: `CampaignCommand`s for the executor and notifications (pure, no I/O).

Each mutating action becomes a `CampaignCommand` whose `command_id` is the action's stable id, and each acting
decision becomes a notification (an `AlertRaised` the service itself delivers, on the channels of the rule's
`notify` action, or RULES_NOTIFY_CHANNELS when it has none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from contracts.alerts import AlertRaised
from contracts.commands import CampaignCommand, PauseCommand, SetBudgetCommand, UnpauseCommand
from contracts.envelope import Envelope
from contracts.messages import AlertRaisedMessage, CampaignCommandMessage
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
    command: PauseCommand | UnpauseCommand | SetBudgetCommand
    if action.kind in ("pause", "pause_for_today"):
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


def to_notification(
    decision: Decision, default_channels: Sequence[str], *, caused_by: Envelope | None = None
) -> Notification:
    notify = next((a for a in decision.actions if a.kind == "notify"), None)
    channels = tuple(dict.fromkeys(["log", *(notify.channels if notify else default_channels)]))
    alert = AlertRaised(
        severity="warning" if notify is not None else "info",
        code="rule_acted",
        summary=decision.explanation,
        service=SERVICE,
        subject=f"rule {decision.rule}, {decision.entity_level} {decision.entity_id} ({decision.account_id})",
    )
    return Notification(AlertRaisedMessage.new(alert, caused_by=caused_by), channels,
                        notify.email_to if notify else ())
