"""Apply one CampaignCommand to Meta safely: record, lock, re-read, check guardrails, act, record the outcome.

Exactly-once effect per message_id (the envelope's idempotency key: a message id already recorded for one command is
never acted on for another) and per command_id:
* the command's row is written first; its final status, the message claim and the CommandResult (outbox) are
  written in one transaction at the end, only if the row has no outcome yet;
* before touching Meta the attempt commits a `plan` (status `applying`) with the absolute values it will set
  and the value it started from. Every later attempt (after a crash, a throttle, Meta's "too many budget
  changes") re-reads the object: Meta showing the plan's target means it was applied (a `+15 %` is never
  applied on top of itself); showing the starting value means it was not, and the change is decided again
  with every guardrail, hard and soft, against what Meta says now; showing anything else means someone changed
  the object elsewhere (Ads Manager) since: the command is abandoned (`refused`, guardrail `changed_elsewhere`),
  never re-applied from the old plan;
* commands on the same object are serialized by an advisory lock, so two deliveries never race.

The work per command family is in `commands/`; what is read from Meta first is in `meta_reads.py`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg

from contracts.commands import (
    CommandResult,
    CreateCampaignCommand,
    CreateLeadFormCommand,
    RebalanceBudgetsCommand,
    RotateCreativeCommand,
    SyncAudienceCommand,
)
from contracts.messages import CampaignCommandMessage
from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.commands.audience_sync import apply_sync
from services.campaign_executor.commands.budget import apply_budget
from services.campaign_executor.commands.create import apply_create
from services.campaign_executor.commands.lead_form import apply_lead_form
from services.campaign_executor.commands.rebalance import apply_rebalance
from services.campaign_executor.commands.rotation import apply_rotation
from services.campaign_executor.commands.status import apply_status
from services.campaign_executor.logic import CommandFailed, CommandOutcome, audit_payload, lock_key, object_id_of
from shared.graph.errors import AuthError, ThrottledError
from shared.messaging import PermanentError, RetryLater

logger = logging.getLogger(__name__)

THROTTLE_FALLBACK_SECONDS = 60.0
BUDGET_BLOCK_MARGIN_SECONDS = 60.0


class Worker:
    """Runs commands. One per service process; stateless apart from the reads' currency cache."""

    def __init__(self, pool: asyncpg.Pool, context: CommandContext, *, consumer_name: str) -> None:
        self.pool = pool
        self.context = context
        self.consumer_name = consumer_name

    async def execute(self, message: CampaignCommandMessage) -> CommandResult | None:
        """Handle one delivery. Returns the result recorded now, or None for a command already finished.

        Raises:
            RetryLater: Meta throttled us, or another worker holds the object.
            PermanentError: our token is broken (parked for replay once fixed).
            TransientError and others: retried with backoff by the consumer middleware.
        """
        command = message.payload.root
        ids = {"command_id": str(command.command_id), "kind": command.kind, "message_id": str(message.message_id)}
        async with (
            self.pool.acquire() as conn,
            store.object_lock(conn, f"message:{message.message_id}"),  # always first, then the object: no cycles
            store.object_lock(conn, lock_key(command)),
        ):
            other = await store.message_taken(conn, message.message_id, command.command_id)
            if other is not None:
                logger.warning("message %s already carried command %s: command %s not acted on (the message id is "
                               "the idempotency key)", message.message_id, other, command.command_id, extra=ids)
                return None
            row = await store.begin(
                conn, command_id=command.command_id, message_id=message.message_id, kind=command.kind,
                account_id=getattr(command, "account_id", None), object_id=object_id_of(command),
                level=getattr(command, "level", None), dry_run=command.dry_run, force=command.force,
                requested_by=command.requested_by, reason=command.reason, payload=audit_payload(command),
            )
            if row["status"] in store.FINAL:
                logger.info("command %s already %s: not acting again", command.command_id, row["status"],
                            extra=ids)
                return None
            try:
                outcome = await self._dispatch(conn, command, row)
            except ThrottledError as exc:
                delay = exc.retry_after if exc.retry_after is not None else THROTTLE_FALLBACK_SECONDS
                if (exc.scope or "").startswith("action:budget "):
                    # Meta's budget-change block: retry once it is surely over (ours is recorded a moment later
                    # than Meta's started), so the retry is not refused by its own record of the block.
                    delay += BUDGET_BLOCK_MARGIN_SECONDS
                raise RetryLater(f"Meta throttled ({exc.kind}, code={exc.code}/{exc.subcode})", delay=delay) from None
            except AuthError as exc:
                raise PermanentError(f"Meta token rejected (code={exc.code}/{exc.subcode}): fix and replay") from None
            except CommandFailed as exc:
                outcome = CommandOutcome("failed", exc.detail or exc.error.message, error=exc.error, **exc.extra)
            result = CommandResult(
                command_id=command.command_id, kind=command.kind, status=outcome.status, detail=outcome.detail,
                guardrail=outcome.guardrail, meta_error=logic.meta_error_info(outcome.error),
                object_id=object_id_of(command),
                account_id=outcome.account_id or getattr(command, "account_id", None), currency=outcome.currency,
                created_ids=outcome.created_ids, rolled_back=outcome.rolled_back, before=outcome.before,
                after=outcome.after, counts=outcome.counts, forced=outcome.forced,
            )
            if not await store.finish(conn, consumer_name=self.consumer_name, message=message, result=result):
                return None
            logger.info("command %s %s: %s", command.command_id, result.status, result.detail, extra=ids)
            return result

    async def _dispatch(self, conn: asyncpg.Connection, command: Any, row: asyncpg.Record) -> CommandOutcome:
        """The command family's function, with the plan an interrupted earlier attempt committed (if any)."""
        plan = _json(row["plan"])
        if command.kind in logic.STATUS_OF_KIND:
            return await apply_status(self.context, conn, command, plan)
        if command.kind in logic.BUDGET_KINDS:
            return await apply_budget(self.context, conn, command, plan)
        if isinstance(command, CreateCampaignCommand):
            return await apply_create(self.context, conn, command, plan, row["applying_at"])
        if isinstance(command, SyncAudienceCommand):
            return await apply_sync(self.context, conn, command)
        if isinstance(command, RotateCreativeCommand):
            return await apply_rotation(self.context, conn, command, plan)
        if isinstance(command, CreateLeadFormCommand):
            return await apply_lead_form(self.context, conn, command)
        if isinstance(command, RebalanceBudgetsCommand):
            return await apply_rebalance(self.context, conn, command, plan)
        raise PermanentError(f"unsupported command kind {command.kind}")


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
