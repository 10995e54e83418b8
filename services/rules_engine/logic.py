"""Rule evaluation: pure functions from (rules, snapshot, state, now) to explained decisions.

No I/O. The service fills a `Snapshot` from PostgreSQL (`insights_daily`, objects, CRM conversions) and an
`EngineState` from its action history, calls `evaluate`, publishes each decision's `actions` as commands, and
folds executed decisions back into the state with `record_actions`.

Units: every money value here (row spend, budgets, `Action.budget`, money entries of `Decision.metrics`) is an
integer or float in **minor units** of the entity's account currency (cents for USD; offset 1 for JPY and the
other currencies in `shared.money.OFFSET_ONE`). Rule thresholds are major units in YAML and are converted per
entity currency at comparison time. Explanations show major units ("$62.40").
"""

from __future__ import annotations

import gc
import logging
import math
import operator
import re
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from functools import cache
from itertools import groupby
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from services.rules_engine.rules import (
    ATTRIBUTE_METRICS,
    BUDGET_ACTIONS,
    MONEY_METRICS,
    MUTATING_ACTIONS,
    ChangeBudgetAction,
    Condition,
    Group,
    Level,
    NotifyAction,
    Rule,
    SetBudgetAction,
    TextFilter,
    window_bounds,
)
from shared.money import offset as currency_offset
from shared.money import to_minor

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class Entity:
    """A campaign, ad set or ad as the rules see it. Budgets in minor units; ``status`` is Meta's status."""

    id: str
    level: Level
    name: str
    status: str
    account_id: str
    campaign_id: str | None = None
    campaign_name: str | None = None
    adset_id: str | None = None
    daily_budget: int | None = None
    lifetime_budget: int | None = None
    currency: str = "USD"
    timezone: str = "UTC"


class MetricRow(NamedTuple):
    """One day of delivery for one object (normally one ``insights_daily`` row per ad per day).

    A NamedTuple rather than a dataclass: 300k of these are grouped and transposed in C per evaluation.

    ``date`` is the day in the ad account's timezone, as Meta reports it. The row is added to each of
    ``ad_id``, ``adset_id`` and ``campaign_id`` that is set, which rolls ads up to ad sets and campaigns.
    CRM numbers (``qualified_leads``, ``signed_cases``) can come in the same row or in separate rows with zero
    delivery; attribute them to the lead's ad and the day the lead was created. ``spend`` is in minor units.
    """

    date: date
    ad_id: str | None = None
    adset_id: str | None = None
    campaign_id: str | None = None
    spend: int = 0
    impressions: int = 0
    reach: int = 0
    clicks: int = 0
    leads: int = 0
    qualified_leads: int = 0
    signed_cases: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the rules read. ``window_reach`` optionally overrides the summed reach for
    ``(entity_id, window)`` with Meta's deduplicated reach for that window (summed daily reach overstates
    unique reach and so understates frequency)."""

    entities: Sequence[Entity]
    rows: Sequence[MetricRow]
    window_reach: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """An action that was executed (or attempted) on an entity. ``rule`` may be e.g. ``"manual"`` for budget
    edits made outside the engine, which still count toward Meta's 4-per-hour limit."""

    rule: str
    entity_id: str
    kind: str
    at: datetime
    resume_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class EngineState:
    """History the guardrails need. The service loads the last few days of actions (at least the longest
    cooldown) and the other maps from its tables; `record_actions` returns an updated copy."""

    actions: Sequence[ActionRecord] = ()
    consecutive_failures: Mapping[str, int] = field(default_factory=dict)
    account_daily_budget_ceiling: Mapping[str, int] = field(default_factory=dict)
    data_as_of: Mapping[str, datetime] = field(default_factory=dict)


class EngineSettings(BaseModel):
    """Engine-wide limits (per-rule limits live in each rule's ``guardrails``)."""

    model_config = ConfigDict(frozen=True)

    dry_run: bool = Field(default=False, description="Preview: every rule yields would_act, nothing acts.")
    max_actions_per_run: int = Field(default=100, ge=0, description="All rules together.")
    budget_changes_per_hour: int = Field(default=4, ge=0, description="Meta: 4 per ad set per hour (§2.3).")
    circuit_breaker_failures: int = Field(default=3, ge=1)
    max_data_age: timedelta = timedelta(hours=3)
    spend_floor_pct: float = Field(default=110, description="Meta: a lowered budget must be >= 110% of spend.")
    include_not_matched: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Outputs

Outcome = Literal["acted", "would_act", "skipped"]
ReasonCode = Literal[
    "not_matched",
    "insufficient_data",
    "stale_data",
    "circuit_open",
    "conflict",
    "cooldown",
    "max_actions",
    "no_change",
    "no_budget",
    "budget_change_rate",
    "guard_budget_step",
    "budget_limit",
    "ceiling",
]
ActionKind = Literal["pause", "unpause", "pause_for_today", "change_budget", "set_budget", "notify"]


class Action(BaseModel):
    """A command for the campaign executor. Budgets are absolute (idempotent on retry), in minor units.

    Maps onto ``contracts.commands``: pause / pause_for_today -> ``PauseCommand`` (the engine itself emits the
    ``unpause`` at the account's midnight), unpause -> ``UnpauseCommand``, change_budget / set_budget ->
    ``SetBudgetCommand(amount_minor=budget, expected_current_minor=previous_budget)``, notify -> an alert.
    """

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    rule: str
    entity_id: str
    entity_level: Level
    account_id: str
    reason: str
    idempotency_key: str
    budget_field: Literal["daily_budget", "lifetime_budget"] | None = None
    budget: int | None = None
    previous_budget: int | None = None
    currency: str | None = None
    resume_at: datetime | None = None
    channels: tuple[str, ...] = ()
    email_to: tuple[str, ...] = ()

    @property
    def command_id(self) -> uuid.UUID:
        """A stable UUID for ``CampaignCommand.command_id``: the same decision always maps to the same command."""
        return uuid.uuid5(uuid.NAMESPACE_URL, f"leadwire:rules_engine:{self.idempotency_key}")


