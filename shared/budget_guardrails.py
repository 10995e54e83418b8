"""Budget guardrails that the rules engine (before deciding) and the campaign executor (before acting) both apply.

One set of limits for both, so a change the rules engine decides is never refused by the executor for a limit the
engine did not know about. The settings block is `shared.settings.BudgetGuardrailSettings` (`BUDGET_*`).
"""

from __future__ import annotations

from shared.money import to_minor

# Meta blocks the 5th budget change on one ad set within an hour for an hour (error 613, subcode 1487632).
MAX_BUDGET_CHANGES_PER_HOUR = 4
# Lowering a budget: the new value must be at least 110% of what was already spent (docs/meta-api.md §11.1).
SPEND_FLOOR_PCT = 110
# Largest budget change per step, in percent of the current budget (bigger jumps reset Meta's learning phase).
MAX_BUDGET_STEP_PCT = 20.0


def spend_floor(spent: int) -> int:
    """The lowest budget Meta accepts after ``spent`` minor units were spent: 110% of it, rounded up (exact)."""
    return -(-spent * SPEND_FLOOR_PCT // 100)


def daily_ceiling_minor(ceiling: float | None, currency: str) -> int | None:
    """BUDGET_DAILY_CEILING (major units) in the minor units of an account's ``currency``; None = no ceiling."""
    return None if ceiling is None else to_minor(str(ceiling), currency)


def max_daily_budget(first_seen: int, multiple: float) -> int:
    """Hard limit: the largest daily budget an object may get, ``multiple`` times the one leadwire first saw,
    rounded down (the executor refuses more, `force` or not; the rules backtest applies the same)."""
    return int(first_seen * multiple)
