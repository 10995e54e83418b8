"""The rules engine's orchestration of one message: an evaluation run, a CRM outcome, a command result, an alert.

An evaluation run loads the rules, builds the snapshot and state from PostgreSQL, evaluates, then in one
transaction records the audit (`rule_runs`, `rule_decisions`, `rule_actions`) and enqueues the commands and
notifications (outbox). Only `acted` decisions send commands (`messages.py` says what they become); dry-run
rules and RULES_DRY_RUN publish nothing, their `would_act` decisions are in the audit.

Consent: a rule acts only once an operator enabled it (`RuleConsentChanged`, stored in `rule_consent`); until then
it runs in shadow mode: its decisions are `would_act` with `shadow`, announced as "Would pause ..." (once per
rule × object and cooldown), and nothing goes to Meta. An operator may approve one shadow decision
(`RuleDecisionReviewed`): the rule is evaluated again for that object, as if enabled, through every guardrail.

Announcements follow results: an acted decision's notification waits for the executor's `CommandResult`.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import asyncpg

from contracts.alerts import AlertRaised
from contracts.envelope import Envelope
from contracts.messages import (
    AlertRaisedMessage,
    CampaignCommandMessage,
    CommandResultMessage,
    ConversionRequestedMessage,
    RuleConsentChangedMessage,
    RuleDecisionReviewedMessage,
)
from services.rules_engine import store
from services.rules_engine.account_rules import load_account_rules
from services.rules_engine.logic import evaluate
from services.rules_engine.messages import (
    SERVICE,
    Notification,
    result_notification,
    route,
    shadow_notification,
    to_command,
    to_notification,
)
from services.rules_engine.model import Decision, EngineSettings
from services.rules_engine.notify import CHANNELS, ChannelError, Notifier, raise_for_failed_channels
from services.rules_engine.rebalance import approval_scope
from services.rules_engine.rule_files import RuleProblem
from services.rules_engine.rules import Rule
from services.rules_engine.settings import RulesSettings
from shared.leads import OutcomeIdentifiers, match_lead
from shared.messaging import claim
from shared.outbox import enqueue
from shared.retries import is_database_unavailable
from shared.settings import BudgetGuardrailSettings

logger = logging.getLogger(__name__)

Trigger = Literal["insights_updated", "schedule", "manual", "approval", "consent"]


@dataclass(frozen=True)
class Approval:
    """An operator's approval of a shadow decision: evaluate its rule for its object as if the rule were enabled."""

    decision_id: int
    by: str
    message: Envelope


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
        rules_dirs: accounts judged by rules of their own directory instead of RULES_DIR (LEADWIRE_ACCOUNTS_FILE).
        ceilings: accounts' own daily budget ceilings (major units) instead of BUDGET_DAILY_CEILING (same file).
    """

    def __init__(self, pool: asyncpg.Pool, settings: RulesSettings, limits: BudgetGuardrailSettings,
                 notifier: Notifier, *, engine_settings: EngineSettings | None = None,
                 only_accounts: Sequence[str] = (), reminder_seconds: float = 3600.0,
                 rules_dirs: Mapping[str, Path] | None = None, ceilings: Mapping[str, float] | None = None) -> None:
        self.pool = pool
        self.reminder_seconds = reminder_seconds
        self.settings = settings
        self.limits = limits
        self.notifier = notifier
        self.engine_settings = engine_settings or EngineSettings(
            dry_run=settings.dry_run, budget_changes_per_hour=limits.max_changes_per_hour,
            max_step_pct=limits.max_step_pct, max_multiple_of_first_seen=limits.max_multiple_of_first_seen,
            max_increases_per_week=limits.max_increases_per_week,
            currency_rates=settings.rates(),
        )
        self.only_accounts = list(only_accounts)
        self.rules_dirs = dict(rules_dirs or {})
        self.ceilings = dict(ceilings or {})
        self._alerted_problems: str | None = None

    def load_rules(self) -> tuple[list[Rule], list[RuleProblem]]:
        """Rules from RULES_DIR and each account's own directory (`account_rules`); broken files are skipped
        (never all rules: budget protection must keep running).

        Read on every run, so an edited rule file takes effect without a restart.
        """
        return load_account_rules(self.settings.dir, self.rules_dirs, self.only_accounts)

    async def run(
        self,
        *,
        trigger: Trigger,
        accounts: Sequence[str] | None = None,
        caused_by: Envelope | None = None,
        claim_as: str | None = None,
        now: datetime | None = None,
        approval: Approval | None = None,
    ) -> RunResult:
        """Evaluate ``accounts`` (default: every known account) and record and enqueue the outcome atomically.

        With ``claim_as``, ``caused_by``'s message id is claimed for that consumer in the same transaction, so a
        redelivered trigger does not evaluate twice. With ``approval``, only the approved decision's rule and
        object are evaluated, the rule acting as if enabled, and the verdict is recorded in the same transaction.
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
            approved: asyncpg.Record | None = None
            if approval is not None:
                approved = await self._check_approval(conn, approval, enabled)
                if approved is None:
                    return RunResult(run_id, [], [])
                rule = next(r for r in enabled if r.name == approved["rule"])
                enabled = [rule.model_copy(update={"scope": rule.scope.model_copy(
                    update=approval_scope(rule, approved["entity_id"]))})]
                accounts = [approved["account_id"]]
                problems = []
            targets = await store.known_accounts(conn, accounts if accounts is not None else self.only_accounts)
            snap = await store.load_snapshot(
                conn, enabled, targets, now, lookback_cap=self.settings.lookback_days,
                qualified_events=self.settings.qualified_events, signed_events=self.settings.signed_events,
                extra_levels=await store.pending_resume_levels(conn, now),
            )
            state = await store.load_state(conn, targets, now, ceiling_major=self.limits.daily_ceiling,
                                           account_ceilings=self.ceilings,
                                           first_seen_multiple=self.limits.max_multiple_of_first_seen)
            if approved is not None:
                state = replace(state, consented=(state.consented or frozenset()) | {approved["rule"]})
            decisions = evaluate(enabled, snap, state, now, self.engine_settings) if targets else []
            result = RunResult(run_id, targets, decisions, problems=problems)
            await store.record_run(
                conn, run_id=run_id, trigger=trigger, trigger_message_id=caused_by.message_id if caused_by else None,
                accounts=targets, started_at=now, rules=enabled, rule_problems=len(problems),
                entities=len(snap.entities), decisions=decisions,
            )
            announce = await self._shadows_to_announce(conn, enabled, decisions, now)
            ids = await store.record_decisions(conn, run_id, decisions, announced=announce)
            for index, decision_id in ids.items():
                notification = shadow_notification(decisions[index], decision_id, self.settings.notify_channels,
                                                   caused_by=caused_by)
                await self._enqueue_notification(conn, notification, result)
            for decision in decisions:
                if decision.outcome == "acted":
                    await self._act(conn, run_id, decision, result, caused_by)
            if approval is not None and approved is not None:
                await store.record_review(
                    conn, decision_id=approval.decision_id, verdict="approve", by=approval.by,
                    message_id=approval.message.message_id, run_id=run_id,
                    result=_approval_result(decisions, approved["entity_id"]),
                )
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
        """Record the decision's actions and enqueue its command; its announcement waits for the executor's result
        (a notify-only decision is announced now)."""
        commands = [to_command(action, caused_by=caused_by) for action in decision.actions]
        command_ids = [c.message_id for c in commands if c is not None]
        channels, email_to = route(decision, self.settings.notify_channels)
        notification = None if command_ids else to_notification(decision, self.settings.notify_channels,
                                                                caused_by=caused_by)
        for index, (action, command) in enumerate(zip(decision.actions, commands, strict=True)):
            # A notify action stands for the announcement: of the command's result, or sent now.
            message_id = command_ids[0] if command_ids else notification.alert.message_id  # type: ignore[union-attr]
            if not await store.record_action(conn, run_id, decision, index=index, message_id=message_id,
                                             announce_channels=channels if command is not None else None,
                                             announce_email_to=email_to):
                logger.warning("action %s already recorded; not sent again", action.command_id,
                               extra={"command_id": str(action.command_id), "rule": action.rule})
                return
            if command is not None:
                await enqueue(conn, command)
                result.commands.append(command)
        if notification is not None:
            await self._enqueue_notification(conn, notification, result)

    async def _enqueue_notification(self, conn: asyncpg.Connection, notification: Notification,
                                    result: RunResult | None = None) -> None:
        await store.record_notification(conn, notification.alert.message_id, notification.channels,
                                        notification.email_to)
        await enqueue(conn, notification.alert)
        if result is not None:
            result.notifications.append(notification)

    async def _shadows_to_announce(
        self, conn: asyncpg.Connection, rules: Sequence[Rule], decisions: Sequence[Decision], now: datetime
    ) -> set[int]:
        """Positions of the shadow decisions to announce: one per rule × object and the rule's cooldown."""
        shadows = [i for i, d in enumerate(decisions) if d.shadow]
        if not shadows:
            return set()
        cooldown = {r.name: timedelta(hours=r.guardrails.cooldown_hours) for r in rules}
        last = await store.last_shadow_announcements(
            conn, sorted({decisions[i].rule for i in shadows}), now - max(cooldown.values(), default=timedelta(0)))
        out = set()
        for i in shadows:
            d = decisions[i]
            before = last.get((d.rule, d.entity_id))
            if before is None or now - before >= cooldown.get(d.rule, timedelta(0)):
                out.add(i)
        return out

    async def _check_approval(
        self, conn: asyncpg.Connection, approval: Approval, rules: Sequence[Rule]
    ) -> asyncpg.Record | None:
        """The approved decision if it can be applied; otherwise records why not and returns None."""
        found = await store.decision(conn, approval.decision_id)
        if found is None:
            logger.warning("approval of unknown decision %s ignored", approval.decision_id)
            return None
        if await store.review_of(conn, approval.decision_id) is not None:
            logger.info("decision %s was reviewed already", approval.decision_id)
            return None
        why = None
        if not (found["outcome"] == "would_act" and found["shadow"]):
            why = "not applied: only a decision of a rule in shadow mode can be approved"
        elif not any(r.name == found["rule"] for r in rules):
            why = f"not applied: rule '{found['rule']}' is no longer in the rule files, or is disabled there"
        if why is not None:
            await store.record_review(conn, decision_id=approval.decision_id, verdict="approve", by=approval.by,
                                      message_id=approval.message.message_id, result=why)
            logger.info("approval of decision %s: %s", approval.decision_id, why)
            return None
        return found

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

    async def prune_decisions(self) -> int:
        """Delete skipped decisions older than RULES_SKIPPED_RETENTION_DAYS (the audit trail is kept); how many."""
        return await store.prune_skipped_decisions(self.pool, older_than_days=self.settings.skipped_retention_days)

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

    async def review_decision(self, message: RuleDecisionReviewedMessage, *, claim_as: str) -> None:
        """An operator's verdict on a shadow decision: reject records it; approve evaluates the rule again for that
        object as if enabled (every guardrail applies) and acts only if it still decides to."""
        review = message.payload
        if review.verdict == "approve":
            await self.run(trigger="approval", caused_by=message, claim_as=claim_as,
                           approval=Approval(review.decision_id, review.by, message))
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim(conn, claim_as, message.message_id):
                return
            found = await store.decision(conn, review.decision_id)
            if found is None or await store.review_of(conn, review.decision_id) is not None:
                return
            await store.record_review(conn, decision_id=review.decision_id, verdict="reject", by=review.by,
                                      message_id=message.message_id, result="rejected: nothing was sent")
        logger.info("decision %s rejected by %s", review.decision_id, review.by,
                    extra={"decision_id": review.decision_id})

    async def change_consent(self, message: RuleConsentChangedMessage, *, claim_as: str) -> bool:
        """Enable a rule (its decisions act on Meta from the next run) or put it back in shadow mode; announce it.
        Returns False for a message already applied."""
        change = message.payload
        known = {r.name for r in self.load_rules()[0]}
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim(conn, claim_as, message.message_id):
                return False
            await store.set_consent(conn, rule=change.rule, enabled=change.enabled, by=change.by, note=change.note,
                                    at=message.occurred_at, message_id=message.message_id)
            if change.enabled:
                summary = f"Rule '{change.rule}' enabled by {change.by}: its decisions now act on Meta."
            else:
                summary = (f"Rule '{change.rule}' put back in shadow mode by {change.by}: its decisions are "
                           "recorded and announced, nothing is sent to Meta.")
            if change.rule not in known:
                summary += f" (No rule named '{change.rule}' is in {self.settings.dir} now.)"
            alert = AlertRaisedMessage.new(AlertRaised(
                severity="warning" if change.enabled else "info", code="rule_consent_changed", summary=summary,
                service=SERVICE, subject=f"rule {change.rule}"), caused_by=message)
            await self._enqueue_notification(conn, Notification(alert, tuple(dict.fromkeys(
                ["log", *self.settings.notify_channels]))))
        logger.info("rule %s %s by %s", change.rule, "enabled" if change.enabled else "in shadow mode", change.by,
                    extra={"rule": change.rule})
        return True

    async def record_command_result(self, message: CommandResultMessage, *, claim_as: str) -> None:
        """Record the executor's result of one of our commands, announce the decision it belongs to (what was
        done, or what was attempted and why it failed) and count it in the rule's circuit breaker."""
        result = message.payload
        if result.status == "dry_run":
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim(conn, claim_as, message.message_id):
                return
            action = await store.action_for_command(conn, result.command_id)
            if action is None:
                return  # a command some other system sent
            await store.record_result(conn, result.command_id, result.status, result.detail, message.occurred_at,
                                      result.guardrail)
            announcement = result_notification(action, result, caused_by=message)
            if announcement is not None:
                await self._enqueue_notification(conn, announcement)
                await store.mark_announced(conn, result.command_id)
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

        An incident alert the same incident already had (another process of that service announcing the same
        outage, or one restarted mid-outage) is not sent again: one "opened", at most one reminder per
        ALERT_REMINDER_MINUTES, one "resolved" per incident (`incident_alerts`).

        An incident alert (a dependency down) goes out even when the database is unreachable (it may be the
        outage it announces): on every channel, without the record of channels done (a retry may repeat one).
        """
        recorded = True
        incident = message.payload.incident
        try:
            async with self.pool.acquire() as conn:
                if incident is not None and not await store.claim_incident_alert(
                    conn, f"{message.payload.service}|{incident.dependency}|{incident.kind}", incident.state,
                    incident.since, message.message_id, self.reminder_seconds,
                ):
                    logger.info("incident alert already sent by another process: %s %s of %s", incident.state,
                                incident.kind, incident.dependency, extra={"message_id": str(message.message_id)})
                    return
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


def _approval_result(decisions: Sequence[Decision], entity_id: str) -> str:
    """What came of an approval, in words: the evaluation's decision about the approved object."""
    found = next((d for d in decisions if d.entity_id == entity_id), None)
    if found is None:
        return "not applied: the rule no longer matches (or the object is gone or no longer in its scope)"
    if found.outcome == "acted":
        return f"applied: {found.explanation}"
    return f"not applied: {found.explanation}"