class Decision(BaseModel):
    """What one rule decided about one entity, with the numbers and a one-sentence explanation.

    ``metrics`` maps a window (or ``"entity"`` for budgets) to metric values; money in minor units of
    ``currency``; ``None`` = undefined (e.g. CPL with no leads). ``reason`` is set when skipped, and also on an
    acted budget change that was capped (``guard_budget_step`` / ``budget_limit``, with ``capped`` true).
    """

    model_config = ConfigDict(frozen=True)

    rule: str
    entity_id: str
    entity_level: Level
    entity_name: str
    account_id: str
    currency: str
    outcome: Outcome
    reason: ReasonCode | None = None
    capped: bool = False
    actions: tuple[Action, ...] = ()
    metrics: dict[str, dict[str, float | int | None]] = Field(default_factory=dict)
    explanation: str
    evaluated_at: datetime


# ---------------------------------------------------------------------------------------------------------------
# Aggregation: rows are grouped per entity once and every (window, column) a rule reads is summed once per entity,
# whatever the number of rules that read it.

_SPEND, _IMPR, _REACH, _CLICKS, _LEADS, _QL, _SC = range(7)


def _norm_account(account_id: str) -> str:
    return account_id.removeprefix("act_")


def _zone(tz_name: str, zones: dict[str, ZoneInfo]) -> ZoneInfo:
    tz = zones.get(tz_name)
    if tz is None:
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("unknown timezone %r, using UTC", tz_name)
            tz = ZoneInfo("UTC")
        zones[tz_name] = tz
    return tz


def _local_today(now: datetime, tz_name: str, zones: dict[str, ZoneInfo]) -> date:
    return now.astimezone(_zone(tz_name, zones)).date()


_ROW_KEY_INDEX = {"ad": 1, "adset": 2, "campaign": 3}  # MetricRow field positions
_ROW_FIRST_METRIC = 4
_METRIC_COLUMNS: dict[str, tuple[int, ...]] = {
    "spend": (_SPEND,),
    "impressions": (_IMPR,),
    "reach": (_REACH,),
    "clicks": (_CLICKS,),
    "leads": (_LEADS,),
    "qualified_leads": (_QL,),
    "signed_cases": (_SC,),
    "cpl": (_SPEND, _LEADS),
    "cost_per_qualified_lead": (_SPEND, _QL),
    "cost_per_signed_case": (_SPEND, _SC),
    "ctr": (_CLICKS, _IMPR),
    "cpm": (_SPEND, _IMPR),
    "frequency": (_IMPR, _REACH),
}

Slot = tuple[str, int]  # (window, column): one number per entity


class _Plan(NamedTuple):
    """How to sum one entity's rows: ``sums[i] = sum(columns[column][start:end])`` for each ``(column, start,
    end)`` of ``parts``; the slot with index k reads ``sums[picks[k]]``."""

    parts: tuple[tuple[int, int, int], ...]
    picks: tuple[int, ...]


def _spans(dates: Sequence[date], ranges: Sequence[tuple[date | None, date]]) -> tuple[tuple[int, int], ...] | None:
    """``(start, end)`` positions of each window's days among ``dates`` (ascending or descending); None if the
    dates are not in order."""
    n = len(dates)
    if all(map(operator.le, dates, dates[1:])):
        return tuple(
            (0 if first is None else bisect_left(dates, first), bisect_right(dates, last)) for first, last in ranges
        )
    if all(map(operator.ge, dates, dates[1:])):
        back = dates[::-1]
        return tuple(
            (n - bisect_right(back, last), n if first is None else n - bisect_left(back, first))
            for first, last in ranges
        )
    return None


def _plan(spans: Sequence[tuple[int, int]], slots: Sequence[tuple[int, int]]) -> _Plan:
    """The slices to sum for window positions ``spans``; slots over the same slice share one sum."""
    parts: dict[tuple[int, int, int], int] = {}
    picks = []
    for window_index, column in slots:
        start, end = spans[window_index]
        part = (_ROW_FIRST_METRIC + column, start, end) if end > start else (_ROW_FIRST_METRIC + column, 0, 0)
        picks.append(parts.setdefault(part, len(parts)))
    return _Plan(tuple(parts), tuple(picks))


def aggregate_windows(
    snapshot: Snapshot, slots: Sequence[Slot], levels: Iterable[str], now: datetime
) -> dict[str, tuple[list[int], tuple[int, ...]]]:
    """Sum the rows per entity for each slot ``(window, column)`` (column: 0 spend, 1 impressions, 2 reach,
    3 clicks, 4 leads, 5 qualified_leads, 6 signed_cases): ``{entity_id: (sums, picks)}``, where the slot with
    index k is ``sums[picks[k]]``.

    "Today" is taken in each entity's account timezone and days after it are ignored, so the same rows can be
    replayed as of any earlier day. Rows grouped by entity with dates in order (either way: ``ORDER BY adset_id,
    date`` returns them so) are the fast path; any order gives the same sums. Entities whose rows cover the same
    days (the usual case) share the slice positions, worked out once.
    """
    windows = list(dict.fromkeys(w for w, _ in slots))
    bounds = [window_bounds(w) for w in windows]
    indexed = [(windows.index(w), c) for w, c in slots]
    by_id = {e.id: e for e in snapshot.entities}
    groups: dict[str, list[MetricRow]] = {}
    scattered: set[str] = set()  # entities whose rows came in more than one run: sorted before use
    for level in levels:
        for key, run in groupby(snapshot.rows, operator.itemgetter(_ROW_KEY_INDEX[level])):
            if key is None or key not in by_id:
                continue
            found = groups.get(key)
            if found is None:
                groups[key] = list(run)
            else:
                found.extend(run)
                scattered.add(key)

    zones: dict[str, ZoneInfo] = {}
    ranges_by_tz: dict[str, list[tuple[date | None, date]]] = {}
    plans: dict[tuple[str, tuple[date, ...]], _Plan] = {}
    plans_by_spans: dict[tuple[tuple[int, int], ...], _Plan] = {}
    by_date = operator.itemgetter(0)
    result: dict[str, tuple[list[int], tuple[int, ...]]] = {}
    for key, rows in groups.items():
        tz_name = by_id[key].timezone
        if key in scattered:
            rows.sort(key=by_date)
        columns = list(zip(*rows, strict=False))  # transpose: columns[0] = dates, columns[4 + c] = metric c
        plan = plans.get((tz_name, columns[0]))
        if plan is None:
            ranges = ranges_by_tz.get(tz_name)
            if ranges is None:
                today = _local_today(now, tz_name, zones)
                ranges = ranges_by_tz[tz_name] = [
                    (None if hi is None else today - timedelta(days=hi), today - timedelta(days=lo))
                    for lo, hi in bounds
                ]
            spans = _spans(columns[0], ranges)
            if spans is None:
                rows.sort(key=by_date)
                columns = list(zip(*rows, strict=False))
                spans = _spans(columns[0], ranges)
                assert spans is not None
            plan = plans_by_spans.get(spans)
            if plan is None:
                plan = plans_by_spans[spans] = _plan(spans, indexed)
            plans[(tz_name, columns[0])] = plan
        result[key] = ([sum(columns[c][start:end]) for c, start, end in plan.parts], plan.picks)
    return result


