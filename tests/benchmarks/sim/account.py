"""One simulated account run day by day under one policy, through leadwire's own code.

Each morning (the start of day d, in the account's time zone, UTC here) the policy's rules are evaluated by the
rules engine's pure evaluation (`services.rules_engine.logic.evaluate`, as `backtest.py` does) on an in-memory
snapshot of what leadwire would have stored by then: insights through day d - insights_lag_days, CRM outcomes
known by then attributed to each lead's ad set and creation day (the cohort). Each acting decision becomes the
real `CampaignCommand` (`services.rules_engine.messages.to_command`) and passes the campaign executor's own
guardrails (`services.campaign_executor.logic`: soft and hard budget limits, the account's daily ceiling,
unpause under the ceiling) with the same `BudgetGuardrailSettings` for every policy; what passes changes the
account, what is refused counts in the rule's circuit breaker (`record_result`) as in the service. Then the day is
delivered (`world.deliver`).

Before the rules, the operator does what a person does (`_operator`): looks at what leadwire announced it paused
(a broken ad set is fixed, a fatigued creative replaced, either unpaused), notices a broken ad set unprompted after
a while, and refreshes old creatives now and then. Broken ad sets and creative fatigue are drawn per ad set by
`world.draw_account`; the 7-day frequency the rules read is the ad set's own, as Meta's deduplicated reach for the
window (`Snapshot.window_reach`, what the insights poller stores).

Every policy runs with the same account, the same total budget as the account's daily ceiling (raises only fill
what cuts and pauses freed), the same per-day action allowance, and the same random numbers.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from contracts.commands import (
    PauseCommand,
    RebalanceBudgetsCommand,
    RotateCreativeCommand,
    SetBudgetCommand,
    UnpauseCommand,
)
from services.campaign_executor import logic as executor
from services.campaign_executor.commands.rebalance import as_set_budget
from services.rules_engine.logic import evaluate, record_actions, record_result
from services.rules_engine.messages import to_command
from services.rules_engine.model import (
    Action,
    BudgetLimit,
    EngineSettings,
    EngineState,
    Entity,
    MetricRow,
    Snapshot,
)
from services.rules_engine.rules import Rule
from services.rules_engine.snapshot import lookback_days
from shared.settings import BudgetGuardrailSettings
from tests.benchmarks.sim import world
from tests.benchmarks.sim.params import SimParams

ACCOUNT = "act_900000001"
CAMPAIGN = "900000100"
CURRENCY = "USD"
DAY0 = date(2026, 1, 1)  # day 1 of the simulation is DAY0 + 1

# The engine logs one line per evaluation and per action: thousands of runs would drown the benchmark's output.
for _name in ("services.rules_engine.logic", "services.rules_engine.backtest"):
    logging.getLogger(_name).setLevel(logging.WARNING)


_DATES = [DAY0 + timedelta(days=d) for d in range(400)]


def day_date(day: int) -> date:
    return _DATES[day] if 0 <= day < len(_DATES) else DAY0 + timedelta(days=day)


def morning(day: int) -> datetime:
    """When the rules run on ``day``: its first instant (insights of the day before are complete)."""
    d = day_date(day)
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


@dataclass(frozen=True)
class Policy:
    """What a run does: leadwire's rules (None = static budgets), with or without CRM feedback to Meta (CAPI),
    and optionally a starting split of the budget (the oracle's)."""

    name: str
    rules: Sequence[Rule] | None = None
    capi: bool = False
    oracle: bool = False


@dataclass
class AdSet:
    truth: world.AdSetTruth
    entity_id: str
    budget: int  # daily budget, minor units (0: the budget is the campaign's)
    first_seen: int
    status: str = "ACTIVE"
    learning_since: int | None = None  # day the current learning phase began
    learning_leads: int = 0
    increases: list[int] = field(default_factory=list)  # days of applied budget increases
    frequency: float = 1.0  # the current 7-day frequency (creative fatigue)
    creative_day: int = 1  # day of the current creative
    ad: int = 0  # which of its ads delivers: 0 the first, 1.. its reserve creatives, in name order
    repaired: bool = False  # its break (if any) was fixed
    paused_on: int | None = None  # day a rule paused it, until the operator looked
    reminded_on: int | None = None  # day a notify-only rule named it, until the operator looked


@dataclass
class RunResult:
    """What a policy achieved on one seed (money in USD)."""

    spend: float = 0.0
    leads: int = 0
    qualified: int = 0
    signed: int = 0
    actions: int = 0  # mutating commands the executor applied
    moves: int = 0  # ... of which budgets changed by rebalances (one command moves several)
    refused: int = 0  # ... and refused
    refusals: Counter[str] = field(default_factory=Counter)  # by guardrail
    paused_days: int = 0  # ad set x days with no delivery
    breaks: int = 0  # ad sets that broke on or before the last acting day
    broken_spend: float = 0.0  # spent on broken ad sets before they were paused or fixed
    caught: int = 0  # broken ad sets a rule paused before the firm noticed them
    refreshes: int = 0  # new creatives (unprompted, after a pause of a fatigued ad set, or rotated in)
    rotations: int = 0  # ... of which reserve creatives a rule rotated in

    @property
    def cost_per_signed(self) -> float:
        return self.spend / self.signed if self.signed else float("inf")


@dataclass
class _Counts:
    ad: str
    spend: int = 0
    impressions: int = 0
    reach: int = 0
    clicks: int = 0
    leads: int = 0
    qualified: int = 0
    signed: int = 0


class Account:
    """The state of one simulated account under one policy."""

    def __init__(self, params: SimParams, seed: int, policy: Policy, draws: world.Draws | None = None) -> None:
        self.params = params
        self.seed = seed
        self.policy = policy
        self.draws = draws or world.Draws(seed)
        truths = world.draw_account(params, seed)
        budgets = world.oracle_split(params, truths) if policy.oracle else [t.base_budget for t in truths]
        self.adsets = [
            AdSet(t, f"9000002{i:02d}", round(b * 100), round(t.base_budget * 100), frequency=params.frequency_start)
            for i, (t, b) in enumerate(zip(truths, budgets, strict=True))
        ]
        self.result = RunResult(breaks=sum(t.broken_day is not None for t in truths))
        self.by_id = {a.entity_id: a for a in self.adsets}
        total = sum(a.first_seen for a in self.adsets)
        # The account's ceiling is its total budget: raises only re-use what cuts and pauses freed.
        self.limits = BudgetGuardrailSettings(_env_file=None, daily_ceiling=total / 100)
        self.ceiling, _ = executor.account_ceiling(self.limits, CURRENCY, total)
        self.engine_settings = EngineSettings(max_actions_per_run=params.max_actions_per_day)
        self.state = EngineState(account_daily_budget_ceiling={ACCOUNT: self.ceiling})
        self.lookback = lookback_days(policy.rules or (), 35)
        self.ad_level = any(r.scope.level == "ad" for r in policy.rules or ())  # show the rules the ads too
        self.counts: dict[tuple[int, int], _Counts] = {}  # (ad set index, day) -> what leadwire has stored
        # ... and as the rules read it: per ad set, the day's row (None: nothing delivered)
        self.rows: list[list[MetricRow | None]] = [[None] * (params.acting_days + 2) for _ in self.adsets]
        self.frequencies: dict[tuple[int, int], float] = {}  # (ad set index, day) -> its 7-day frequency that day
        self.pending: dict[int, list[tuple[int, int, str]]] = {}  # reveal day -> (ad set, lead day, kind)
        self.decisions = 0

    # ------------------------------------------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        for day in range(1, self.params.acting_days + 1):
            self._reveal(day - self.params.crm_lag_days)
            self._operator(day)
            if self.policy.rules:
                self._decide(day)
            self._deliver(day)
        return self.result

    def _reveal(self, through: int) -> None:
        """The CRM outcomes known by the end of day ``through`` reach leadwire's store (by lead day)."""
        for reveal_day in [d for d in self.pending if d <= through]:
            for adset, lead_day, kind in self.pending.pop(reveal_day):
                counts = self.counts[(adset, lead_day)]
                if kind == "qualified":
                    counts.qualified += 1
                else:
                    counts.signed += 1
                self._store(adset, lead_day, counts)

    def _store(self, i: int, day: int, c: _Counts) -> None:
        self.rows[i][day] = MetricRow(day_date(day), c.ad, self.adsets[i].entity_id, CAMPAIGN, c.spend,
                                      c.impressions, c.reach, c.clicks, c.leads, c.qualified, c.signed)

    def entities(self) -> list[Entity]:
        out = [
            Entity(id=a.entity_id, level="adset", name=a.truth.name, status=a.status, account_id=ACCOUNT,
                   campaign_id=CAMPAIGN, campaign_name="Sim Leads", adset_id=a.entity_id,
                   daily_budget=a.budget or None, currency=CURRENCY, timezone="UTC")
            for a in self.adsets
        ]
        if self.ad_level:
            out += [Entity(id=ad_id(a, k), level="ad", name=ad_name(a, k), status="ACTIVE" if k == a.ad else "PAUSED",
                           account_id=ACCOUNT, campaign_id=CAMPAIGN, campaign_name="Sim Leads", adset_id=a.entity_id,
                           currency=CURRENCY, timezone="UTC")
                    for a in self.adsets for k in range(self.params.reserve_creatives + 1)]
        return out

    def snapshot(self, day: int) -> Snapshot:
        """What the rules read on the morning of ``day``: insights through day - lag, CRM outcomes known so far."""
        last = day - self.params.insights_lag_days
        first = max(1, day - self.lookback + 1)
        rows: list[MetricRow] = []
        reach: dict[tuple[str, str], int] = {}
        for i, (adset, days) in enumerate(zip(self.adsets, self.rows, strict=True)):
            rows.extend(r for r in days[first:last + 1] if r is not None)
            week = [(d, r.impressions) for d in range(max(1, last - 6), last + 1) if (r := days[d]) is not None]
            frequency = self.frequencies.get((i, week[-1][0])) if week else None
            if frequency:  # Meta's deduplicated 7-day reach: the week's impressions at the latest 7-day frequency
                reach[(adset.entity_id, "last_7_days")] = max(1, round(sum(n for _, n in week) / frequency))
                if self.ad_level:  # ... and the delivering ad's, over its own days of the week
                    ad = ad_id(adset, adset.ad)
                    own = sum(r.impressions for d in range(max(1, last - 6), last + 1)
                              if (r := days[d]) is not None and r.ad_id == ad)
                    if own:
                        reach[(ad, "last_7_days")] = max(1, round(own / frequency))
        return Snapshot(entities=self.entities(), rows=rows, window_reach=reach)

    def _decide(self, day: int) -> list[tuple[Action, bool]]:
        """Evaluate the rules on the morning of ``day`` and execute what they decide: (action, applied) each."""
        now = morning(day)
        week_ago = day - 7
        self.state = replace(
            self.state,
            data_as_of={ACCOUNT: now},
            # what the service reads from the executor's view `stored_budget_limits`
            budget_limits={a.entity_id: BudgetLimit(first_seen=a.first_seen,
                                                    increases_week=sum(1 for d in a.increases if d > week_ago))
                           for a in self.adsets},
        )
        assert self.policy.rules is not None
        decisions = evaluate(self.policy.rules, self.snapshot(day), self.state, now, self.engine_settings)
        self.decisions += len(decisions)
        self.state = record_actions(self.state, decisions, keep=timedelta(days=8))
        done = []
        for decision in decisions:
            if decision.outcome != "acted":
                continue
            if all(a.kind == "notify" for a in decision.actions):  # a reminder: the operator reads it (_operator)
                reminded = self.by_id.get(decision.entity_id) or next(
                    a for a in self.adsets if decision.entity_id == ad_id(a, a.ad))
                if reminded.reminded_on is None:
                    reminded.reminded_on = day
                continue
            for action in decision.actions:
                if action.kind == "notify":
                    continue
                ok = self.execute(action, day)
                self.state = record_result(self.state, action.rule, ok=ok)
                done.append((action, ok))
        return done

    # ------------------------------------------------------------------------------------------------ executor

    def active_total(self) -> int:
        return sum(a.budget or 0 for a in self.adsets if a.status == "ACTIVE")

    def execute(self, action: Action, day: int) -> bool:
        """Apply the action's command as the campaign executor would, within its guardrails. True when applied."""
        message = to_command(action)
        assert message is not None
        command = message.payload.root
        if isinstance(command, RebalanceBudgetsCommand):
            return self._rebalance(command, day)
        if isinstance(command, RotateCreativeCommand):
            return self._rotate(command, day)
        adset = self.by_id[command.object_id]
        refusal = executor.object_status_refusal(command.kind, self._object(adset))
        if refusal is None and isinstance(command, UnpauseCommand):
            refusal = executor.unpause_ceiling_refusal(self._object(adset), self.active_total(), CURRENCY,
                                                       self.ceiling)
        if refusal is None and isinstance(command, SetBudgetCommand):
            refusal = self._budget_refusal(command, adset, day, self.active_total())
        if refusal is not None:
            return self._refused(refusal)
        self.result.actions += 1
        if isinstance(command, PauseCommand):
            adset.status = "PAUSED"
            adset.paused_on = day
        elif isinstance(command, UnpauseCommand):
            if adset.status != "ACTIVE":
                adset.status = "ACTIVE"
                self._learn(adset, day)
        elif isinstance(command, SetBudgetCommand):
            self._set_budget(adset, command.amount_minor, day)
        return True

    def _object(self, adset: AdSet) -> executor.ObjectState:
        return executor.ObjectState(adset.entity_id, ACCOUNT, adset.status, adset.status, adset.budget, None,
                                    adset.truth.name)

    def _budget_refusal(self, command: SetBudgetCommand, adset: AdSet, day: int,
                        account_total: int) -> executor.Refusal | None:
        """The executor's hard and soft budget checks of one budget change, on the morning of ``day``."""
        target = executor.budget_target(command, adset.budget)
        week_ago = day - 7
        facts = executor.BudgetFacts(
            current=adset.budget, target=target, currency=CURRENCY, changes_last_hour=0,
            spent=0,  # the morning: nothing spent today yet
            account_daily_total=account_total, ceiling=self.ceiling, first_seen=adset.first_seen,
            increases_last_week=sum(1 for d in adset.increases if d > week_ago),
        )
        return executor.hard_budget_refusal(command, facts, self.limits) or executor.budget_refusal(
            command, facts, self.limits)

    def _rebalance(self, command: RebalanceBudgetsCommand, day: int) -> bool:
        """As `services/campaign_executor/commands/rebalance.py`: every move checked first as the set_budget it
        amounts to (increases against the total after the decreases); any refusal = nothing applied; else the
        decreases, then the increases."""
        moves = [m for m in command.moves if m.from_minor != m.to_minor]
        if any(self.by_id[m.object_id].budget != m.from_minor for m in moves):
            return self._refused(executor.Refusal("changed_elsewhere", "a budget moved since the decision"))
        ordered = sorted(moves, key=lambda m: m.to_minor > m.from_minor)  # decreases first
        running = self.active_total() - sum(m.from_minor - m.to_minor for m in moves if m.to_minor < m.from_minor)
        for move in ordered:
            adset = self.by_id[move.object_id]
            single = as_set_budget(command, move)
            refusal = executor.object_status_refusal("set_budget", self._object(adset)) or self._budget_refusal(
                single, adset, day, running)
            if refusal is not None:
                return self._refused(refusal)
            if move.to_minor > move.from_minor:
                running += move.to_minor - move.from_minor
        for move in ordered:
            self._set_budget(self.by_id[move.object_id], move.to_minor, day)
        self.result.actions += 1
        self.result.moves += len(moves)
        return True

    def _rotate(self, command: RotateCreativeCommand, day: int) -> bool:
        """As `services/campaign_executor/rotation.py`: only while the ad delivers and the reserve is its ad set's
        paused reserve; the reserve is activated, the tired ad paused. A new ad: frequency and learning start
        again."""
        adset = self.by_id[command.adset_id]
        ids = [ad_id(adset, k) for k in range(self.params.reserve_creatives + 1)]
        if command.object_id != ids[adset.ad] or command.reserve_ad_id not in ids[adset.ad + 1:]:
            return self._refused(executor.Refusal("object_status", "not the delivering ad and a paused reserve"))
        adset.ad = ids.index(command.reserve_ad_id)
        self.result.actions += 1
        self.result.rotations += 1
        self._refresh(adset, day)
        return True

    def _set_budget(self, adset: AdSet, target: int, day: int) -> None:
        if target > adset.budget:
            adset.increases.append(day)
        if abs(target - adset.budget) / adset.budget * 100 > self.params.learning_step_pct + 1e-9:
            self._learn(adset, day)
        adset.budget = target

    def _refused(self, refusal: executor.Refusal) -> bool:
        self.result.refused += 1
        self.result.refusals[refusal.guardrail] += 1
        return False

    def _learn(self, adset: AdSet, day: int) -> None:
        adset.learning_since = day
        adset.learning_leads = 0

    # ------------------------------------------------------------------------------------------------ operator

    def _broken(self, adset: AdSet, day: int) -> bool:
        broke = adset.truth.broken_day
        return broke is not None and broke <= day and not adset.repaired

    def _refresh(self, adset: AdSet, day: int) -> None:
        """A new creative: the frequency starts again, and so does learning (a new ad is a significant edit)."""
        adset.frequency = self.params.frequency_start
        adset.creative_day = day
        self.result.refreshes += 1
        self._learn(adset, day)

    def _operator(self, day: int) -> None:
        """The morning's human work: pauses announced ``operator_response_days`` ago are looked at (a broken ad set
        is fixed, a fatigued one gets a new creative, and either is unpaused within the account's ceiling; a
        healthy one is unpaused with the chance ``operator_unpauses_healthy``, else stays paused), a break is
        noticed unprompted after ``broken_unnoticed_days``, and creatives older than ``refresh_every_days`` are
        replaced."""
        p = self.params
        for adset in self.adsets:
            if adset.reminded_on is not None and day - adset.reminded_on >= p.operator_response_days:
                adset.reminded_on = None
                heeds = world.stream(self.seed, "reminder", adset.entity_id, day).random() < p.operator_heeds_reminders
                if heeds and adset.status == "ACTIVE" and adset.frequency > p.fatigue_onset_frequency:
                    self._refresh(adset, day)  # a new creative, as the reminder asked
            if adset.paused_on is not None and day - adset.paused_on >= p.operator_response_days:
                adset.paused_on = None
                mended = False
                if self._broken(adset, day):
                    adset.repaired = mended = True
                    self.result.caught += 1
                if adset.frequency > p.fatigue_onset_frequency:
                    self._refresh(adset, day)
                    mended = True
                if not mended and world.stream(self.seed, "operator", adset.entity_id, day).random() < (
                        p.operator_unpauses_healthy):
                    mended = True  # nothing wrong found: restored as it was
                room = self.ceiling - self.active_total()
                if mended and adset.status != "ACTIVE" and room > 0:
                    adset.budget = min(adset.budget, room)
                    adset.status = "ACTIVE"
                    self._learn(adset, day)
            broke = adset.truth.broken_day
            if broke is not None and day - broke >= p.broken_unnoticed_days:
                adset.repaired = True
            if adset.status == "ACTIVE" and p.refresh_every_days and day - adset.creative_day >= (
                    p.refresh_every_days):
                self._refresh(adset, day)

    # ------------------------------------------------------------------------------------------------ delivery

    def _learning(self, adset: AdSet, day: int) -> bool:
        if adset.learning_since is None:
            return False
        if day - adset.learning_since >= self.params.learning_days or adset.learning_leads >= (
                self.params.learning_events):
            adset.learning_since = None
            return False
        return True

    def _deliver(self, day: int) -> None:
        p = self.params
        capi = world.capi_progress(p, day) if self.policy.capi else 0.0
        for i, adset in enumerate(self.adsets):
            if adset.status != "ACTIVE":
                self.result.paused_days += 1
                continue
            spend = adset.budget / 100
            learning = self._learning(adset, day)
            broken = self._broken(adset, day)
            leads = world.deliver(p, self.draws, i, adset.truth, day, spend, learning=learning, capi=capi,
                                  frequency=adset.frequency, broken=broken)
            if learning:
                adset.learning_leads += len(leads)
            if broken:
                self.result.broken_spend += spend
            adset.frequency += world.frequency_gain(adset.truth, spend)
            self.frequencies[(i, day)] = adset.frequency
            impressions = round(spend / p.cpm * 1000)
            counts = self.counts[(i, day)] = _Counts(
                ad=ad_id(adset, adset.ad), spend=adset.budget, impressions=impressions,
                reach=round(impressions / p.daily_frequency),
                clicks=world.clicks(p, self.seed, i, day, impressions, adset.frequency), leads=len(leads),
            )
            self._store(i, day, counts)
            self.result.spend += spend
            self.result.leads += len(leads)
            for lead in leads:
                if lead.qualified_day is not None:
                    self.result.qualified += 1
                    self.pending.setdefault(lead.qualified_day, []).append((i, day, "qualified"))
                if lead.signed_day is not None:
                    if lead.signed_day <= p.counting_days:
                        self.result.signed += 1
                    self.pending.setdefault(lead.signed_day, []).append((i, day, "signed"))


def ad_id(adset: AdSet, k: int) -> str:
    """The id of the ad set's ``k``-th ad (0: the one it starts with; 1..: its reserve creatives)."""
    return f"{adset.entity_id}{k:02d}"


def ad_name(adset: AdSet, k: int) -> str:
    return f"{adset.truth.name} creative" if k == 0 else f"[reserve] {k} {adset.truth.name}"


def simulate(params: SimParams, seed: int, policy: Policy, draws: world.Draws | None = None) -> RunResult:
    """Run ``policy`` on the account of ``seed`` for ``params.acting_days`` days (``draws``: the seed's shared
    random numbers, when several policies run on it)."""
    return Account(params, seed, policy, draws).run()

