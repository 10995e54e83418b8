"""pause / unpause / archive / delete: set an object's status (delete is a DELETE call)."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import CommandOutcome, refused
from services.campaign_executor.meta_reads import call


async def apply_status(
    ctx: CommandContext, conn: asyncpg.Connection, command: Any, plan: dict[str, Any] | None
) -> CommandOutcome:
    obj, currency = await ctx.reads.read_object(command.object_id, command.account_id, command.level)
    target = logic.STATUS_OF_KIND[command.kind]
    before = {"status": obj.status, "effective_status": obj.effective_status}
    common = {"before": before, "currency": currency, "account_id": obj.account_id}
    if obj.status == target:
        return CommandOutcome("ok", f"already {target}: nothing to do", after={"status": target}, **common)
    if plan is not None:
        # An earlier attempt did not finish: the status Meta shows now is neither its target (checked above) nor,
        # if someone changed it since, the one it started from: abandon. Else decide again with every guardrail.
        elsewhere = logic.changed_elsewhere("status", plan, obj.status)
        if elsewhere:
            return refused(elsewhere, **common)
    refusal = logic.object_status_refusal(command.kind, obj)
    if refusal and not command.force:
        return refused(refusal, **common)
    if command.kind == "unpause" and obj.daily_budget is not None:
        # The account's ceiling is a hard limit: `force` does not pass it.
        total = await ctx.reads.account_daily_total(obj.account_id)
        first_total = await store.first_seen_daily(conn, key=obj.account_id, scope="account",
                                                   account_id=obj.account_id, currency=currency, now_minor=total)
        ceiling, basis = logic.account_ceiling(ctx.limits, currency, first_total, ctx.ceilings.get(obj.account_id))
        hard = logic.unpause_ceiling_refusal(obj, total, currency, ceiling, basis)
        if hard:
            return refused(hard, **common)
    if command.dry_run:
        outcome = CommandOutcome("dry_run", f"would set status {obj.status} -> {target}", after={"status": target},
                                 **common)
    else:
        await store.mark_applying(conn, command.command_id, {"status": target, "from": obj.status})
        if command.kind == "delete":
            await call(ctx.graph.delete(command.object_id, max_wait=ctx.max_wait))
        else:
            await call(ctx.graph.post(command.object_id, {"status": target}, max_wait=ctx.max_wait,
                                      idempotent=True))
        outcome = CommandOutcome("ok", f"status {obj.status} -> {target}", after={"status": target}, **common)
    return logic.forced(outcome, command.reason) if command.force else outcome