class _Context:
    """Per-evaluation lookup tables shared by every view: slot indexes, metric readers, cached texts."""

    def __init__(self, windows: Sequence[str], slots: Sequence[Slot], window_reach: Mapping[tuple[str, str], int]):
        self.windows = list(windows)
        self.slot = {slot: k for k, slot in enumerate(slots)}
        self.window_reach = window_reach
        self.no_rows: tuple[list[int], tuple[int, ...]] = ([0], (0,) * len(slots))
        self._getters: dict[tuple[str, str], Callable[[_View], float | int | None]] = {}
        self._leaf_texts: dict[int, _LeafText] = {}  # by id(): the rules outlive the context
        self._fixed_leaves: dict[int, list[Condition] | None] = {}

    def leaf_text(self, cond: Condition) -> _LeafText:
        found = self._leaf_texts.get(id(cond))
        if found is None:
            found = self._leaf_texts[id(cond)] = _LeafText(cond, self)
        return found

    def fixed_leaves(self, rule: Rule) -> list[Condition] | None:
        """The leaves that explain a match of ``rule`` when they do not depend on the entity (no ``any``)."""
        key = id(rule)
        if key not in self._fixed_leaves:
            self._fixed_leaves[key] = None if _has_any(rule.conditions) else list(rule.conditions.leaves())
        return self._fixed_leaves[key]

    def getter(self, metric: str, window: str) -> Callable[[_View], float | int | None]:
        key = (metric, window)
        found = self._getters.get(key)
        if found is None:
            found = self._getters[key] = self._make_getter(metric, window)
        return found

    def _column(self, window: str, column: int) -> Callable[[_View], int]:
        k = self.slot.get((window, column))
        if k is None:  # not read by any rule (evaluate sums every slot a rule reads)
            return lambda v: 0

        def read(v: _View) -> int:
            return v.sums[v.picks[k]]

        return read

    def _make_getter(self, metric: str, window: str) -> Callable[[_View], float | int | None]:
        """A function reading ``metric`` over ``window`` from a view."""
        if metric in ATTRIBUTE_METRICS:
            return operator.attrgetter(f"entity.{metric}")
        if metric == "reach" or metric == "frequency":
            read_reach = self._column(window, _REACH)
            overrides = self.window_reach

            def reach(v: _View) -> int:
                if overrides:
                    found = overrides.get((v.entity.id, window))
                    if found is not None:
                        return found
                return read_reach(v)

            if metric == "reach":
                return reach
            read_impr = self._column(window, _IMPR)

            def frequency(v: _View) -> float | None:
                r = reach(v)
                return read_impr(v) / r if r else None

            return frequency
        columns = _METRIC_COLUMNS[metric]
        if len(columns) == 1:
            return self._column(window, columns[0])
        scale = {"ctr": 100.0, "cpm": 1000.0}.get(metric, 1.0)
        kn, kd = (self.slot.get((window, c)) for c in columns)
        if kn is None or kd is None:  # not read by any rule
            return lambda v: None

        def ratio(v: _View) -> float | None:
            sums, picks = v.sums, v.picks
            d = sums[picks[kd]]
            return scale * sums[picks[kn]] / d if d else None

        return ratio


class _View:
    """One entity with its slot sums; metrics are read through the context's getters."""

    __slots__ = ("ctx", "entity", "offset", "picks", "sums")

    def __init__(self, entity: Entity, found: tuple[list[int], tuple[int, ...]], ctx: _Context) -> None:
        self.entity = entity
        self.sums, self.picks = found
        self.ctx = ctx
        self.offset = currency_offset(entity.currency)

    def value(self, metric: str, window: str) -> float | int | None:
        return self.ctx.getter(metric, window)(self)


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

Check = Callable[[_View], bool]


def _compile_leaf(cond: Condition, ctx: _Context) -> Check:
    """A fast test for one condition. An undefined side (e.g. CPL with no leads) never matches."""
    left = ctx.getter(cond.metric, cond.window)
    compare = _COMPARE[cond.op]
    if cond.compare_to is not None:
        right = ctx.getter(cond.compare_to.metric, cond.right_window)
        factor = cond.compare_to.factor

        def against_metric(v: _View) -> bool:
            a = left(v)
            if a is None:
                return False
            b = right(v)
            return b is not None and compare(a, b * factor)

        return against_metric
    value = cond.value
    assert value is not None
    if cond.metric in MONEY_METRICS:

        def against_money(v: _View) -> bool:
            a = left(v)
            return a is not None and compare(a, value * v.offset)

        return against_money

    def against_number(v: _View) -> bool:
        a = left(v)
        return a is not None and compare(a, value)

    return against_number


def _compile_group(group: Group, ctx: _Context) -> Check:
    checks = [_compile_group(c, ctx) if isinstance(c, Group) else _compile_leaf(c, ctx) for c in group.children]
    if len(checks) == 1:
        return checks[0]
    if group.mode == "all":
        # plain loops: all()/any() over a generator cost a frame per entity on the hot path
        def every(v: _View) -> bool:
            for check in checks:  # noqa: SIM110
                if not check(v):
                    return False
            return True

        return every

    def some(v: _View) -> bool:
        for check in checks:  # noqa: SIM110
            if check(v):
                return True
        return False

    return some


