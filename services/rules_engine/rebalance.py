"""Budget rebalancing (issue 20, guide §7.3): move daily budget toward a target cost per (qualified) lead within a
fixed total. `allocate` is the pure arithmetic; `evaluate_rebalance` runs it for a rule over the engine's views.

**Groups.** Scope level ``adset``: the ad sets of each campaign (a campaign whose ad sets have no daily budget of
their own has a campaign budget, CBO: nothing to move inside it; give it a level ``campaign`` rule). Scope level
``campaign``: the campaign budgets of each ad account (CBO campaigns). Only ACTIVE objects with a daily budget
that match the rule's conditions and ``min_data`` take part; the others keep their budgets.

**Judging, with little data** (docs/decision-quality.md: at small budgets a CPL is mostly noise):
* an object is judged only with ``min_events`` leads / qualified leads in the window, or — a non-converting
  object is the first donor — a spend of at least ``min_events`` × target (it "should" have brought that many);
* its cost is shrunk toward the target: (spend + k × target) ÷ (events + k), k = ``prior_events``; with few
  events it stays near the target and little or nothing moves;
* within ``deadband_pct`` of the target it is left alone. Dearer ones give, cheaper ones receive: each wants the
  relative change target ÷ cost − 1, bounded by its step (``step_pct``, the rule's step limits and the
  executor's BUDGET_MAX_STEP_PCT, rounded toward the current budget), its floor (110 % of today's spend, the
  rule's ``min_budget``) and its ceiling (the executor's hard limit of ``max_multiple_of_first_seen`` × first
  seen, the rule's ``max_budget``); an object Meta blocks, with the hour's budget changes used up, with its
  increases of the week used up, or changed by another rule in this run or within this rule's ``cooldown_hours``
  gives / receives nothing (the group itself waits ``cooldown_hours`` after a rebalance).

**The sum.** The amount moved is the smaller of what the donors offer and what the recipients can take (nothing
below ``min_move``). Each side is scaled to it in whole minor units by the largest-remainder rule: every share is
first rounded down, then the minor units left go one each to the largest remainders (ties: the lower object
id). Both sides add up to the amount moved exactly, so the total is unchanged to the cent, and no share exceeds
what its object could give or take (the executor refuses nothing the engine knew of).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction

from services.rules_engine.conditions import Check, Context, View, compile_group, compile_leaf
from services.rules_engine.explain import describe, format_value
from services.rules_engine.guardrails import RunState, first_held, percent_change
from services.rules_engine.model import Action, Decision, EngineSettings, Entity, ReasonCode, build_decision
from services.rules_engine.rules import RebalanceAction, Rule
from shared.budget_guardrails import max_daily_budget, spend_floor
from shared.money import format_money, to_minor

# ---------------------------------------------------------------------------------------------------------------
# The pure allocation


@dataclass(frozen=True, slots=True)
class Holder:
    """One object that holds a daily budget (minor units), with what it did over the rule's window."""

    id: str
    budget: int
    spend: int
    events: int
    floor: int  # the lowest budget it may get now (step, spend floor, rule minimum); == budget: cannot give
    ceiling: int  # the highest (step, hard limit, rule maximum); == budget: cannot receive


@dataclass(frozen=True, slots=True)
class Params:
    target: int  # cost per event, minor units
    min_events: int = 3
    prior_events: float = 3.0
    deadband_pct: float = 10.0
    min_move: int = 100  # minor units


