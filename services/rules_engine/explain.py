"""The one-sentence explanations of decisions: metric, window and threshold texts, and why a rule matched.

"CPL over the last 3 days was $62.40 (> $50) on 12 leads": money in the entity's currency (`shared.money`).
"""

from __future__ import annotations

import math
from datetime import timedelta
from functools import cache

from services.rules_engine.conditions import Context, View, group_true, has_any, leaf_true, threshold
from services.rules_engine.model import Entity
from services.rules_engine.rule_terms import ATTRIBUTE_METRICS, MONEY_METRICS, Condition, Group, window_bounds
from services.rules_engine.rules import Rule
from shared.money import format_money, to_minor

_LABELS = {
    "cpl": "CPL",
    "ctr": "CTR",
    "cpm": "CPM",
    "qualified_leads": "qualified leads",
    "signed_cases": "signed cases",
    "cost_per_qualified_lead": "cost per qualified lead",
    "cost_per_signed_case": "cost per signed case",
    "daily_budget": "daily budget",
    "lifetime_budget": "lifetime budget",
}
_COST_OF = {"cpl": "leads", "cost_per_qualified_lead": "qualified leads", "cost_per_signed_case": "signed cases"}
_OP_TEXT = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}
_LEVEL_TEXT = {"adset": "ad set", "campaign": "campaign", "ad": "ad"}
_COUNT_METRICS = frozenset({"impressions", "reach", "clicks", "leads", "qualified_leads", "signed_cases"})
INFINITIVE = {
    "pause": "pause",
    "pause_for_today": "pause for today",
    "unpause": "unpause",
    "change_budget": "change the budget of",
    "set_budget": "set the budget of",
    "notify": "flag",
    "rotate_creative": "rotate out",
    "rebalance": "rebalance the budgets of",
}


def format_value(metric: str, value: float | int | None, currency: str, *, exact: bool = True) -> str:
    if value is None:
        return "undefined"
    if value == math.inf:
        return "infinite"
    if metric in MONEY_METRICS:
        return format_money(round(value, 4), currency, exact=exact)
    if metric == "ctr":
        return f"{value:.2f}%"
    if metric == "frequency":
        return f"{value:.2f}"
    if metric in _COUNT_METRICS or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:,.2f}"


@cache
def _window_text(window: str) -> str:
    if window in ("today", "yesterday"):
        return window
    if window == "lifetime":
        return "over the lifetime"
    lo, hi = window_bounds(window)
    n = (hi or 0) - lo + 1
    if lo == 0:
        return "over the last day" if n == 1 else f"over the last {n} days"
    return f"over the {n} days before today"


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric)


@cache
def _subject(metric: str, window: str) -> str:
    if metric in ATTRIBUTE_METRICS:
        return _label(metric)
    return f"{_label(metric)} {_window_text(window)}"


def _threshold_text(cond: Condition, view: View) -> str:
    currency = view.entity.currency
    if cond.compare_to is not None:
        ref = cond.compare_to
        right = threshold(cond, view)
        factor = "" if ref.factor == 1 else f"{ref.factor:g} × "
        window = (
            ""
            if ref.metric in ATTRIBUTE_METRICS or ref.window in (None, cond.window)
            else (f" {_window_text(ref.window)}")
        )
        return f"{factor}{_label(ref.metric)}{window} = {format_value(cond.metric, right, currency)}"
    assert cond.value is not None
    return _fixed_threshold_text(cond.metric, cond.value, currency)


@cache
def _fixed_threshold_text(metric: str, value: float, currency: str) -> str:
    if metric in MONEY_METRICS:
        return format_money(to_minor(value, currency), currency, exact=False)
    return f"{value:,g}%" if metric == "ctr" else f"{value:,g}"


def leaf_text(cond: Condition, view: View, *, needs: bool = False) -> str:
    """``CPL over the last 3 days was $62.40 (> $50)``; with ``needs``: ``(needs > $50)``."""
    return leaf_text_of(view.ctx, cond)(view, needs)


def leaf_text_of(ctx: Context, cond: Condition) -> LeafText:
    found = ctx.leaf_texts.get(id(cond))
    if found is None:
        found = ctx.leaf_texts[id(cond)] = LeafText(cond, ctx)
    return found