def _threshold(cond: Condition, view: _View) -> float | None:
    """The right-hand side in the metric's internal unit (minor units for money); None when undefined."""
    if cond.compare_to is not None:
        other = view.value(cond.compare_to.metric, cond.right_window)
        return None if other is None else other * cond.compare_to.factor
    assert cond.value is not None
    return cond.value * view.offset if cond.metric in MONEY_METRICS else cond.value


def _leaf_true(cond: Condition, view: _View) -> bool:
    left = view.value(cond.metric, cond.window)
    right = _threshold(cond, view)
    return left is not None and right is not None and _COMPARE[cond.op](left, right)


def _group_true(group: Group, view: _View) -> bool:
    results = (_group_true(c, view) if isinstance(c, Group) else _leaf_true(c, view) for c in group.children)
    return all(results) if group.mode == "all" else any(results)


# ---------------------------------------------------------------------------------------------------------------
# Formatting for explanations

_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "MXN": "MX$"}
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
_OP_TEXT = {">": ">", ">=": "≥", "<": "<", "<=": "≤", "==": "=", "!=": "≠"}
_LEVEL_TEXT = {"adset": "ad set", "campaign": "campaign", "ad": "ad"}
_COUNT_METRICS = frozenset({"impressions", "reach", "clicks", "leads", "qualified_leads", "signed_cases"})


def format_money(minor: float | int, currency: str, *, exact: bool = True) -> str:
    """``6240, "USD"`` -> ``$62.40``; with ``exact=False`` whole amounts drop the cents (``$50``)."""
    offset, symbol, code = _money_style(currency)
    major = minor / offset
    whole = offset == 1 or (not exact and float(major).is_integer())
    text = f"{major:,.0f}" if whole else f"{major:,.2f}"
    return f"{symbol}{text}{code}"


@cache
def _money_style(currency: str) -> tuple[int, str, str]:
    """Offset, leading symbol and trailing code of a currency's amounts (one of the two texts is empty)."""
    symbol = _SYMBOLS.get(currency.upper())
    return currency_offset(currency), symbol or "", "" if symbol else f" {currency.upper()}"


def _format_value(metric: str, value: float | int | None, currency: str, *, exact: bool = True) -> str:
    if value is None:
        return "undefined"
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


def _threshold_text(cond: Condition, view: _View) -> str:
    currency = view.entity.currency
    if cond.compare_to is not None:
        ref = cond.compare_to
        right = _threshold(cond, view)
        factor = "" if ref.factor == 1 else f"{ref.factor:g} × "
        window = (
            ""
            if ref.metric in ATTRIBUTE_METRICS or ref.window in (None, cond.window)
            else (f" {_window_text(ref.window)}")
        )
        return f"{factor}{_label(ref.metric)}{window} = {_format_value(cond.metric, right, currency)}"
    assert cond.value is not None
    return _fixed_threshold_text(cond.metric, cond.value, currency)


@cache
def _fixed_threshold_text(metric: str, value: float, currency: str) -> str:
    if metric in MONEY_METRICS:
        return format_money(to_minor(value, currency), currency, exact=False)
    return f"{value:,g}%" if metric == "ctr" else f"{value:,g}"


def _leaf_text(cond: Condition, view: _View, *, needs: bool = False) -> str:
    """``CPL over the last 3 days was $62.40 (> $50)``; with ``needs``: ``(needs > $50)``."""
    return view.ctx.leaf_text(cond)(view, needs)


class _LeafText:
    """`_leaf_text` for one condition, with the parts that do not depend on the entity worked out once."""

    __slots__ = ("cond", "fixed", "head", "metric", "op", "read")

    def __init__(self, cond: Condition, ctx: _Context) -> None:
        self.cond = cond
        self.metric = cond.metric
        self.read = ctx.getter(cond.metric, cond.window)
        verb = "were" if cond.metric in _COUNT_METRICS and cond.metric != "reach" else "was"
        self.head = f"{_subject(cond.metric, cond.window)} {verb} "
        self.op = _OP_TEXT[cond.op]
        self.fixed: dict[str, str] = {}  # currency -> threshold text, when compared with a number

    def __call__(self, view: _View, needs: bool) -> str:
        currency = view.entity.currency
        shown = _format_value(self.metric, self.read(view), currency)
        threshold = self.fixed.get(currency)
        if threshold is None:
            threshold = _threshold_text(self.cond, view)
            if self.cond.compare_to is None:
                self.fixed[currency] = threshold
        relation = "needs " if needs else ""
        return f"{self.head}{shown} ({relation}{self.op} {threshold})"


def _matched_leaves(group: Group, view: _View) -> list[Condition]:
    """The leaves that made a (true) group true: all of an ``all``, the first true child of an ``any``."""
    if group.all_ is not None:
        out: list[Condition] = []
        for child in group.all_:
            out.extend(_matched_leaves(child, view) if isinstance(child, Group) else [child])
        return out
    for child in group.children:
        if isinstance(child, Group):
            if _group_true(child, view):
                return _matched_leaves(child, view)
        elif _leaf_true(child, view):
            return [child]
    return []


def _because(rule: Rule, view: _View, *, guards: bool = True) -> str:
    ctx = view.ctx
    leaves = ctx.fixed_leaves(rule)
    if leaves is None:
        leaves = _matched_leaves(rule.conditions, view)
    text = " and ".join([ctx.leaf_text(c)(view, False) for c in leaves])
    first_window = leaves[0].window if leaves else None
    extras = []
    for guard in rule.min_data if guards else ():
        value = ctx.getter(guard.metric, guard.window)(view)
        if guard.metric in _COUNT_METRICS and guard.compare_to is None and guard.window == first_window:
            extras.append(f"{_format_value(guard.metric, value, view.entity.currency)} {_label(guard.metric)}")
        else:
            extras.append(
                f"{_subject(guard.metric, guard.window)} at {_format_value(guard.metric, value, view.entity.currency)}"
            )
    if extras:
        text += " on " + " and ".join(extras)
    return text


def _has_any(group: Group) -> bool:
    return group.any_ is not None or any(isinstance(c, Group) and _has_any(c) for c in group.children)