@dataclass(frozen=True, slots=True)
class Allocation:
    """New budgets (only those that change), the amount moved, and per object its shrunk cost (None: not judged)."""

    budgets: dict[str, int]
    moved: int
    costs: dict[str, float | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.moved > 0


def enough_data(h: Holder, p: Params) -> bool:
    return h.events >= p.min_events or h.spend >= p.min_events * p.target


def shrunk_cost(h: Holder, p: Params) -> float:
    """(spend + k × target) ÷ (events + k): the cost pulled toward the target by k events at the target cost."""
    weight = h.events + p.prior_events
    if weight <= 0:
        return math.inf
    return (h.spend + p.prior_events * p.target) / weight


def allocate(holders: Sequence[Holder], p: Params) -> Allocation:
    """Move budget from the dearer objects to the cheaper, keeping the sum to the minor unit (see module doc)."""
    costs: dict[str, float | None] = {}
    offers: dict[str, int] = {}
    wants: dict[str, int] = {}
    band = p.deadband_pct / 100
    for h in holders:
        if not enough_data(h, p):
            costs[h.id] = None
            continue
        cost = costs[h.id] = shrunk_cost(h, p)
        change = (p.target / cost - 1) if cost > 0 else math.inf  # relative change it deserves
        if cost > p.target * (1 + band):
            wanted = max(h.floor, math.ceil(h.budget * (1 + change)))
            if wanted < h.budget:
                offers[h.id] = h.budget - wanted
        elif cost < p.target * (1 - band):
            wanted = h.ceiling if change == math.inf else min(h.ceiling, math.floor(h.budget * (1 + change)))
            if wanted > h.budget:
                wants[h.id] = wanted - h.budget
    moved = min(sum(offers.values()), sum(wants.values()))
    if moved < max(p.min_move, 1):
        return Allocation({}, 0, costs)
    budgets: dict[str, int] = {}
    for object_id, share in _shares(offers, moved).items():
        budgets[object_id] = next(h.budget for h in holders if h.id == object_id) - share
    for object_id, share in _shares(wants, moved).items():
        budgets[object_id] = next(h.budget for h in holders if h.id == object_id) + share
    return Allocation(budgets, moved, costs)


def _shares(capacity: dict[str, int], amount: int) -> dict[str, int]:
    """``amount`` split in proportion to ``capacity`` (its sum ≥ amount) in whole units by largest remainder."""
    total = sum(capacity.values())
    exact = {k: Fraction(v * amount, total) for k, v in capacity.items()}
    shares = {k: math.floor(v) for k, v in exact.items()}
    left = amount - sum(shares.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), k))[:left]:
        shares[k] += 1
    return {k: v for k, v in shares.items() if v}


# ---------------------------------------------------------------------------------------------------------------
# The rule over the engine's views


def evaluate_rebalance(
    rule: Rule, views: Sequence[View], ctx: Context, run: RunState, settings: EngineSettings
) -> list[Decision]:
    """One decision per group (campaign or account) with at least one object in the rule's scope."""
    action = rule.rebalance
    assert action is not None
    matches = compile_group(rule.conditions, ctx)
    guards = [compile_leaf(c, ctx) for c in rule.min_data]
    statuses = rule.statuses()
    groups: dict[str, list[View]] = {}
    for view in views:
        e = view.entity
        key = (e.campaign_id or "") if e.level == "adset" else e.account_id
        groups.setdefault(key, []).append(view)
    out = []
    for key in sorted(groups):
        members = [v for v in groups[key] if run.status_of(v.entity) in statuses and v.entity.lifetime_budget is None]
        if not members:
            continue
        anchor = _anchor(rule, key, members[0].entity)
        out.append(_decide(rule, action, anchor, members, matches, guards, run, settings))
    return out


def approval_scope(rule: Rule, entity_id: str) -> dict[str, list[str]]:
    """The scope of an approved decision's re-evaluation: its object, or for a rebalance its group (the campaign's
    ad sets, or the account's campaign budgets), since the decision is about the group."""
    if rule.rebalance is None:
        return {"entity_ids": [entity_id]}
    return {"campaign_ids": [entity_id]} if rule.scope.level == "adset" else {"accounts": [entity_id]}


def _anchor(rule: Rule, key: str, first: Entity) -> Entity:
    """What the group's decision is about: the campaign (ad set groups) or the ad account (campaign budgets)."""
    if rule.scope.level == "adset":
        return Entity(id=key, level="campaign", name=first.campaign_name or key, status="ACTIVE",
                      account_id=first.account_id, campaign_id=key, campaign_name=first.campaign_name,
                      currency=first.currency, timezone=first.timezone)
    return Entity(id=key, level="campaign", name=f"campaign budgets of {key}", status="ACTIVE", account_id=key,
                  currency=first.currency, timezone=first.timezone)


