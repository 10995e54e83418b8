"""set_budget / change_budget: one absolute budget, decided once (the plan), within the budget guardrails."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.commands import ChangeBudgetCommand, SetBudgetCommand
from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import BudgetFacts, CommandOutcome, ObjectState, Refusal, refused
from services.campaign_executor.meta_reads import call
from shared.budget_guardrails import daily_ceiling_minor
from shared.money import format_money


async def apply_budget(
    ctx: CommandContext,
    conn: asyncpg.Connection,
    command: SetBudgetCommand | ChangeBudgetCommand,
    plan: dict[str, Any] | None,
) -> CommandOutcome:
    obj, currency = await ctx.reads.read_object(command.object_id, command.account_id, command.level)
    field_name = f"{command.budget}_budget"
    current = obj.budget(command.budget)
    common = {"currency": currency, "account_id": obj.account_id,
              "before": {field_name: current, "status": obj.status}}
    if plan is not None:
        # An earlier attempt decided and may have applied it: finish that, do not decide again.
        target = int(plan[field_name])
        if current != target:
            await _set_budget(ctx, command.object_id, field_name, target)
        return CommandOutcome("ok", f"{field_name} -> {format_money(target, currency)} (completed an interrupted "
                                    "attempt)", after={field_name: target}, **common)
    refusal = logic.object_status_refusal(command.kind, obj)
    if refusal and not command.force:
        return refused(refusal, **common)
    if current is None:
        return refused(Refusal("no_budget", f"object has no {field_name} (budget lives elsewhere)"), **common)
    target = logic.budget_target(command, current)
    change = f"{field_name} {format_money(current, currency)} -> {format_money(target, currency)}"
    if target == current:
        return CommandOutcome("ok", f"{change}: nothing to do", after={field_name: target}, **common)
    if not command.force:
        facts = await _budget_facts(ctx, conn, command, obj, currency, current, target)
        refusal = logic.budget_refusal(command, facts, ctx.limits)
        if refusal:
            return refused(refusal, after={field_name: target}, **common)
    if command.dry_run:
        return CommandOutcome("dry_run", f"would set {change}", after={field_name: target}, **common)
    await store.mark_applying(conn, command.command_id, {field_name: target, "from": current})
    await _set_budget(ctx, command.object_id, field_name, target)
    return CommandOutcome("ok", change, after={field_name: target}, **common)


async def _budget_facts(
    ctx: CommandContext,
    conn: asyncpg.Connection,
    command: SetBudgetCommand | ChangeBudgetCommand,
    obj: ObjectState,
    currency: str,
    current: int,
    target: int,
) -> BudgetFacts:
    """What the guardrails need, read only when the change could break them (spend for cuts, totals for raises)."""
    ceiling = daily_ceiling_minor(ctx.limits.daily_ceiling, currency)
    counts_toward_ceiling = ceiling is not None and target > current and command.budget == "daily"
    return BudgetFacts(
        current=current, target=target, currency=currency,
        changes_last_hour=await store.budget_changes_last_hour(conn, command.object_id, command.command_id),
        spent=await ctx.reads.spent(command.object_id, command.budget, currency) if target < current else None,
        account_daily_total=await ctx.reads.account_daily_total(obj.account_id) if counts_toward_ceiling else None,
        ceiling=ceiling,
    )


async def _set_budget(ctx: CommandContext, object_id: str, field_name: str, target: int) -> None:
    # Setting an absolute value is idempotent, so a network error after sending may be retried.
    await call(ctx.graph.post(object_id, {field_name: target}, max_wait=ctx.max_wait, idempotent=True))