def _metric_refs(rule: Rule) -> tuple[tuple[str, str, str], ...]:
    """``(bucket, metric, window)`` for every metric a rule reads, in order, without repeats."""
    refs: dict[tuple[str, str, str], None] = {}
    for cond in [*rule.min_data, *rule.conditions.leaves()]:
        pairs = [(cond.metric, cond.window)]
        if cond.compare_to is not None:
            pairs.append((cond.compare_to.metric, cond.right_window))
        for metric, window in pairs:
            refs["entity" if metric in ATTRIBUTE_METRICS else window, metric, window] = None
    return tuple(refs)


Read = tuple[str, str, Callable[["_View"], float | int | None]]  # (bucket, metric, getter)


def _collect_metrics(reads: Iterable[Read], view: _View) -> dict[str, dict[str, float | int | None]]:
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


# ---------------------------------------------------------------------------------------------------------------
# Evaluation

_KIND_RANK = {"pause": 0, "pause_for_today": 0, "notify": 2, "unpause": 3, "set_budget": 3}


def _rule_order(rule: Rule) -> tuple[int, int, str]:
    kind = rule.main_action
    if kind == "change_budget":
        action = next(a for a in rule.actions if isinstance(a, ChangeBudgetAction))
        rank = 1 if action.percent < 0 else 4
    else:
        rank = _KIND_RANK[kind]
    return rule.priority, rank, rule.name


def _text_ok(flt: TextFilter | None, text: str | None) -> bool:
    if flt is None:
        return True
    if text is None:
        return False
    hay = text if flt.case_sensitive else text.lower()
    if flt.contains is not None and (flt.contains if flt.case_sensitive else flt.contains.lower()) not in hay:
        return False
    if flt.not_contains is not None and ((flt.not_contains if flt.case_sensitive else flt.not_contains.lower()) in hay):
        return False
    if flt.regex is not None:
        flags = 0 if flt.case_sensitive else re.IGNORECASE
        if re.search(flt.regex, text, flags) is None:
            return False
    return True


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def _next_midnight(now: datetime, tz_name: str, zones: dict[str, ZoneInfo]) -> datetime:
    today = _local_today(now, tz_name, zones)  # also caches the zone
    tz = zones[tz_name]
    return datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz).astimezone(now.tzinfo)


class _Run:
    """Mutable bookkeeping for one evaluation (counters and what earlier rules in this run did)."""

    def __init__(self, snapshot: Snapshot, state: EngineState, now: datetime) -> None:
        self.now = now
        self.zones: dict[str, ZoneInfo] = {}
        self.last_by_rule: dict[tuple[str, str], ActionRecord] = {}
        self.last_mutation: dict[str, ActionRecord] = {}
        self.budget_changes_hour: Counter[str] = Counter()
        day_events: set[tuple[str, str, datetime]] = set()
        hour_ago = now - timedelta(hours=1)
        day_ago = now - timedelta(hours=24)
        for rec in sorted(state.actions, key=lambda r: r.at):
            self.last_by_rule[(rec.rule, rec.entity_id)] = rec
            if rec.kind in MUTATING_ACTIONS:
                self.last_mutation[rec.entity_id] = rec
            if rec.kind in BUDGET_ACTIONS and rec.at > hour_ago:
                self.budget_changes_hour[rec.entity_id] += 1
            if rec.at > day_ago:
                day_events.add((rec.rule, rec.entity_id, rec.at))  # pause + notify at once = one action
        self.rule_day: Counter[str] = Counter(rule for rule, _, _ in day_events)
        self.run_rule: Counter[str] = Counter()
        self.run_total = 0
        self.mutated: dict[str, str] = {}  # entity id -> rule that changed it in this run
        self.status: dict[str, str] = {}
        self.budget: dict[tuple[str, str], int] = {}
        self.account_daily: Counter[str] = Counter()
        # account ids are compared without Meta's "act_" prefix, whichever form the service used
        self.ceilings = {_norm_account(k): v for k, v in state.account_daily_budget_ceiling.items()}
        self.data_as_of = {_norm_account(k): v for k, v in state.data_as_of.items()}
        for e in snapshot.entities:
            if e.level != "ad" and e.status == "ACTIVE" and e.daily_budget:
                self.account_daily[_norm_account(e.account_id)] += e.daily_budget


def _decision(
    rule_name: str,
    entity: Entity,
    now: datetime,
    outcome: Outcome,
    explanation: str,
    *,
    reason: ReasonCode | None = None,
    capped: bool = False,
    actions: tuple[Action, ...] = (),
    metrics: dict[str, dict[str, float | int | None]] | None = None,
) -> Decision:
    # Built from values this module produced and typed; skipping re-validation keeps a 10k-entity run fast. This is
    # what Decision.model_construct does for a full set of fields, minus its per-field loop (a third of a 10k-entity
    # run). tests/unit/test_rules_logic.py checks it against model_construct and round-trips decisions through
    # Decision.model_validate to keep this honest.
    decision = _new_decision(Decision)
    _set(
        decision,
        "__dict__",
        {
            "rule": rule_name,
            "entity_id": entity.id,
            "entity_level": entity.level,
            "entity_name": entity.name,
            "account_id": entity.account_id,
            "currency": entity.currency,
            "outcome": outcome,
            "reason": reason,
            "capped": capped,
            "actions": actions,
            "metrics": metrics or {},
            "explanation": explanation,
            "evaluated_at": now,
        },
    )
    _set(decision, "__pydantic_fields_set__", set(_DECISION_FIELDS))
    _set(decision, "__pydantic_extra__", None)
    _set(decision, "__pydantic_private__", None)
    return decision


_new_decision = Decision.__new__
_set = object.__setattr__
_DECISION_FIELDS = frozenset(Decision.model_fields)


def _describe(entity: Entity) -> str:
    return f"{_LEVEL_TEXT[entity.level]} '{entity.name}'"


_INFINITIVE = {
    "pause": "pause",
    "pause_for_today": "pause for today",
    "unpause": "unpause",
    "change_budget": "change the budget of",
    "set_budget": "set the budget of",
    "notify": "flag",
}