def _decide(rule: Rule, action: RebalanceAction, anchor: Entity, members: list[View], matches: Check,
            guards: list[Check], run: RunState, settings: EngineSettings) -> Decision:
    currency = anchor.currency
    where = _where(rule, anchor)

    def skip(reason: ReasonCode, why: str) -> Decision:
        return build_decision(rule.name, anchor, run.now, "skipped", f"Did not move budget {where} ({why}).",
                              reason=reason, metrics=metrics)

    metrics: dict[str, dict[str, float | int | None]] = {}
    if all(v.entity.daily_budget is None for v in members):
        if rule.scope.level == "adset":
            return skip("no_budget", "its ad sets have no daily budget of their own: the campaign has a campaign "
                                     "budget (CBO), which a rule with scope level campaign rebalances against other "
                                     "campaigns")
        return skip("no_budget", "none of its campaigns has a daily campaign budget: their budgets are on their ad "
                                 "sets, which a rule with scope level adset rebalances")
    held = first_held(rule, anchor, run, settings)
    if held is not None:
        return skip(held.reason, held.why)
    views = {v.entity.id: v for v in members if v.entity.daily_budget and matches(v) and all(g(v) for g in guards)}
    holders = [_holder(rule, action, v, run, settings) for v in views.values()]
    holders.sort(key=lambda h: h.id)
    for h in holders:
        metrics[h.id] = {"daily_budget": h.budget, "spend": h.spend, action.events_metric: h.events}
    target = group_target(action, holders, currency)
    if target is None:
        return skip("insufficient_data", f"its {len(holders)} objects have no {_events(action)} {_window(action)}, "
                                         "so they have no average cost to move toward")
    p = Params(target=target, min_events=action.min_events, prior_events=action.prior_events,
               deadband_pct=action.deadband_pct, min_move=to_minor(action.min_move, currency))
    judged = [h for h in holders if enough_data(h, p)]
    if len(judged) < 2:
        return skip("insufficient_data", f"{len(judged)} of {len(members)} objects have {action.min_events} "
                                          f"{_events(action)} or {format_money(action.min_events * p.target, currency)}"
                                          f" of spend {_window(action)}; at least 2 are needed")
    allocation = allocate(holders, p)
    for object_id, cost in allocation.costs.items():
        metrics[object_id]["shrunk_cost"] = None if cost is None or cost == math.inf else round(cost, 4)
    if not allocation:
        return skip("no_change", f"no move of at least {format_money(p.min_move, currency)} brings the costs "
                                 f"({_costs(holders, allocation, action, currency)}) closer to the "
                                 f"{_target(action, p, currency)} within the limits")
    return _act(rule, action, anchor, views, holders, allocation, p, run, settings, where)


def group_target(action: RebalanceAction, holders: Sequence[Holder], currency: str) -> int | None:
    """The target cost in minor units: the rule's, or with ``average`` the group's pooled cost over the window (its
    objects' spend ÷ their events; None without an event). Shrinking toward the group's own average is the
    empirical-Bayes estimate of each object's cost, and needs no figure the firm must know."""
    if action.target != "average":
        return to_minor(action.target, currency)
    events = sum(h.events for h in holders)
    return round(sum(h.spend for h in holders) / events) if events else None


def _holder(rule: Rule, action: RebalanceAction, view: View, run: RunState, settings: EngineSettings) -> Holder:
    """An object's budget, window figures and the limits within which it may give or receive now."""
    e = view.entity
    budget = run.budget.get((e.id, "daily_budget"), e.daily_budget) or 0
    currency = e.currency
    g = rule.guardrails
    spend = int(view.value("spend", action.window) or 0)
    events = int(view.value(action.events_metric, action.window) or 0)
    limit = run.limits.get(e.id)
    last = run.last_mutation.get(e.id)  # another rule changed it within this rule's cooldown: leave it be
    frozen = (e.id in run.mutated or run.budget_changes_hour[e.id] >= settings.budget_changes_per_hour
              or (last is not None and run.now - last.at < timedelta(hours=g.cooldown_hours))
              or (limit is not None and limit.blocked_until is not None and limit.blocked_until > run.now))
    if frozen:
        return Holder(e.id, budget, spend, events, budget, budget)
    cut = min(action.step_pct, g.max_budget_decrease_pct, settings.max_step_pct)
    floor = max(percent_change(budget, -cut), spend_floor(int(view.value("spend", "today") or 0)),
                to_minor(g.min_budget, currency) if g.min_budget is not None else 0)
    up = min(action.step_pct, g.max_budget_step_pct, settings.max_step_pct)
    ceiling = percent_change(budget, up)
    if g.max_budget is not None:
        ceiling = min(ceiling, to_minor(g.max_budget, currency))
    if limit is not None:
        if limit.increases_week + run.increases[e.id] >= settings.max_increases_per_week:
            ceiling = budget
        elif limit.first_seen is not None:
            ceiling = min(ceiling, max_daily_budget(limit.first_seen, settings.max_multiple_of_first_seen))
    return Holder(e.id, budget, spend, events, min(floor, budget), max(ceiling, budget))