def fixed_leaves(ctx: Context, rule: Rule) -> list[Condition] | None:
    """The leaves that explain a match of ``rule`` when they do not depend on the entity (no ``any``)."""
    key = id(rule)
    if key not in ctx.fixed_leaves:
        ctx.fixed_leaves[key] = None if has_any(rule.conditions) else list(rule.conditions.leaves())
    return ctx.fixed_leaves[key]


class LeafText:
    """`leaf_text` for one condition, with the parts that do not depend on the entity worked out once."""

    __slots__ = ("cond", "fixed", "head", "metric", "op", "read", "spend")

    def __init__(self, cond: Condition, ctx: Context) -> None:
        self.cond = cond
        self.metric = cond.metric
        self.read = ctx.left(cond)
        self.spend = ctx.getter("spend", cond.window) if cond.infinite_above_spend is not None else None
        verb = "were" if cond.metric in _COUNT_METRICS and cond.metric != "reach" else "was"
        self.head = f"{_subject(cond.metric, cond.window)} {verb} "
        self.op = _OP_TEXT[cond.op]
        self.fixed: dict[str, str] = {}  # currency -> threshold text, when compared with a number

    def __call__(self, view: View, needs: bool) -> str:
        currency = view.entity.currency
        value = self.read(view)
        shown = format_value(self.metric, value, currency)
        if value == math.inf and self.spend is not None:
            shown += f" (0 {_COST_OF[self.metric]} on {format_value('spend', self.spend(view), currency)})"
        right = self.fixed.get(currency)
        if right is None:
            right = _threshold_text(self.cond, view)
            if self.cond.compare_to is None:
                self.fixed[currency] = right
        relation = "needs " if needs else ""
        return f"{self.head}{shown} ({relation}{self.op} {right})"


def matched_leaves(group: Group, view: View) -> list[Condition]:
    """The leaves that made a (true) group true: all of an ``all``, the first true child of an ``any``."""
    if group.all_ is not None:
        out: list[Condition] = []
        for child in group.all_:
            out.extend(matched_leaves(child, view) if isinstance(child, Group) else [child])
        return out
    for child in group.children:
        if isinstance(child, Group):
            if group_true(child, view):
                return matched_leaves(child, view)
        elif leaf_true(child, view):
            return [child]
    return []


def because(rule: Rule, view: View, *, guards: bool = True) -> str:
    ctx = view.ctx
    leaves = fixed_leaves(ctx, rule)
    if leaves is None:
        leaves = matched_leaves(rule.conditions, view)
    text = " and ".join([leaf_text_of(ctx, c)(view, False) for c in leaves])
    first_window = leaves[0].window if leaves else None
    extras = []
    for guard in rule.min_data if guards else ():
        value = ctx.left(guard)(view)
        if guard.metric in _COUNT_METRICS and guard.compare_to is None and guard.window == first_window:
            extras.append(f"{format_value(guard.metric, value, view.entity.currency)} {_label(guard.metric)}")
        else:
            extras.append(
                f"{_subject(guard.metric, guard.window)} at {format_value(guard.metric, value, view.entity.currency)}"
            )
    if extras:
        text += " on " + " and ".join(extras)
    return text


def describe(entity: Entity) -> str:
    """``ad set 'Miami – broad'``."""
    return f"{_LEVEL_TEXT[entity.level]} '{entity.name}'"


def ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def pct(old: int, new: int) -> str:
    return f"{(new - old) / old * 100:+.0f}%"


# The first word of an acting sentence ("Paused ad set 'X' ...") in the other forms an announcement takes.
_VERBS = {"Paused": "pause", "Unpaused": "unpause", "Raised": "raise", "Lowered": "lower", "Flagged": "flag",
          "Rotated": "rotate",
          "Moved": "move"}


def infinitive(sentence: str) -> str:
    """``Paused ad set 'X' because ...`` -> ``pause ad set 'X' because ...``."""
    first, _, rest = sentence.partition(" ")
    verb = _VERBS.get(first)
    return f"{verb} {rest}" if verb is not None else sentence[:1].lower() + sentence[1:]


def would(sentence: str) -> str:
    """What a rule in shadow mode would have done: ``Would pause ad set 'X' because ...``."""
    return f"Would {infinitive(sentence)}"


def failed(sentence: str, why: str) -> str:
    """What was attempted and why it failed: ``Could not pause ad set 'X' (Meta: ...). It was tried because ...``."""
    action, sep, reasons = sentence.partition(" because ")
    text = f"Could not {infinitive(action)} ({why})."
    return f"{text} It was tried because {reasons}" if sep else text