def evaluate(
    rules: Sequence[Rule],
    snapshot: Snapshot,
    state: EngineState,
    now: datetime,
    settings: EngineSettings | None = None,
) -> list[Decision]:
    """Evaluate the enabled rules against the snapshot as of ``now`` (timezone-aware).

    Returns one decision per rule × entity that matched, was judged on too little data, or was held by a
    guardrail (plus ``not_matched`` ones when ``settings.include_not_matched``), and one ``unpause`` decision
    for each entity whose ``pause_for_today`` has ended. Acting decisions carry ``actions``.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # A run allocates a few hundred thousand short-lived objects next to the snapshot's rows, which stay tracked by
    # the cyclic collector (NamedTuples are never untracked): every full collection during the run walks all rows
    # again, a quarter of a 10k-entity run. Evaluation makes no reference cycles, so the collector waits for the end.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return _evaluate(rules, snapshot, state, now, settings or EngineSettings())
    finally:
        if collecting:
            gc.enable()


def _evaluate(
    rules: Sequence[Rule], snapshot: Snapshot, state: EngineState, now: datetime, settings: EngineSettings
) -> list[Decision]:
    active = sorted((r for r in rules if r.enabled), key=_rule_order)
    run = _Run(snapshot, state, now)
    decisions: list[Decision] = []

    by_level: dict[str, list[Entity]] = {}
    for entity in snapshot.entities:
        by_level.setdefault(entity.level, []).append(entity)
    by_id = {e.id: e for e in snapshot.entities}

    decisions.extend(_resumes(run, by_id, settings))

    windows = sorted({w for r in active for w in r.windows()} | {"today"})
    needs: dict[str, set[str]] = {"today": {"spend"}}  # today's spend: floor for budget cuts
    for rule in active:
        for cond in [*rule.min_data, *rule.conditions.leaves()]:
            needs.setdefault(cond.window, set()).add(cond.metric)
            if cond.compare_to is not None:
                needs.setdefault(cond.right_window, set()).add(cond.compare_to.metric)
    slots = [(w, c) for w in windows for c in sorted({c for m in needs.get(w, ()) for c in _METRIC_COLUMNS.get(m, ())})]
    ctx = _Context(windows, slots, snapshot.window_reach)
    levels = {r.scope.level for r in active}
    sums = aggregate_windows(snapshot, slots, levels, now)
    no_rows = ctx.no_rows
    views = {level: [_View(e, sums.get(e.id, no_rows), ctx) for e in by_level.get(level, ())] for level in levels}
    include_not_matched = settings.include_not_matched

    for rule in active:
        matches = _compile_group(rule.conditions, ctx)
        guards = [_compile_leaf(c, ctx) for c in rule.min_data]
        refs = [(bucket, metric, ctx.getter(metric, window)) for bucket, metric, window in _metric_refs(rule)]
        statuses = rule.statuses()
        status_of = run.status.get
        for view in _static_scope(rule, views[rule.scope.level], run):
            entity = view.entity
            if status_of(entity.id, entity.status) not in statuses:
                continue
            if not matches(view):
                if include_not_matched:
                    decisions.append(_not_matched(rule, refs, view, now))
                continue
            enough = True
            for guard in guards:
                if not guard(view):
                    enough = False
                    break
            decisions.append(_judge(rule, refs, view, enough, run, state, settings))

    counts = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    logger.info(
        "rules evaluated: %d rules, %d entities, %s",
        len(active),
        len(snapshot.entities),
        dict(sorted(counts.items())),
    )
    return decisions


def _paused_by(run: _Run, rules: Sequence[str], within_hours: float | None, entity_id: str) -> bool:
    rec = run.last_mutation.get(entity_id)
    if rec is None or rec.kind not in ("pause", "pause_for_today") or rec.rule not in rules:
        return False
    return within_hours is None or run.now - rec.at <= timedelta(hours=within_hours)


def _resumes(run: _Run, by_id: Mapping[str, Entity], settings: EngineSettings) -> list[Decision]:
    """Unpause entities whose ``pause_for_today`` has reached the account's midnight."""
    out: list[Decision] = []
    for entity_id, rec in run.last_mutation.items():
        if rec.kind != "pause_for_today" or rec.resume_at is None or rec.resume_at > run.now:
            continue
        entity = by_id.get(entity_id)
        if entity is None or entity.status != "PAUSED":
            continue
        account = _norm_account(entity.account_id)
        ceiling = run.ceilings.get(account)
        added = entity.daily_budget or 0
        if ceiling is not None and run.account_daily[account] + added > ceiling:
            out.append(
                _decision(
                    rec.rule,
                    entity,
                    run.now,
                    "skipped",
                    f"Did not unpause {_describe(entity)} after its pause for today because its "
                    f"{format_money(added, entity.currency)} daily budget would put the account at "
                    f"{format_money(run.account_daily[account] + added, entity.currency)}, over the "
                    f"{format_money(ceiling, entity.currency)} ceiling.",
                    reason="ceiling",
                )
            )
            continue
        explanation = (
            f"Unpaused {_describe(entity)} because its pause for today by rule '{rec.rule}' ended at midnight "
            f"({entity.timezone})."
        )
        action = Action(
            kind="unpause",
            rule=rec.rule,
            entity_id=entity.id,
            entity_level=entity.level,
            account_id=entity.account_id,
            reason=explanation,
            idempotency_key=f"{rec.rule}:{entity.id}:resume:{rec.resume_at.isoformat()}",
        )
        run.status[entity.id] = "ACTIVE"
        run.account_daily[account] += added
        out.append(
            _decision(
                rec.rule,
                entity,
                run.now,
                "would_act" if settings.dry_run else "acted",
                explanation,
                actions=(action,),
            )
        )
    return out


def _static_scope(rule: Rule, views: list[_View], run: _Run) -> list[_View]:
    """The views a rule looks at, before the status test (statuses change as earlier rules act)."""
    scope = rule.scope
    accounts = {_norm_account(a) for a in scope.accounts}
    campaign_ids = set(scope.campaign_ids)
    entity_ids = set(scope.entity_ids)
    if not (accounts or campaign_ids or entity_ids or scope.paused_by) and scope.name is scope.campaign_name is None:
        return views
    out = []
    for view in views:
        entity = view.entity
        if accounts and _norm_account(entity.account_id) not in accounts:
            continue
        if campaign_ids and entity.campaign_id not in campaign_ids:
            continue
        if entity_ids and entity.id not in entity_ids:
            continue
        if scope.name is not None and not _text_ok(scope.name, entity.name):
            continue
        if scope.campaign_name is not None and not _text_ok(scope.campaign_name, entity.campaign_name):
            continue
        if scope.paused_by and not _paused_by(run, scope.paused_by, scope.paused_within_hours, entity.id):
            continue
        out.append(view)
    return out


