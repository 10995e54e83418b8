"""The guardrails a matched rule passes before it acts, and the plan of each kind of action within them.

Each guard is a small function that returns why the rule is held (`Held`) or None. The run-wide guards (fresh
data, circuit breaker, conflicts, cooldown, action limits) apply to every rule; then the rule's main action is
planned (`plan_action`): a pause or unpause that would change nothing is held, an unpause or raise that would
cross the account's daily ceiling is held, a budget change is capped by the rule's step and budget limits, the
spend floor and Meta's hourly limit on budget changes (`shared.budget_guardrails`).

`RunState` is the bookkeeping of one evaluation: what the history says and what earlier rules of this run did.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from services.rules_engine.conditions import View
from services.rules_engine.explain import ago, describe, pct
from services.rules_engine.model import (
    ActionRecord,
    BudgetLimit,
    EngineSettings,
    EngineState,
    Entity,
    ReasonCode,
    Snapshot,
    norm_account,
)
from services.rules_engine.rules import (
    BUDGET_ACTIONS,
    MUTATING_ACTIONS,
    ChangeBudgetAction,
    Rule,
    SetBudgetAction,
)
from services.rules_engine.windows import next_midnight
from shared.budget_guardrails import max_daily_budget, spend_floor
from shared.money import format_money, to_minor

PAUSES = frozenset({"pause", "pause_for_today"})


class RunState:
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
        self.ceilings = {norm_account(k): v for k, v in state.account_daily_budget_ceiling.items()}
        self.limits = state.budget_limits
        self.increases: Counter[str] = Counter()  # budget increases decided in this run, per entity
        self.data_as_of = {norm_account(k): v for k, v in state.data_as_of.items()}
        self.entities = snapshot.entities  # creative rotation looks for an ad's reserves among them (rotation.py)
        self.ads_by_adset: dict[str, list[Entity]] | None = None
        self.retired = set(state.retired_ads)
        self.failures = state.consecutive_failures
        self.consented = state.consented
        for e in snapshot.entities:
            if e.level != "ad" and e.status == "ACTIVE" and e.daily_budget:
                self.account_daily[norm_account(e.account_id)] += e.daily_budget

    def consents(self, rule: str) -> bool:
        """Whether the operator let ``rule`` act (else it runs in shadow mode)."""
        return self.consented is None or rule in self.consented

    def status_of(self, entity: Entity) -> str:
        return self.status.get(entity.id, entity.status)

    def record(self, rule: Rule, entity: Entity, status_before: str) -> None:
        """Count an action of ``rule`` on ``entity`` and apply its effect to the statuses and daily totals."""
        kind = rule.main_action
        account = norm_account(entity.account_id)
        self.run_rule[rule.name] += 1
        self.run_total += 1
        if kind in MUTATING_ACTIONS:
            self.mutated[entity.id] = rule.name
        if kind in PAUSES:
            self.status[entity.id] = "PAUSED"
            if status_before == "ACTIVE" and entity.daily_budget and entity.level != "ad":
                self.account_daily[account] -= entity.daily_budget
        elif kind == "unpause":
            self.status[entity.id] = "ACTIVE"
            if entity.level != "ad":
                self.account_daily[account] += entity.daily_budget or 0

    def paused_by(self, rules: Sequence[str], within_hours: float | None, entity_id: str) -> bool:
        """Whether the entity's last mutation is a pause by one of ``rules`` (within the hours, if given)."""
        rec = self.last_mutation.get(entity_id)
        if rec is None or rec.kind not in PAUSES or rec.rule not in rules:
            return False
        return within_hours is None or self.now - rec.at <= timedelta(hours=within_hours)

    def ceiling_crossed(self, entity: Entity, added: int) -> Held | None:
        """Held when ``added`` more daily budget would put the entity's account over its ceiling."""
        account = norm_account(entity.account_id)
        ceiling = self.ceilings.get(account)
        if ceiling is None or self.account_daily[account] + added <= ceiling:
            return None
        currency = entity.currency
        return Held(
            "ceiling",
            f"its {format_money(added, currency)} daily budget would put the account at "
            f"{format_money(self.account_daily[account] + added, currency)}, over the "
            f"{format_money(ceiling, currency)} ceiling",
        )


