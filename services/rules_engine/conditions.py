"""Conditions against one entity's window sums: metric readers, compiled tests for the hot loop, and the plain
(uncompiled) truth of a condition that explanations use.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from services.rules_engine.model import Entity
from services.rules_engine.rule_terms import ATTRIBUTE_METRICS, MONEY_METRICS, Condition, Group
from services.rules_engine.rules import Rule
from services.rules_engine.windows import IMPRESSIONS, METRIC_COLUMNS, REACH, Slot
from shared.money import offset as currency_offset

Getter = Callable[["View"], float | int | None]

class Context:
    """Per-evaluation lookup tables shared by every view: slot indexes, metric readers, and the caches of the
    explanations (``explain.py`` fills ``leaf_texts`` and ``fixed_leaves``)."""

    def __init__(self, windows: Sequence[str], slots: Sequence[Slot], window_reach: Mapping[tuple[str, str], int]):
        self.windows = list(windows)
        self.slot = {slot: k for k, slot in enumerate(slots)}
        self.window_reach = window_reach
        self.no_rows: tuple[list[int], tuple[int, ...]] = ([0], (0,) * len(slots))
        self._getters: dict[tuple[str, str], Getter] = {}
        self.leaf_texts: dict[int, Any] = {}  # by id(): the rules outlive the context
        self.fixed_leaves: dict[int, list[Condition] | None] = {}

    def getter(self, metric: str, window: str) -> Getter:
        key = (metric, window)
        found = self._getters.get(key)
        if found is None:
            found = self._getters[key] = self._make_getter(metric, window)
        return found

    def cost_getter(self, metric: str, window: str, floor_major: float) -> Getter:
        """A cost-per metric that is infinite, instead of undefined, when nothing was bought and the window's spend
        reached ``floor_major`` (major units of the entity's currency; above zero)."""
        key = (metric, f"{window}|inf>={floor_major!r}")
        found = self._getters.get(key)
        if found is None:
            cost, spend = self.getter(metric, window), self.getter("spend", window)

            def read(v: View) -> float | int | None:
                value = cost(v)
                if value is None:
                    spent = spend(v) or 0
                    if spent > 0 and spent >= floor_major * v.offset:
                        return math.inf
                return value

            found = self._getters[key] = read
        return found

    def left(self, cond: Condition) -> Getter:
        """The reader of a condition's left-hand side (a cost with ``infinite_above_spend`` is never undefined
        once that much was spent)."""
        if cond.infinite_above_spend is not None:
            return self.cost_getter(cond.metric, cond.window, cond.infinite_above_spend)
        return self.getter(cond.metric, cond.window)

    def _column(self, window: str, column: int) -> Callable[[View], int]:
        k = self.slot.get((window, column))
        if k is None:  # not read by any rule (evaluate sums every slot a rule reads)
            return lambda v: 0

        def read(v: View) -> int:
            return v.sums[v.picks[k]]

        return read

    def _make_getter(self, metric: str, window: str) -> Getter:
        """A function reading ``metric`` over ``window`` from a view."""
        if metric in ATTRIBUTE_METRICS:
            return operator.attrgetter(f"entity.{metric}")
        if metric == "reach" or metric == "frequency":
            read_reach = self._column(window, REACH)
            overrides = self.window_reach

            def reach(v: View) -> int:
                if overrides:
                    found = overrides.get((v.entity.id, window))
                    if found is not None:
                        return found
                return read_reach(v)

            if metric == "reach":
                return reach
            read_impr = self._column(window, IMPRESSIONS)

            def frequency(v: View) -> float | None:
                r = reach(v)
                return read_impr(v) / r if r else None

            return frequency
        columns = METRIC_COLUMNS[metric]
        if len(columns) == 1:
            return self._column(window, columns[0])
        scale = {"ctr": 100.0, "cpm": 1000.0}.get(metric, 1.0)
        kn, kd = (self.slot.get((window, c)) for c in columns)
        if kn is None or kd is None:  # not read by any rule
            return lambda v: None

        def ratio(v: View) -> float | None:
            sums, picks = v.sums, v.picks
            d = sums[picks[kd]]
            return scale * sums[picks[kn]] / d if d else None

        return ratio


class View:
    """One entity with its slot sums; metrics are read through the context's getters."""

    __slots__ = ("ctx", "entity", "offset", "picks", "sums")

    def __init__(self, entity: Entity, found: tuple[list[int], tuple[int, ...]], ctx: Context) -> None:
        self.entity = entity
        self.sums, self.picks = found
        self.ctx = ctx
        self.offset = currency_offset(entity.currency)

    def value(self, metric: str, window: str) -> float | int | None:
        return self.ctx.getter(metric, window)(self)


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

Check = Callable[[View], bool]


def compile_leaf(cond: Condition, ctx: Context) -> Check:
    """A fast test for one condition. An undefined side (e.g. CPL with no leads, unless the condition makes it
    infinite above a spend) never matches."""
    left = ctx.left(cond)
    compare = COMPARE[cond.op]
    if cond.compare_to is not None:
        right = ctx.getter(cond.compare_to.metric, cond.right_window)
        factor = cond.compare_to.factor

        def against_metric(v: View) -> bool:
            a = left(v)
            if a is None:
                return False
            b = right(v)
            return b is not None and compare(a, b * factor)

        return against_metric
    value = cond.value
    assert value is not None
    if cond.metric in MONEY_METRICS:

        def against_money(v: View) -> bool:
            a = left(v)
            return a is not None and compare(a, value * v.offset)

        return against_money

    def against_number(v: View) -> bool:
        a = left(v)
        return a is not None and compare(a, value)

    return against_number


def compile_group(group: Group, ctx: Context) -> Check:
    checks = [compile_group(c, ctx) if isinstance(c, Group) else compile_leaf(c, ctx) for c in group.children]
    if len(checks) == 1:
        return checks[0]
    if group.mode == "all":
        # plain loops: all()/any() over a generator cost a frame per entity on the hot path
        def every(v: View) -> bool:
            for check in checks:  # noqa: SIM110
                if not check(v):
                    return False
            return True

        return every

    def some(v: View) -> bool:
        for check in checks:  # noqa: SIM110
            if check(v):
                return True
        return False

    return some


def threshold(cond: Condition, view: View) -> float | None:
    """The right-hand side in the metric's internal unit (minor units for money); None when undefined."""
    if cond.compare_to is not None:
        other = view.value(cond.compare_to.metric, cond.right_window)
        return None if other is None else other * cond.compare_to.factor
    assert cond.value is not None
    return cond.value * view.offset if cond.metric in MONEY_METRICS else cond.value


def leaf_true(cond: Condition, view: View) -> bool:
    left = view.ctx.left(cond)(view)
    right = threshold(cond, view)
    return left is not None and right is not None and COMPARE[cond.op](left, right)


def group_true(group: Group, view: View) -> bool:
    results = (group_true(c, view) if isinstance(c, Group) else leaf_true(c, view) for c in group.children)
    return all(results) if group.mode == "all" else any(results)


def has_any(group: Group) -> bool:
    """Whether an ``any`` group sits anywhere in ``group`` (then which leaves matched depends on the entity)."""
    return group.any_ is not None or any(isinstance(c, Group) and has_any(c) for c in group.children)


def metric_refs(rule: Rule) -> tuple[tuple[str, str, str], ...]:
    """``(bucket, metric, window)`` for every metric a rule reads, in order, without repeats."""
    refs: dict[tuple[str, str, str], None] = {}
    for cond in [*rule.min_data, *rule.conditions.leaves()]:
        pairs = [(cond.metric, cond.window)]
        if cond.compare_to is not None:
            pairs.append((cond.compare_to.metric, cond.right_window))
        for metric, window in pairs:
            refs["entity" if metric in ATTRIBUTE_METRICS else window, metric, window] = None
    return tuple(refs)


Read = tuple[str, str, Getter]  # (bucket, metric, getter)


def collect_metrics(reads: Iterable[Read], view: View) -> dict[str, dict[str, float | int | None]]:
    """The numbers a decision shows: ``{bucket: {metric: value}}``, floats rounded to 4 places."""
    out: dict[str, dict[str, float | int | None]] = {}
    for bucket, metric, read in reads:
        value = read(view)
        if isinstance(value, float):
            value = round(value, 4)
        found = out.get(bucket)
        if found is None:
            out[bucket] = {metric: value}
        else:
            found[metric] = value
    return out


def slots_for(rules: Iterable[Rule]) -> tuple[list[str], list[Slot]]:
    """The windows the rules read (and ``today``) and every ``(window, column)`` slot to sum for them."""
    rules = list(rules)
    windows = sorted({w for r in rules for w in r.windows()} | {"today"})
    needs: dict[str, set[str]] = {"today": {"spend"}}  # today's spend: floor for budget cuts
    for rule in rules:
        for cond in rule.reads():
            needs.setdefault(cond.window, set()).add(cond.metric)
            if cond.compare_to is not None:
                needs.setdefault(cond.right_window, set()).add(cond.compare_to.metric)
    slots = [(w, c) for w in windows for c in sorted({c for m in needs.get(w, ()) for c in METRIC_COLUMNS.get(m, ())})]
    return windows, slots