def _not_matched(rule: Rule, refs: Iterable[Read], view: _View, now: datetime) -> Decision:
    failed = "; ".join(_leaf_text(c, view, needs=True) for c in rule.conditions.leaves())
    return _decision(
        rule.name,
        view.entity,
        now,
        "skipped",
        f"Rule '{rule.name}' did not match {_describe(view.entity)}: {failed}.",
        reason="not_matched",
        metrics=_collect_metrics(refs, view),
    )


def _judge(
    rule: Rule,
    refs: Iterable[Read],
    view: _View,
    enough_data: bool,
    run: _Run,
    state: EngineState,
    settings: EngineSettings,
) -> Decision:
    """Apply the guardrails to a rule that matched an entity and build the decision."""
    entity = view.entity
    now = run.now
    metrics = _collect_metrics(refs, view)
    if not enough_data:
        guard = next(g for g in rule.min_data if not _leaf_true(g, view))
        return _decision(
            rule.name,
            entity,
            now,
            "skipped",
            f"Did not {_INFINITIVE[rule.main_action]} {_describe(entity)} (too little data: "
            f"{_leaf_text(guard, view, needs=True)}) although {_because(rule, view, guards=False)}.",
            reason="insufficient_data",
            metrics=metrics,
        )
    because = _because(rule, view)
    kind = rule.main_action
    account = _norm_account(entity.account_id)
    g = rule.guardrails

    def skip(reason: ReasonCode, why: str) -> Decision:
        return _decision(
            rule.name,
            entity,
            now,
            "skipped",
            f"Did not {_INFINITIVE[kind]} {_describe(entity)} ({why}) although {because}.",
            reason=reason,
            metrics=metrics,
        )

    as_of = run.data_as_of.get(account)
    if as_of is None:
        return skip("stale_data", f"no insights freshness recorded for account {entity.account_id}")
    if now - as_of > settings.max_data_age:
        return skip("stale_data", f"insights for account {entity.account_id} are {_ago(now - as_of)} old")
    failures = state.consecutive_failures.get(rule.name, 0)
    if failures >= settings.circuit_breaker_failures:
        return skip("circuit_open", f"circuit breaker open after {failures} consecutive failed actions")
    if kind in MUTATING_ACTIONS and entity.id in run.mutated:
        return skip("conflict", f"rule '{run.mutated[entity.id]}' already changed it in this run")
    last = run.last_by_rule.get((rule.name, entity.id))
    if last is not None and now - last.at < timedelta(hours=g.cooldown_hours):
        return skip(
            "cooldown",
            f"cooldown: this rule acted on it {_ago(now - last.at)} ago, cooldown {g.cooldown_hours:g} h",
        )
    if run.run_rule[rule.name] >= g.max_actions_per_run:
        return skip("max_actions", f"the rule reached its limit of {g.max_actions_per_run} actions per run")
    if run.run_total >= settings.max_actions_per_run:
        return skip("max_actions", f"the engine reached its limit of {settings.max_actions_per_run} actions per run")
    if run.rule_day[rule.name] + run.run_rule[rule.name] >= g.max_actions_per_day:
        return skip("max_actions", f"the rule reached its limit of {g.max_actions_per_day} actions per day")

    status = run.status.get(entity.id, entity.status)
    dry = rule.dry_run or settings.dry_run
    outcome: Outcome = "would_act" if dry else "acted"
    key_time = now.strftime("%Y%m%dT%H%M%S")
    capped = False
    cap_reason: ReasonCode | None = None
    budget_fields: dict[str, Any] = {}
    resume_at: datetime | None = None

    if kind in ("pause", "pause_for_today"):
        if status == "PAUSED":
            return skip("no_change", "it is already paused")
        if kind == "pause_for_today":
            resume_at = _next_midnight(now, entity.timezone, run.zones)
            verb = f"Paused {_describe(entity)} until midnight ({entity.timezone})"
        else:
            verb = f"Paused {_describe(entity)}"
    elif kind == "unpause":
        if status == "ACTIVE":
            return skip("no_change", "it is already active")
        ceiling = run.ceilings.get(account)
        added = entity.daily_budget or 0
        if ceiling is not None and run.account_daily[account] + added > ceiling:
            return skip(
                "ceiling",
                f"its {format_money(added, entity.currency)} daily budget would put the account at "
                f"{format_money(run.account_daily[account] + added, entity.currency)}, over the "
                f"{format_money(ceiling, entity.currency)} ceiling",
            )
        verb = f"Unpaused {_describe(entity)}"
    elif kind in BUDGET_ACTIONS:
        spec = next(a for a in rule.actions if isinstance(a, ChangeBudgetAction | SetBudgetAction))
        plan = _plan_budget(rule, spec, view, run, settings)
        if isinstance(plan, _Skip):
            return skip(plan.reason, plan.why)
        budget_fields, capped, cap_reason, verb = plan.fields, plan.capped, plan.cap_reason, plan.sentence
    else:
        verb = f"Flagged {_describe(entity)}"

    explanation = f"{verb} because {because}."
    if dry:
        explanation = f"Dry run: would have {explanation[0].lower()}{explanation[1:]}"
    actions: list[Action] = []
    for spec_action in rule.actions:
        common = {
            "rule": rule.name,
            "entity_id": entity.id,
            "entity_level": entity.level,
            "account_id": entity.account_id,
            "reason": explanation,
            "idempotency_key": f"{rule.name}:{entity.id}:{spec_action.type}:{key_time}",
        }
        if isinstance(spec_action, NotifyAction):
            actions.append(
                Action(
                    kind="notify",
                    channels=tuple(spec_action.channels),
                    email_to=tuple(spec_action.email_to),
                    **common,
                )
            )
        elif spec_action.type in BUDGET_ACTIONS:
            actions.append(Action(kind=spec_action.type, currency=entity.currency, **budget_fields, **common))
        else:
            actions.append(Action(kind=spec_action.type, resume_at=resume_at, **common))

    run.run_rule[rule.name] += 1
    run.run_total += 1
    if kind in MUTATING_ACTIONS:
        run.mutated[entity.id] = rule.name
    if kind in ("pause", "pause_for_today"):
        run.status[entity.id] = "PAUSED"
        if status == "ACTIVE" and entity.daily_budget and entity.level != "ad":
            run.account_daily[account] -= entity.daily_budget
    elif kind == "unpause":
        run.status[entity.id] = "ACTIVE"
        if entity.level != "ad":
            run.account_daily[account] += entity.daily_budget or 0
    if outcome == "acted":
        logger.info(
            "rule acted: %s",
            explanation,
            extra={"rule": rule.name, "entity_id": entity.id, "kind": kind},
        )
    return _decision(
        rule.name,
        entity,
        now,
        outcome,
        explanation,
        reason=cap_reason,
        capped=capped,
        actions=tuple(actions),
        metrics=metrics,
    )


