"""The rules engine's orchestration of one message: an evaluation run, a CRM outcome, a command result, an alert.

An evaluation run loads the rules, builds the snapshot and state from PostgreSQL, evaluates, then in one
transaction records the audit (`rule_runs`, `rule_decisions`, `rule_actions`) and enqueues the commands and
notifications (outbox). Only `acted` decisions leave the service (`messages.py` says what they become); dry-run
rules and RULES_DRY_RUN publish nothing, their `would_act` decisions are in the audit.
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
from contracts.envelope import Envelope
from contracts.messages import (
    AlertRaisedMessage,
    CampaignCommandMessage,
    CommandResultMessage,
    ConversionRequestedMessage,
)
from services.rules_engine import store
from services.rules_engine.logic import evaluate
from services.rules_engine.messages import SERVICE, Notification, to_command, to_notification
from services.rules_engine.model import Decision, EngineSettings
from services.rules_engine.notify import CHANNELS, ChannelError, Notifier, raise_for_failed_channels
from services.rules_engine.rules import Rule, RuleProblem, check_rules, load_rules
from services.rules_engine.settings import RulesSettings
from shared.leads import OutcomeIdentifiers, match_lead
from shared.messaging import claim
from shared.outbox import enqueue
from shared.retries import is_database_unavailable
from shared.settings import BudgetGuardrailSettings

logger = logging.getLogger(__name__)

Trigger = Literal["insights_updated", "schedule", "manual"]


@dataclass
class RunResult:
    run_id: uuid.UUID
    accounts: list[str]
    decisions: list[Decision]
    commands: list[CampaignCommandMessage] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    problems: list[RuleProblem] = field(default_factory=list)
    skipped_duplicate: bool = False


class Worker:
    """Evaluates the rules against stored data and records and sends what they decided; records what came back
    (CRM outcomes, command results) and delivers notifications.

    Args:
        pool: the service's database pool.
        settings: the RULES_* block.
        limits: the budget guardrails shared with the executor (BUDGET_*).
        notifier: delivers notifications.
        engine_settings: engine-wide limits (tests shorten `max_data_age`, etc.).
        only_accounts: restrict scheduled runs to these accounts (META_AD_ACCOUNT_ID); empty = every stored one.
    """

    def __init__(self, pool: asyncpg.Pool, settings: RulesSettings, limits: BudgetGuardrailSettings,
                 notifier: Notifier, *, engine_settings: EngineSettings | None = None,
                 only_accounts: Sequence[str] = ()) -> None:
        self.pool = pool
        self.settings = settings
        self.limits = limits
        self.notifier = notifier
        self.engine_settings = engine_settings or EngineSettings(
            dry_run=settings.dry_run, budget_changes_per_hour=limits.max_changes_per_hour
        )
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
            snap = await store.load_snapshot(
                conn, enabled, targets, now, lookback_cap=self.settings.lookback_days,
                qualified_events=self.settings.qualified_events, signed_events=self.settings.signed_events,
                extra_levels=await store.pending_resume_levels(conn, now),
            )
            state = await store.load_state(conn, targets, now, ceiling_major=self.limits.daily_ceiling)
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

    async def next_wake(self, interval: float) -> float:
        """Seconds until the next scheduled run: the interval, or sooner when a pause-for-today ends (at the
        account's midnight) before it."""
        async with self.pool.acquire() as conn:
            resume = await store.next_resume_at(conn, datetime.now(UTC))
        if resume is None:
            return interval
        return min(interval, max(1.0, (resume - datetime.now(UTC)).total_seconds() + 1.0))

    async def record_crm_outcome(self, message: ConversionRequestedMessage, *, claim_as: str) -> None:
        """Keep a CRM outcome attributable to an ad (qualified lead, signed case) for the CRM metrics."""
        event = message.payload
        lead_id = event.user.lead_id
        if not lead_id:  # the CRM sent no lead id: the lead its contact id, e-mail or phone belongs to
            user = event.user
            lead, _ = await match_lead(self.pool, OutcomeIdentifiers(
                crm_reference=user.external_id, email=user.email, phone=user.phone, country=user.country))
            if lead is None:
                return  # not attributable to an ad: nothing for the rules (capi_sender counts it as unmatched)
            lead_id = lead.leadgen_id
        value = event.custom_data.value if event.custom_data else None
        currency = event.custom_data.currency if event.custom_data else None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim(conn, claim_as, message.message_id):
                return
            new = await store.record_crm_outcome(
                conn, lead_id=lead_id, event_name=event.event_name,
                event_time=datetime.fromtimestamp(event.event_time, UTC), value=value, currency=currency,
                message_id=message.message_id,
            )
        logger.info("CRM outcome %s %s", event.event_name, "recorded" if new else "already known",
                    extra={"message_id": str(message.message_id), "event_name": event.event_name})

    async def record_command_result(self, message: CommandResultMessage, *, claim_as: str) -> None:
        """Record the executor's result of one of our commands and count it in the rule's circuit breaker."""
        result = message.payload
        if result.status == "dry_run":
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim(conn, claim_as, message.message_id):
                return
            action = await store.action_for_command(conn, result.command_id)
            if action is None:
                return  # a command some other system sent
            await store.record_result(conn, result.command_id, result.status, result.detail, message.occurred_at)
            ok = result.status == "ok"
            detail = result.detail or (result.meta_error.message if result.meta_error else "") or result.status
            failures, opened = await store.update_breaker(
                conn, action["rule"], ok=ok, detail=f"{result.status}: {detail}",
                threshold=self.engine_settings.circuit_breaker_failures,
            )
            if opened:
                await enqueue(conn, AlertRaisedMessage.new(AlertRaised(
                    severity="critical", code="rule_circuit_open", service=SERVICE, subject=f"rule {action['rule']}",
                    summary=(f"Rule '{action['rule']}' is suspended after {failures} consecutive failed commands; "
                             f"last: {result.status} ({result.guardrail or 'meta'})."),
                    fix=f"Check the rule and the executor's results, then run `leadwire rules reset {action['rule']}`.",
                ), caused_by=message))
        log = logger.info if ok else logger.warning
        log("command %s of rule %s: %s (%d consecutive failures)", result.command_id, action["rule"], result.status,
            failures, extra={"command_id": str(result.command_id), "rule": action["rule"]})

    async def deliver_alert(self, message: AlertRaisedMessage) -> None:
        """Send an alert on its channels, skipping those that already have it; raise if any channel failed.

        An incident alert (a dependency down) goes out even when the database is unreachable (it may be the
        outage it announces): on every channel, without the record of channels done (a retry may repeat one).
        """
        recorded = True
        try:
            async with self.pool.acquire() as conn:
                route = await store.notification_route(conn, message.message_id)
                done = await store.delivered_channels(conn, message.message_id)
        except Exception as exc:
            if message.payload.incident is None or not is_database_unavailable(exc):
                raise
            logger.warning("database unreachable: incident alert sent without its delivery record",
                           extra={"message_id": str(message.message_id)})
            route, done, recorded = None, set(), False
        channels = list(route["channels"]) if route is not None else list(CHANNELS)
        email_to = list(route["email_to"]) if route is not None else []
        errors: list[ChannelError] = []
        for channel in self.notifier.configured(channels):
            if channel in done:
                continue
            try:
                await self.notifier.send(channel, message.payload, email_to=email_to)
            except ChannelError as exc:
                logger.warning("notification channel failed: %s", exc, extra={"message_id": str(message.message_id)})
                errors.append(exc)
                continue
            if recorded:
                async with self.pool.acquire() as conn:
                    await store.mark_delivered(conn, message.message_id, channel)
        raise_for_failed_channels(errors)
