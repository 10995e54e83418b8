"""rebalance_budgets: move daily budget between objects of one account so the total never exceeds the fixed total.

Order and what a failure leaves (issue 20):
* every object is locked (sorted, the same `object:<id>` locks single budget commands take) and re-read;
* first attempt: every object must show the budget the decision was based on, else nothing is applied
  (`changed_elsewhere`, `force` or not: the total is only fixed if the starting budgets are the ones summed); every
  move is checked as the single budget command it amounts to (hard limits always, soft ones unless `force`),
  increases against the account total as it will be after the decreases; any refusal = nothing applied;
* the plan is committed (`campaign_commands.plan` and one `budget_moves` row per object), then the decreases are
  applied, then the increases. A decrease that fails or is refused stops there: no increase is made (the total is
  left lower). An increase is re-checked against Meta's account total just before it is sent; one refused by a
  guardrail or by Meta is reported and skipped, leaving the total lower, never higher;
* a retry (after a crash or Meta's throttling) re-reads every object: those showing their target are done, those
  showing their starting budget are still to do (re-checked), anything else means someone changed it since: the
  rest is abandoned (`changed_elsewhere`), no increase is made.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import asyncpg

from contracts.commands import BudgetMove, RebalanceBudgetsCommand, SetBudgetCommand
from services.campaign_executor import logic, store
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.commands.budget import record_first_seen, set_budget
from services.campaign_executor.logic import BudgetFacts, CommandFailed, CommandOutcome, ObjectState, Refusal, refused
from shared.money import format_money

FIELD = "daily_budget"


async def apply_rebalance(
    ctx: CommandContext, conn: asyncpg.Connection, command: RebalanceBudgetsCommand, plan: dict[str, Any] | None
) -> CommandOutcome:
    async with AsyncExitStack() as stack:
        for object_id in sorted(m.object_id for m in command.moves):
            await stack.enter_async_context(store.object_lock(conn, f"object:{object_id}"))
        return await _Rebalance(ctx, conn, command).run(plan)


class _Rebalance:
    def __init__(self, ctx: CommandContext, conn: asyncpg.Connection, command: RebalanceBudgetsCommand) -> None:
        self.ctx, self.conn, self.command = ctx, conn, command
        self.objects: dict[str, ObjectState] = {}
        self.first_seen: dict[str, int] = {}
        self.currency = ""
        self.ceiling: tuple[int, str] | None = None  # the account's daily ceiling and its basis, read once

    def money(self, minor: int) -> str:
        return format_money(minor, self.currency)

    async def run(self, plan: dict[str, Any] | None) -> CommandOutcome:
        command = self.command
        for move in command.moves:
            obj, self.currency = await self.ctx.reads.read_object(move.object_id, command.account_id, command.level)
            self.objects[move.object_id] = obj
            if obj.daily_budget is not None:
                self.first_seen[move.object_id] = await record_first_seen(
                    self.conn, obj.object_id, "object", obj.account_id, self.currency, obj.daily_budget)
        before = {m.object_id: self.objects[m.object_id].daily_budget for m in command.moves}
        common: dict[str, Any] = {"currency": self.currency, "account_id": command.account_id, "before": before}
        moves = [m for m in command.moves if m.from_minor != m.to_minor]
        foreign = next((o for o in self.objects.values() if o.account_id and o.account_id != command.account_id), None)
        if foreign is not None:
            return refused(Refusal("object_status", f"object {foreign.object_id} is in {foreign.account_id}, not in "
                                                    f"{command.account_id}: nothing applied"), **common)
        retry = plan is not None and "moves" in plan
        done = [m for m in moves if retry and before[m.object_id] == m.to_minor]
        elsewhere = [m for m in moves if before[m.object_id] not in ((m.from_minor, m.to_minor) if retry
                                                                      else (m.from_minor,))]
        if elsewhere:
            return await self._abandon(elsewhere, done, before, common)
        pending = [m for m in moves if m not in done]
        cuts = [m for m in pending if m.to_minor < m.from_minor]
        raises = [m for m in pending if m.to_minor > m.from_minor]
        if not done:
            refusal = await self._first_refusal(cuts, raises)
            if refusal is not None:
                return refused(refusal, after={m.object_id: m.to_minor for m in moves}, **common)
            if command.dry_run:
                return CommandOutcome("dry_run", f"would set {self._sentence(moves, kept=True)}",
                                      after={m.object_id: m.to_minor for m in moves}, **common)
            await store.plan_moves(self.conn, command.command_id, command.account_id, command.level,
                                   [(m.object_id, m.from_minor, m.to_minor) for m in moves])
            await store.mark_applying(self.conn, command.command_id, {
                "moves": {m.object_id: {"from": m.from_minor, FIELD: m.to_minor} for m in moves}})
        return await self._apply(cuts, raises, done, before, common)

    async def _first_refusal(self, cuts: list[BudgetMove], raises: list[BudgetMove]) -> Refusal | None:
        """Every move checked before any is applied; increases against the total after the decreases."""
        running = None
        if raises:
            running = await self._account_total()
            running -= sum(m.from_minor - m.to_minor for m in cuts)
        for move in [*cuts, *raises]:
            refusal = await self._refusal(move, running)
            if refusal is not None:
                return Refusal(refusal.guardrail, f"nothing applied: {self._name(move)}: {refusal.detail}")
            if running is not None and move.to_minor > move.from_minor:
                running += move.to_minor - move.from_minor
        return None

    async def _refusal(self, move: BudgetMove, account_total: int | None) -> Refusal | None:
        """The move checked as the set_budget command it amounts to: hard limits always, soft ones unless forced."""
        obj = self.objects[move.object_id]
        single = as_set_budget(self.command, move)
        if obj.daily_budget is None:
            return Refusal("no_budget", "it has no daily budget (the budget lives on its campaign)")
        if not self.command.force:
            status = logic.object_status_refusal("set_budget", obj)
            if status is not None:
                return status
        raise_ = move.to_minor > move.from_minor
        ceiling, basis = None, ""
        if raise_:
            if self.ceiling is None:
                await self._account_total()
            assert self.ceiling is not None
            ceiling, basis = self.ceiling
        facts = BudgetFacts(
            current=obj.daily_budget, target=move.to_minor, currency=self.currency,
            changes_last_hour=await store.budget_changes_last_hour(self.conn, move.object_id, self.command.command_id),
            spent=None if raise_ else await self.ctx.reads.spent(move.object_id, "daily", self.currency),
            account_daily_total=account_total if raise_ else None, ceiling=ceiling, ceiling_basis=basis,
            first_seen=self.first_seen.get(move.object_id),
            increases_last_week=await store.budget_increases_last_week(self.conn, move.object_id,
                                                                       self.command.command_id) if raise_ else 0,
            meta_blocked_until=await store.meta_budget_block(self.conn, move.object_id),
        )
        refusal = logic.hard_budget_refusal(single, facts, self.ctx.limits)
        if refusal is None and not self.command.force:
            refusal = logic.budget_refusal(single, facts, self.ctx.limits)
        return refusal

    async def _account_total(self) -> int:
        """The account's active daily budgets at Meta now; the first read also fixes its daily ceiling (recording
        the total as leadwire first saw it, when it is the first time)."""
        total = int(await self.ctx.reads.account_daily_total(self.command.account_id))
        if self.ceiling is None:
            first_total = await record_first_seen(self.conn, self.command.account_id, "account",
                                                  self.command.account_id, self.currency, total)
            self.ceiling = logic.account_ceiling(self.ctx.limits, self.currency, first_total)
        return total

    async def _apply(self, cuts: list[BudgetMove], raises: list[BudgetMove], done: list[BudgetMove],
                     before: dict[str, int | None], common: dict[str, Any]) -> CommandOutcome:
        command = self.command
        now = {m.object_id: before[m.object_id] or 0 for m in command.moves}
        applied = list(done)
        problems: list[tuple[BudgetMove, str, str]] = []  # (move, guardrail or "meta", detail)
        stopped: str | None = None  # a decrease not made: no increase is made after it
        for move in [*cuts, *raises]:
            if stopped is not None:
                await store.mark_move(self.conn, command.command_id, move.object_id, "abandoned", stopped)
                continue
            raise_ = move.to_minor > move.from_minor
            # an increase is checked against the account's total as Meta has it now, after the decreases
            total = await self._account_total() if raise_ else None
            problem = await self._set(move, total)
            if problem is None:
                applied.append(move)
                now[move.object_id] = move.to_minor
                continue
            problems.append((move, *problem))
            if not raise_:
                stopped = f"increase not made: the decrease of {self._name(move)} was not made ({problem[1]})"
        total_before = sum(m.from_minor for m in command.moves)
        total_after = sum(now.values())
        counts = {"total_before_minor": total_before, "total_after_minor": total_after, "applied": len(applied),
                  "not_applied": len(cuts) + len(raises) + len(done) - len(applied)}
        if not problems:
            return CommandOutcome("ok", self._sentence(applied, kept=True), after=now, counts=counts, **common)
        lines = "; ".join(f"{self._name(m)} not changed ({detail})" for m, _, detail in problems)
        detail = (f"{self._sentence(applied) if applied else 'nothing applied'}; {lines}"
                  + ("; no increase was made" if stopped is not None and raises else "")
                  + f"; total {self.money(total_after)} (was {self.money(total_before)}: left lower, never higher)")
        guardrail = problems[0][1]
        if guardrail == "meta":
            return CommandOutcome("failed", detail, after=now, counts=counts, **common)
        return CommandOutcome("refused", detail, guardrail=guardrail, after=now, counts=counts, **common)

    async def _set(self, move: BudgetMove, account_total: int | None) -> tuple[str, str] | None:
        """Check and apply one move; (guardrail or "meta", why) when it was not made."""
        refusal = await self._refusal(move, account_total)
        if refusal is not None:
            await store.mark_move(self.conn, self.command.command_id, move.object_id, "refused", refusal.detail)
            return refusal.guardrail, refusal.detail
        await store.mark_move(self.conn, self.command.command_id, move.object_id, "applying")
        try:
            await set_budget(self.ctx, self.conn, move.object_id, self.command.command_id, self.command.account_id,
                             FIELD, move.to_minor)
        except CommandFailed as exc:
            why = f"Meta answered: {exc.error.user_message or exc.error.message}"
            await store.mark_move(self.conn, self.command.command_id, move.object_id, "failed", why)
            return "meta", why
        await store.mark_move(self.conn, self.command.command_id, move.object_id, "applied")
        return None

    async def _abandon(self, elsewhere: list[BudgetMove], done: list[BudgetMove], before: dict[str, int | None],
                       common: dict[str, Any]) -> CommandOutcome:
        """Someone changed an object since the decision (or since an earlier attempt): apply nothing more."""
        for move in self.command.moves:
            if move not in done:
                await store.mark_move(self.conn, self.command.command_id, move.object_id, "abandoned",
                                      "changed elsewhere")
        shown = "; ".join(f"{self._name(m)} is {self.money(before[m.object_id] or 0)}, not "
                          f"{self.money(m.from_minor)}" for m in elsewhere)
        applied = f"already applied: {self._sentence(done)}; " if done else "nothing applied; "
        return refused(Refusal("changed_elsewhere", f"abandoned: {shown} (changed elsewhere since the decision); "
                                                    f"{applied}no increase is made"), **common)

    def _name(self, move: BudgetMove) -> str:
        level = logic.LEVEL_NAMES.get(self.command.level, self.command.level)
        name = self.objects[move.object_id].name if move.object_id in self.objects else ""
        return f"{level} {move.object_id}" + (f" ({name})" if name else "")

    def _sentence(self, moves: list[BudgetMove], *, kept: bool = False) -> str:
        parts = ", ".join(f"{m.object_id} {self.money(m.from_minor)} -> {self.money(m.to_minor)}" for m in moves)
        total = sum(m.from_minor for m in self.command.moves)
        return f"daily budgets {parts}" + (f" (total {self.money(total)} kept)" if kept else "")


def as_set_budget(command: RebalanceBudgetsCommand, move: BudgetMove) -> SetBudgetCommand:
    """The single budget command a move amounts to, for the executor's guardrails."""
    return SetBudgetCommand(
        command_id=command.command_id, requested_by=command.requested_by, reason=command.reason,
        force=command.force, dry_run=command.dry_run, object_id=move.object_id, level=command.level,
        account_id=command.account_id, amount_minor=move.to_minor, expected_current_minor=move.from_minor,
    )