def _plan_budget(
    rule: Rule,
    spec: ChangeBudgetAction | SetBudgetAction,
    view: _View,
    run: _Run,
    settings: EngineSettings,
) -> _Skip | _BudgetPlan:
    """Work out a budget change within the guardrails, or why it cannot be made."""
    entity = view.entity
    g = rule.guardrails
    currency = entity.currency
    field_name = spec.budget
    label = field_name.replace("_", " ")
    current = run.budget.get((entity.id, field_name), getattr(entity, field_name))
    if not current:
        return _Skip("no_budget", f"it has no {label} (the budget may sit on its campaign)")
    done = run.budget_changes_hour[entity.id]
    if done >= settings.budget_changes_per_hour:
        return _Skip(
            "budget_change_rate",
            f"Meta allows {settings.budget_changes_per_hour} budget changes per ad set per hour and {done} "
            "were made in the last hour",
        )
    if isinstance(spec, ChangeBudgetAction):
        wanted = round(current * (1 + spec.percent / 100))
    else:
        wanted = to_minor(spec.amount, currency)
    target = wanted
    capped = False
    cap_reason: ReasonCode | None = None
    notes: list[str] = []
    if target > current:
        step_max = math.floor(current * (1 + g.max_budget_step_pct / 100))
        if target > step_max:
            target, capped, cap_reason = step_max, True, "guard_budget_step"
            notes.append(f"capped from {_pct(current, wanted)} by the {g.max_budget_step_pct:g}% step limit")
        if g.max_budget is not None and target > to_minor(g.max_budget, currency):
            target = max(current, to_minor(g.max_budget, currency))
            capped, cap_reason = True, cap_reason or "budget_limit"
            notes.append(f"capped at the rule's maximum {format_money(to_minor(g.max_budget, currency), currency)}")
    elif target < current:
        step_min = math.ceil(current * (1 - g.max_budget_decrease_pct / 100))
        if target < step_min:
            target, capped, cap_reason = step_min, True, "guard_budget_step"
            notes.append(f"capped from {_pct(current, wanted)} by the {g.max_budget_decrease_pct:g}% cut limit")
        floors = []
        if g.min_budget is not None:
            floors.append((to_minor(g.min_budget, currency), "the rule's minimum"))
        if field_name == "daily_budget":
            spent = view.value("spend", "today") or 0
            floors.append((math.ceil(spent * settings.spend_floor_pct / 100), "110% of today's spend"))
        for floor, why in floors:
            if target < floor:
                target = min(current, floor)
                capped, cap_reason = True, cap_reason or "budget_limit"
                notes.append(f"held at {why} {format_money(floor, currency)}")
    if target == current:
        return _Skip("no_change", f"the {label} stays at {format_money(current, currency)} after the limits")
    account = _norm_account(entity.account_id)
    ceiling = run.ceilings.get(account)
    counted = field_name == "daily_budget" and run.status.get(entity.id, entity.status) == "ACTIVE"
    if ceiling is not None and counted and target > current:
        total = run.account_daily[account] - current + target
        if total > ceiling:
            return _Skip(
                "ceiling",
                f"raising it to {format_money(target, currency)} would put the account's daily budgets at "
                f"{format_money(total, currency)}, over the {format_money(ceiling, currency)} ceiling",
            )
    run.budget[(entity.id, field_name)] = target
    run.budget_changes_hour[entity.id] += 1
    if counted:
        run.account_daily[account] += target - current
    direction = "Raised" if target > current else "Lowered"
    detail = _pct(current, target) + (", " + "; ".join(notes) if notes else "")
    verb = (
        f"{direction} the {label} of {_describe(entity)} from {format_money(current, currency)} to "
        f"{format_money(target, currency)} ({detail})"
    )
    fields = {"budget_field": field_name, "budget": target, "previous_budget": current}
    return _BudgetPlan(fields, capped, cap_reason, verb)


@dataclass(frozen=True, slots=True)
class _Skip:
    reason: ReasonCode
    why: str


@dataclass(frozen=True, slots=True)
class _BudgetPlan:
    fields: dict[str, Any]
    capped: bool
    cap_reason: ReasonCode | None
    sentence: str


def _pct(old: int, new: int) -> str:
    return f"{(new - old) / old * 100:+.0f}%"


# ---------------------------------------------------------------------------------------------------------------
# State upkeep


def record_actions(
    state: EngineState,
    decisions: Iterable[Decision],
    *,
    include_dry_run: bool = False,
    keep: timedelta = timedelta(days=8),
) -> EngineState:
    """Return ``state`` with the decisions' actions appended to the history (acted ones; also would_act ones
    with ``include_dry_run``, as the backtest does), dropping records older than ``keep``."""
    wanted = {"acted", "would_act"} if include_dry_run else {"acted"}
    new = [
        ActionRecord(rule=a.rule, entity_id=a.entity_id, kind=a.kind, at=d.evaluated_at, resume_at=a.resume_at)
        for d in decisions
        if d.outcome in wanted
        for a in d.actions
    ]
    records = [*state.actions, *new]
    if records:
        newest = max(r.at for r in records)
        records = [r for r in records if newest - r.at <= keep]
    return replace(state, actions=tuple(records))


def record_result(state: EngineState, rule: str, *, ok: bool) -> EngineState:
    """Update the circuit-breaker count of ``rule`` after the executor reports a command's result."""
    failures = dict(state.consecutive_failures)
    failures[rule] = 0 if ok else failures.get(rule, 0) + 1
    return replace(state, consecutive_failures=failures)
