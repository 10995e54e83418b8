"""What a snapshot for the rules must cover: the days their windows reach back, the window segments, the levels,
and whether they read insights or CRM outcomes at all. Pure; `store.load_snapshot` reads it from PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import BUDGET_ACTIONS, Rule


def lookback_days(rules: Iterable[Rule], cap: int) -> int:
    """Days of insights (today included) the rules' windows reach back, at most ``cap`` (``lifetime`` = cap)."""
    needed = 1
    for rule in rules:
        for window in rule.windows():
            _, hi = window_bounds(window)
            needed = max(needed, cap if hi is None else hi + 1)
    return min(needed, cap)


def segments(rules: Iterable[Rule], days: int, *, per_day: bool = False) -> list[int]:
    """Ascending day offsets (0 = today) where a window of the rules starts or ends: the segment boundaries."""
    if per_day:
        return list(range(days + 1))
    # Today is always its own segment: budget cuts read today's spend (Meta's spend floor) whatever the windows;
    # without this boundary "today" summed the first window segment (e.g. 14 days of spend).
    points = {0, 1}
    for rule in rules:
        for window in rule.windows():
            lo, hi = window_bounds(window)
            points.add(lo)
            if hi is not None:
                points.add(hi + 1)
    return sorted(p for p in points if p <= days)


def levels_of(rules: Iterable[Rule]) -> set[str]:
    return {rule.scope.level for rule in rules}


def uses_insights(rules: Sequence[Rule]) -> bool:
    return any(rule.windows() for rule in rules) or any(
        a.type in BUDGET_ACTIONS for rule in rules for a in rule.actions
    )


def uses_crm(rules: Sequence[Rule]) -> bool:
    crm = {"qualified_leads", "signed_cases", "cost_per_qualified_lead", "cost_per_signed_case"}
    for rule in rules:
        for cond in rule.reads():
            if cond.metric in crm or (cond.compare_to is not None and cond.compare_to.metric in crm):
                return True
    return False
