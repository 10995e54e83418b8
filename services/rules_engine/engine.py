"""One evaluation run: load rules, build the snapshot and state from PostgreSQL, evaluate, then in one transaction
record the audit (`rule_runs`, `rule_decisions`, `rule_actions`) and enqueue the commands and notifications (outbox).

Only `acted` decisions leave the service: each mutating action becomes a `CampaignCommand` whose `command_id` is the
action's stable id, and each acting decision becomes a notification (an `AlertRaised` the service itself delivers,
on the channels of the rule's `notify` action, or RULES_NOTIFY_CHANNELS when it has none). Dry-run rules and
RULES_DRY_RUN publish nothing; their `would_act` decisions are in the audit.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from contracts.alerts import AlertRaised
from contracts.commands import CampaignCommand, PauseCommand, SetBudgetCommand, UnpauseCommand
from contracts.envelope import Envelope
from contracts.messages import AlertRaisedMessage, CampaignCommandMessage
from services.rules_engine import snapshot as snapshots
from services.rules_engine import store
from services.rules_engine.logic import evaluate
from services.rules_engine.model import Action, Decision, EngineSettings
from services.rules_engine.rules import Rule, RuleProblem, check_rules, load_rules
from services.rules_engine.settings import RulesSettings
from shared.messaging import claim
from shared.outbox import enqueue

logger = logging.getLogger(__name__)

SERVICE = "rules_engine"
Trigger = Literal["insights_updated", "schedule", "manual"]


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


@dataclass
class RunResult:
    run_id: uuid.UUID
    accounts: list[str]
    decisions: list[Decision]
    commands: list[CampaignCommandMessage] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    skipped_duplicate: bool = False


class RulesEngine:
    """Evaluates the rules against stored data and records and sends what they decided.

    Args:
        pool: the service's database pool.
        settings: the RULES_* block.
        engine_settings: engine-wide limits (tests shorten `max_data_age`, etc.).
        only_accounts: restrict scheduled runs to these accounts (META_AD_ACCOUNT_ID); empty = every stored one.
    """

    def __init__(self, pool: asyncpg.Pool, settings: RulesSettings, *, engine_settings: EngineSettings | None = None,
                 only_accounts: Sequence[str] = ()) -> None:
        self.pool = pool
        self.settings = settings
        self.engine_settings = engine_settings or EngineSettings(dry_run=settings.dry_run)
        self.only_accounts = list(only_accounts)
        self._alerted_problems: str | None = None

    def load_rules(self) -> tuple[list[Rule], list[RuleProblem]]:
        """Rules from RULES_DIR; broken files are skipped (never all rules: budget protection must keep running).

        Read on every run, so an edited rule file takes effect without a restart.
        """
        problems = check_rules(self.settings.dir)
        return load_rules(self.settings.dir, strict=False), problems

    async def run(
        self,
        *,
        trigger: Trigger,
        accounts: Sequence[str] | None = None,
        caused_by: Envelope | None = None,
        claim_as: str | None = None,
        now: datetime | None = None,
    ) -> RunResult:
        """Evaluate ``accounts`` (default: every known account) and record and enqueue the outcome atomically.

        With ``claim_as``, ``caused_by``'s message id is claimed for that consumer in the same transaction, so a
        redelivered trigger does not evaluate twice.
        """
        started = time.perf_counter()
        rules, problems = self.load_rules()
        enabled = [r for r in rules if r.enabled]
        run_id = uuid.uuid4()
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            if (claim_as is not None and caused_by is not None
                    and not await claim(conn, claim_as, caused_by.message_id)):
                logger.info("trigger %s already evaluated", caused_by.message_id,
                            extra={"message_id": str(caused_by.message_id)})
                return RunResult(run_id, [], [], skipped_duplicate=True)
            await store.lock_evaluation(conn)
            targets = await store.known_accounts(conn, accounts if accounts is not None else self.only_accounts)
            snap = await snapshots.load_snapshot(
                conn, enabled, targets, now, lookback_cap=self.settings.lookback_days,
                qualified_events=self.settings.qualified_events, signed_events=self.settings.signed_events,
                extra_levels=await store.pending_resume_levels(conn, now),
            )
            state = await store.load_state(conn, targets, now, ceiling_major=self.settings.account_daily_budget_ceiling)
            decisions = evaluate(enabled, snap, state, now, self.engine_settings) if targets else []
            result = RunResult(run_id, targets, decisions, problems=problems)
            await store.record_run(
                conn, run_id=run_id, trigger=trigger, trigger_message_id=caused_by.message_id if caused_by else None,
                accounts=targets, started_at=now, rules=[r.name for r in enabled], rule_problems=len(problems),
                entities=len(snap.entities), decisions=decisions,
            )
            await store.record_decisions(conn, run_id, decisions)
            for decision in decisions:
                if decision.outcome == "acted":
                    await self._act(conn, run_id, decision, result, caused_by)
            await self._alert_problems(conn, problems)
        logger.info(
            "rules run %s (%s): %d accounts, %d entities, %d decisions, %d commands, %d notifications in %.0f ms",
            run_id, trigger, len(targets), len(snap.entities), len(decisions), len(result.commands),
            len(result.notifications), (time.perf_counter() - started) * 1000,
            extra={"run_id": str(run_id), "trigger": trigger},
        )
        return result

    async def _act(
        self, conn: asyncpg.Connection, run_id: uuid.UUID, decision: Decision, result: RunResult,
        caused_by: Envelope | None,
    ) -> None:
        notification = to_notification(decision, self.settings.notify_channels, caused_by=caused_by)
        for index, action in enumerate(decision.actions):
            command = to_command(action, caused_by=caused_by)
            message_id = command.message_id if command is not None else notification.alert.message_id
            if not await store.record_action(conn, run_id, decision, index=index, message_id=message_id):
                logger.warning("action %s already recorded; not sent again", action.command_id,
                               extra={"command_id": str(action.command_id), "rule": action.rule})
                continue
            if command is not None:
                await enqueue(conn, command)
                result.commands.append(command)
        await store.record_notification(conn, notification.alert.message_id, notification.channels,
                                        notification.email_to)
        await enqueue(conn, notification.alert)
        result.notifications.append(notification)

    async def _alert_problems(self, conn: asyncpg.Connection, problems: Sequence[RuleProblem]) -> None:
        """Alert once per distinct set of rule-file problems (per process), not on every run."""
        digest = hashlib.sha256("\n".join(sorted(str(p) for p in problems)).encode()).hexdigest() if problems else None
        if digest == self._alerted_problems:
            return
        self._alerted_problems = digest
        if not problems:
            return
        files = sorted({p.file for p in problems})
        alert = AlertRaised(
            severity="critical",
            code="rules_invalid",
            summary=(f"{len(problems)} problem(s) in rule file(s) {', '.join(files)}: those files are skipped, the "
                     f"other rules still run. First: {problems[0]}"),
            service=SERVICE,
            subject=str(self.settings.dir),
            fix="Run `leadwire rules check <RULES_DIR>` and fix each file:line: field.",
        )
        message = AlertRaisedMessage.new(alert)
        await store.record_notification(conn, message.message_id, ("log", "slack", "email"), ())
        await enqueue(conn, message)