@dataclass(frozen=True, slots=True)
class Held:
    """Why a guardrail holds a rule back: the reason code and the words for the explanation."""

    reason: ReasonCode
    why: str


@dataclass(frozen=True, slots=True)
class ActionPlan:
    """What the main action will do: the sentence, and for budgets the fields of the action and any cap."""

    sentence: str
    budget_fields: dict[str, Any] = field(default_factory=dict)
    capped: bool = False
    cap_reason: ReasonCode | None = None
    resume_at: datetime | None = None
    action_fields: dict[str, Any] = field(default_factory=dict)  # other fields of the action (a rotation's reserve)


# ---------------------------------------------------------------------------------------------------------------
# Guards every rule passes

Guard = Callable[[Rule, Entity, RunState, EngineSettings], "Held | None"]


def fresh_data(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    as_of = run.data_as_of.get(norm_account(entity.account_id))
    if as_of is None:
        return Held("stale_data", f"no insights freshness recorded for account {entity.account_id}")
    if run.now - as_of > settings.max_data_age:
        return Held("stale_data", f"insights for account {entity.account_id} are {ago(run.now - as_of)} old")
    return None


def circuit_closed(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    failures = run.failures.get(rule.name, 0)
    if failures >= settings.circuit_breaker_failures:
        return Held("circuit_open", f"circuit breaker open after {failures} consecutive failed actions")
    return None


def no_conflict(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    if entity.id in run.mutated and rule.main_action in MUTATING_ACTIONS:
        return Held("conflict", f"rule '{run.mutated[entity.id]}' already changed it in this run")
    return None


def cooled_down(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    last = run.last_by_rule.get((rule.name, entity.id))
    hours = rule.guardrails.cooldown_hours
    if last is not None and run.now - last.at < timedelta(hours=hours):
        return Held("cooldown", f"cooldown: this rule acted on it {ago(run.now - last.at)} ago, cooldown {hours:g} h")
    return None


def within_action_limits(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    g = rule.guardrails
    if run.run_rule[rule.name] >= g.max_actions_per_run:
        return Held("max_actions", f"the rule reached its limit of {g.max_actions_per_run} actions per run")
    if run.run_total >= settings.max_actions_per_run:
        return Held("max_actions", f"the engine reached its limit of {settings.max_actions_per_run} actions per run")
    if run.rule_day[rule.name] + run.run_rule[rule.name] >= g.max_actions_per_day:
        return Held("max_actions", f"the rule reached its limit of {g.max_actions_per_day} actions per day")
    return None


GUARDS: tuple[Guard, ...] = (fresh_data, circuit_closed, no_conflict, cooled_down, within_action_limits)


def first_held(rule: Rule, entity: Entity, run: RunState, settings: EngineSettings) -> Held | None:
    """The first guard that holds the rule back from acting on ``entity``, or None."""
    for guard in GUARDS:
        held = guard(rule, entity, run, settings)
        if held is not None:
            return held
    return None


# ---------------------------------------------------------------------------------------------------------------
# The main action, planned within the limits

def plan_action(rule: Rule, view: View, run: RunState, settings: EngineSettings, status: str) -> Held | ActionPlan:
    """What the rule's main action does to the entity (its status is ``status`` in this run), or why it cannot."""
    kind = rule.main_action
    entity = view.entity
    if kind in PAUSES:
        return _plan_pause(kind, entity, run, status)
    if kind == "unpause":
        return _plan_unpause(entity, run, status)
    if kind in BUDGET_ACTIONS:
        spec = next(a for a in rule.actions if isinstance(a, ChangeBudgetAction | SetBudgetAction))
        return plan_budget(rule, spec, view, run, settings)
    return ActionPlan(f"Flagged {describe(entity)}")


def _plan_pause(kind: str, entity: Entity, run: RunState, status: str) -> Held | ActionPlan:
    if status == "PAUSED":
        return Held("no_change", "it is already paused")
    if kind == "pause_for_today":
        return ActionPlan(
            f"Paused {describe(entity)} until midnight ({entity.timezone})",
            resume_at=next_midnight(run.now, entity.timezone, run.zones),
        )
    return ActionPlan(f"Paused {describe(entity)}")


def _plan_unpause(entity: Entity, run: RunState, status: str) -> Held | ActionPlan:
    if status == "ACTIVE":
        return Held("no_change", "it is already active")
    return run.ceiling_crossed(entity, entity.daily_budget or 0) or ActionPlan(f"Unpaused {describe(entity)}")


def plan_budget(
    rule: Rule,
    spec: ChangeBudgetAction | SetBudgetAction,
    view: View,
    run: RunState,
    settings: EngineSettings,
) -> Held | ActionPlan:
    """Work out a budget change within the guardrails, or why it cannot be made."""
    entity = view.entity
    field_name = spec.budget
    label = field_name.replace("_", " ")
    current = run.budget.get((entity.id, field_name), getattr(entity, field_name))
    if not current:
        return Held("no_budget", f"it has no {label} (the budget may sit on its campaign)")
    done = run.budget_changes_hour[entity.id]
    if done >= settings.budget_changes_per_hour:
        return Held(
            "budget_change_rate",
            f"Meta allows {settings.budget_changes_per_hour} budget changes per ad set per hour and {done} "
            "were made in the last hour",
        )
    limit = run.limits.get(entity.id)
    if limit is not None and limit.blocked_until is not None and limit.blocked_until > run.now:
        return Held(
            "budget_change_rate",
            f"Meta blocks budget changes on it until {limit.blocked_until.astimezone(UTC):%H:%M} UTC (too many "
            "changes within an hour)",
        )
    if isinstance(spec, ChangeBudgetAction):
        wanted = percent_change(current, spec.percent)
    else:
        wanted = to_minor(spec.amount, entity.currency)
    if wanted > current:
        target, cap_reason, notes = _capped_raise(rule, settings, entity.currency, current, wanted)
    elif wanted < current:
        target, cap_reason, notes = _capped_cut(rule, field_name, view, settings, current, wanted)
    else:
        target, cap_reason, notes = wanted, None, []
    currency = entity.currency
    if target > current and limit is not None:
        hard = _hard_limits(limit, run.increases[entity.id], field_name, current, target, currency, settings)
        if isinstance(hard, Held):
            return hard
        if hard < target:
            target, cap_reason = hard, cap_reason or "hard_max_budget"
            notes.append(f"capped at its hard limit {format_money(hard, currency)}")
    if target == current:
        return Held("no_change", f"the {label} stays at {format_money(current, currency)} after the limits")
    account = norm_account(entity.account_id)
    counted = field_name == "daily_budget" and run.status_of(entity) == "ACTIVE"
    ceiling = run.ceilings.get(account)
    if ceiling is not None and counted and target > current:
        total = run.account_daily[account] - current + target
        if total > ceiling:
            return Held(
                "ceiling",
                f"raising it to {format_money(target, currency)} would put the account's daily budgets at "
                f"{format_money(total, currency)}, over the {format_money(ceiling, currency)} ceiling",
            )
    run.budget[(entity.id, field_name)] = target
    run.budget_changes_hour[entity.id] += 1
    if target > current:
        run.increases[entity.id] += 1
    if counted:
        run.account_daily[account] += target - current
    direction = "Raised" if target > current else "Lowered"
    detail = pct(current, target) + (", " + "; ".join(notes) if notes else "")
    sentence = (
        f"{direction} the {label} of {describe(entity)} from {format_money(current, currency)} to "
        f"{format_money(target, currency)} ({detail})"
    )
    fields = {"budget_field": field_name, "budget": target, "previous_budget": current}
    return ActionPlan(sentence, fields, cap_reason is not None, cap_reason)


def percent_change(current: int, percent: float) -> int:
    """``current`` changed by ``percent``, in whole minor units rounded toward ``current`` (a -20% cut of 3,333 is
    2,667, never 2,666, which would be a 20.006% step the executor refuses). Exact: no float rounding."""
    changed = Fraction(current) * (100 + Fraction(str(percent))) / 100
    return math.floor(changed) if percent > 0 else math.ceil(changed)


def _hard_limits(
    limit: BudgetLimit, increases_now: int, field_name: str, current: int, target: int, currency: str,
    settings: EngineSettings,
) -> Held | int:
    """The executor's hard limits on a raise (they refuse it, `force` or not): held, or the highest target they
    allow. So a rule never decides a raise the executor will refuse (which would also trip its breaker)."""
    done = limit.increases_week + increases_now
    if done >= settings.max_increases_per_week:
        return Held(
            "budget_increases_per_week",
            f"its budget was raised {done} times in the last 7 days (the executor allows "
            f"{settings.max_increases_per_week} a week)",
        )
    if field_name != "daily_budget" or limit.first_seen is None:
        return target
    hard = max_daily_budget(limit.first_seen, settings.max_multiple_of_first_seen)
    if hard <= current:
        return Held(
            "hard_max_budget",
            f"its daily budget {format_money(current, currency)} is at its hard limit of "
            f"{format_money(hard, currency)} ({settings.max_multiple_of_first_seen:g}× the "
            f"{format_money(limit.first_seen, currency)} leadwire first saw)",
        )
    return min(target, hard)


def _capped_raise(
    rule: Rule, settings: EngineSettings, currency: str, current: int, wanted: int
) -> tuple[int, ReasonCode | None, list[str]]:
    """A raise within the step limit (the rule's, at most the executor's) and the rule's maximum budget:
    (target, cap reason, notes for the sentence)."""
    g = rule.guardrails
    target, cap_reason, notes = wanted, None, []
    limit = min(g.max_budget_step_pct, settings.max_step_pct)
    step_max = percent_change(current, limit)
    if target > step_max:
        target, cap_reason = step_max, "guard_budget_step"
        notes.append(f"capped from {pct(current, wanted)} by the {limit:g}% step limit")
    if g.max_budget is not None and target > to_minor(g.max_budget, currency):
        target = max(current, to_minor(g.max_budget, currency))
        cap_reason = cap_reason or "budget_limit"
        notes.append(f"capped at the rule's maximum {format_money(to_minor(g.max_budget, currency), currency)}")
    return target, cap_reason, notes


def _capped_cut(
    rule: Rule, field_name: str, view: View, settings: EngineSettings, current: int, wanted: int
) -> tuple[int, ReasonCode | None, list[str]]:
    """A cut within the rule's cut limit, its minimum budget and Meta's spend floor (daily budgets)."""
    g = rule.guardrails
    currency = view.entity.currency
    target, cap_reason, notes = wanted, None, []
    limit = min(g.max_budget_decrease_pct, settings.max_step_pct)
    step_min = percent_change(current, -limit)
    if target < step_min:
        target, cap_reason = step_min, "guard_budget_step"
        notes.append(f"capped from {pct(current, wanted)} by the {limit:g}% cut limit")
    floors = []
    if g.min_budget is not None:
        floors.append((to_minor(g.min_budget, currency), "the rule's minimum"))
    if field_name == "daily_budget":
        floors.append((spend_floor(view.value("spend", "today") or 0), "110% of today's spend"))
    for floor, why in floors:
        if target < floor:
            target = min(current, floor)
            cap_reason = cap_reason or "budget_limit"
            notes.append(f"held at {why} {format_money(floor, currency)}")
    return target, cap_reason, notes