def _act(rule: Rule, action: RebalanceAction, anchor: Entity, views: dict[str, View], holders: list[Holder],
         allocation: Allocation, p: Params, run: RunState, settings: EngineSettings, where: str) -> Decision:
    currency = anchor.currency
    before = {h.id: h.budget for h in holders}
    changed = sorted(allocation.budgets)
    total = sum(before[i] for i in changed)
    parts = "; ".join(
        f"{describe(views[i].entity)} {format_money(before[i], currency)} → "
        f"{format_money(allocation.budgets[i], currency)} ({_cost_text(i, holders, allocation, action, currency)})"
        for i in sorted(changed, key=lambda i: allocation.budgets[i] - before[i]))
    sentence = (f"Moved {format_money(allocation.moved, currency)} a day {where}, total "
                f"{format_money(total, currency)} unchanged, because against the {_target(action, p, currency)}"
                f" {_label(action)} {_window(action)} (shrunk toward it by {action.prior_events:g} "
                f"{_events(action)}): {parts}.")
    dry = rule.dry_run or settings.dry_run
    shadow = not dry and not run.consents(rule.name)
    explanation = sentence
    if dry:
        explanation = f"Dry run: would have {sentence[0].lower()}{sentence[1:]}"
    elif shadow:
        explanation = f"Would move{sentence.removeprefix('Moved')}"
    moves = tuple((i, before[i], allocation.budgets[i]) for i in changed)
    act = Action(kind="rebalance", rule=rule.name, entity_id=anchor.id, entity_level=anchor.level,
                 account_id=anchor.account_id, reason=explanation, currency=currency, moves=moves,
                 moves_level=rule.scope.level,
                 idempotency_key=f"{rule.name}:{anchor.id}:rebalance:{run.now.strftime('%Y%m%dT%H%M%S')}")
    run.record(rule, anchor, "ACTIVE")
    for object_id, old, new in moves:
        run.mutated[object_id] = rule.name
        run.budget[(object_id, "daily_budget")] = new
        run.budget_changes_hour[object_id] += 1
        if new > old:
            run.increases[object_id] += 1
    metrics: dict[str, dict[str, float | int | None]] = {
        i: {"daily_budget": before[i], "new_daily_budget": allocation.budgets.get(i, before[i])} for i in before}
    return build_decision(rule.name, anchor, run.now, "would_act" if dry or shadow else "acted", explanation,
                          actions=(act, *_notify(rule, act)), metrics=metrics, shadow=shadow)


def with_moves(decision: Decision) -> Decision:
    """A rebalance decision with each move also as the set_budget action it amounts to (the backtest replays
    these through its model of the executor's hard limits and its budgets); other decisions unchanged."""
    extra = [
        a.model_copy(update={"kind": "set_budget", "entity_id": object_id, "entity_level": a.moves_level,
                             "budget_field": "daily_budget", "budget": new, "previous_budget": old, "moves": (),
                             "idempotency_key": f"{a.idempotency_key}:{object_id}"})
        for a in decision.actions if a.kind == "rebalance"
        for object_id, old, new in sorted(a.moves, key=lambda m: m[2] - m[1])  # decreases first
    ]
    return decision.model_copy(update={"actions": (*decision.actions, *extra)}) if extra else decision


def _notify(rule: Rule, act: Action) -> Iterable[Action]:
    for spec in rule.actions:
        if spec.type == "notify":
            yield act.model_copy(update={"kind": "notify", "moves": (), "moves_level": None,
                                         "channels": tuple(spec.channels or ()), "email_to": tuple(spec.email_to),
                                         "idempotency_key": act.idempotency_key.replace(":rebalance:", ":notify:")})


def _where(rule: Rule, anchor: Entity) -> str:
    if rule.scope.level == "adset":
        return f"between the ad sets of {describe(anchor)}"
    return f"between the campaign budgets of account {anchor.account_id}"


def _target(action: RebalanceAction, p: Params, currency: str) -> str:
    money = format_money(p.target, currency)
    return f"group's average of {money}" if action.target == "average" else f"{money} target"


def _label(action: RebalanceAction) -> str:
    return "CPL" if action.metric == "cpl" else "cost per qualified lead"


def _events(action: RebalanceAction) -> str:
    return "leads" if action.metric == "cpl" else "qualified leads"


def _window(action: RebalanceAction) -> str:
    return f"over {action.window.replace('_', ' ')}"


def _cost_text(object_id: str, holders: list[Holder], allocation: Allocation, action: RebalanceAction,
               currency: str) -> str:
    h = next(h for h in holders if h.id == object_id)
    cost = allocation.costs.get(object_id)
    shown = "not judged" if cost is None else format_value("cpl", cost, currency, exact=False)
    return f"{shown} on {h.events} {_events(action)}, {format_money(h.spend, currency)} spent"


def _costs(holders: list[Holder], allocation: Allocation, action: RebalanceAction, currency: str) -> str:
    return ", ".join(f"{h.id}: {_cost_text(h.id, holders, allocation, action, currency)}" for h in holders)

