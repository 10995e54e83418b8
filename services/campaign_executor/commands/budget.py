"""set_budget / change_budget: one absolute budget, decided once (the plan), within the budget guardrails.

The hard limits (`logic.hard_budget_refusal`) are checked on every decision, `force` or not; `force` skips only
the soft guards (`logic.budget_refusal`), and a forced change is announced as forced. A retried attempt decides
again (every guardrail, against Meta's value now) unless Meta shows its target (done) or a value changed elsewhere
(abandoned: `changed_elsewhere`). Meta's 613/1487632 is recorded (`meta_budget_blocks`) and counts as the hourly
limit reached until Meta's block ends.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.commands import ChangeBudgetCommand, SetBudgetCommand
from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.logic import BudgetFacts, CommandOutcome, ObjectState, Refusal, refused
from services.campaign_executor.meta_reads import call
from shared.graph.errors import ThrottledError
from shared.graph.usage import Scope, budget_edit_key
from shared.money import format_money

BUDGET_BLOCK_SECONDS = 3600.0  # Meta blocks an ad set's budget changes for an hour after 613/1487632


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
    # Recorded the first time leadwire reads the object, whatever becomes of this command.
    first_seen = (None if obj.daily_budget is None else
                  await record_first_seen(conn, obj.object_id, "object", obj.account_id, currency, obj.daily_budget))
    if plan is not None and field_name in plan:
        # An earlier attempt decided and may have applied it. Meta showing its target: it did, report that.
        # Showing anything but the value it started from: changed elsewhere since, abandon. Else it did not
        # apply: decide again below from what Meta says now, with every guardrail (the same target, re-checked).
        target = int(plan[field_name])
        if current == target:
            return CommandOutcome("ok", f"{field_name} -> {format_money(target, currency)} (an interrupted "
                                        "attempt had applied it)", after={field_name: target}, **common)
        elsewhere = logic.changed_elsewhere(field_name, plan, current, currency)
        if elsewhere:
            return refused(elsewhere, **common)
    refusal = logic.object_status_refusal(command.kind, obj)
    if refusal and not command.force:
        return refused(refusal, **common)
    if current is None:
        return refused(Refusal("no_budget", f"object has no {field_name} (budget lives elsewhere)"), **common)
    target = logic.budget_target(command, current)
    change = f"{field_name} {format_money(current, currency)} -> {format_money(target, currency)}"
    if target == current:
        return CommandOutcome("ok", f"{change}: nothing to do", after={field_name: target}, **common)
    facts = await _budget_facts(ctx, conn, command, obj, currency, current, target, first_seen)
    refusal = logic.hard_budget_refusal(command, facts, ctx.limits)
    if refusal is None and not command.force:
        refusal = logic.budget_refusal(command, facts, ctx.limits)
    if refusal:
        return refused(refusal, after={field_name: target}, **common)
    if command.dry_run:
        outcome = CommandOutcome("dry_run", f"would set {change}", after={field_name: target}, **common)
    else:
        await store.mark_applying(conn, command.command_id, {field_name: target, "from": current})
        await set_budget(ctx, conn, command.object_id, command.command_id, obj.account_id, field_name, target)
        outcome = CommandOutcome("ok", change, after={field_name: target}, **common)
    return logic.forced(outcome, command.reason) if command.force else outcome


async def _budget_facts(
    ctx: CommandContext,
    conn: asyncpg.Connection,
    command: SetBudgetCommand | ChangeBudgetCommand,
    obj: ObjectState,
    currency: str,
    current: int,
    target: int,
    first_seen: int | None,
) -> BudgetFacts:
    """What the guardrails need, read only when the change could break them (spend for cuts, the account's
    totals, the first-seen budgets and the week's increases for raises)."""
    raise_ = target > current
    ceiling, basis, total = None, "", None
    if raise_ and command.budget == "daily":
        total = await ctx.reads.account_daily_total(obj.account_id)
        first_total = await record_first_seen(conn, obj.account_id, "account", obj.account_id, currency, total)
        ceiling, basis = logic.account_ceiling(ctx.limits, currency, first_total, ctx.ceilings.get(obj.account_id))
    return BudgetFacts(
        current=current, target=target, currency=currency,
        changes_last_hour=await store.budget_changes_last_hour(conn, command.object_id, command.command_id),
        spent=await ctx.reads.spent(command.object_id, command.budget, currency) if target < current else None,
        account_daily_total=total, ceiling=ceiling, ceiling_basis=basis,
        first_seen=first_seen,
        increases_last_week=await store.budget_increases_last_week(conn, command.object_id, command.command_id)
        if raise_ else 0,
        meta_blocked_until=await store.meta_budget_block(conn, command.object_id),
    )


async def record_first_seen(
    conn: asyncpg.Connection, key: str, scope: str, account_id: str, currency: str, now_minor: int | None
) -> int:
    return await store.first_seen_daily(conn, key=key, scope=scope, account_id=account_id or None,
                                        currency=currency, now_minor=now_minor or 0)


async def set_budget(
    ctx: CommandContext,
    conn: asyncpg.Connection,
    object_id: str,
    command_id: object,
    account_id: str,
    field_name: str,
    target: int,
) -> None:
    """Set one object's budget at Meta (also a rebalance's moves); Meta's hourly block is recorded."""
    # Setting an absolute value is idempotent, so a network error after sending may be retried.
    try:
        await call(ctx.graph.post(object_id, {field_name: target}, max_wait=ctx.max_wait, idempotent=True,
                                  scope=Scope.key(budget_edit_key(object_id))))
    except ThrottledError as exc:
        if logic.is_budget_block(exc):
            # Meta's count (Ads Manager edits included) says the hourly limit is reached: remember it, so no
            # budget change on the object is sent before the block ends. The command is retried later (the
            # worker), and that attempt re-reads the object and re-checks everything.
            await store.record_meta_budget_block(
                conn, object_id=object_id, account_id=account_id or None, command_id=command_id,
                seconds=exc.retry_after or BUDGET_BLOCK_SECONDS,
            )
        raise
