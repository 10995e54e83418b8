"""Backtest: replay stored daily insights day by day and show what the rules would have done, and with what money.

Each day is evaluated as of 23:59:59 in the accounts' timezone, with the guardrail state (cooldowns, daily caps,
pause-for-today resumes) carried from one day to the next and the simulated actions applied to the entities
(paused ad sets stay paused, raised budgets stay raised). Delivery rows are replayed as stored: the backtest
shows decisions, not what delivery would have been after them.

The executor's hard limits apply here too (`shared.settings.BudgetGuardrailSettings`): a raise above
`max_multiple_of_first_seen` times the budget an object had when the replay starts, or beyond
`max_increases_per_week`, is refused as the executor would refuse it; the account's daily ceiling
(BUDGET_DAILY_CEILING, else the multiple of the active daily total at the start) holds raises in the engine.
Frequency over a window is impressions / Meta's deduplicated reach of that window on that day when the caller
gives it (`window_reach_by_day`, asked from Meta by `leadwire rules backtest`), else summed daily reach.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.rules_engine.logic import evaluate, record_actions
from services.rules_engine.model import Action, Decision, EngineSettings, EngineState, Entity, Snapshot
from services.rules_engine.rebalance import with_moves
from services.rules_engine.rules import ChangeBudgetAction, Rule
from shared.budget_guardrails import daily_ceiling_minor, max_daily_budget
from shared.money import format_money
from shared.settings import BudgetGuardrailSettings

logger = logging.getLogger(__name__)

BUDGET_KINDS = frozenset({"change_budget", "set_budget"})
WindowReach = Mapping[tuple[str, str], int]


def _replay_zone(entities: Sequence[Entity]) -> ZoneInfo:
    zones = {e.timezone for e in entities}
    if len(zones) > 1:
        logger.warning("backtest over several timezones %s; days end in %s", sorted(zones), sorted(zones)[0])
    return ZoneInfo(sorted(zones)[0] if zones else "UTC")


def _apply(entities: dict[str, Entity], decisions: Iterable[Decision]) -> None:
    for decision in decisions:
        if decision.outcome == "skipped":
            continue
        for action in decision.actions:
            entity = entities.get(action.entity_id)
            if entity is None:
                continue
            if action.kind in ("pause", "pause_for_today", "rotate_creative"):
                entities[entity.id] = replace(entity, status="PAUSED")
                reserve = entities.get(action.reserve_id or "")
                if reserve is not None:
                    entities[reserve.id] = replace(reserve, status="ACTIVE")
            elif action.kind == "unpause":
                entities[entity.id] = replace(entity, status="ACTIVE")
            elif action.budget_field is not None and action.budget is not None:
                entities[entity.id] = replace(entity, **{action.budget_field: action.budget})


@dataclass
class RuleMoney:
    """What one rule moved in one currency over the replay (minor units)."""

    raises: int = 0
    cuts: int = 0
    pauses: int = 0
    # Sum of (new - old daily budget) x the replayed days after the change: the budget the rule added (or took
    # away) over the replay. A lifetime budget change counts once.
    budget_moved: int = 0
    # Stored spend of the entities the rule paused, on the replayed days after the pause while they stayed paused:
    # what would not have been spent.
    spend_stopped: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # raises the hard limits (or the ceiling) stopped


@dataclass
class BacktestReport:
    decisions: list[Decision]
    money: dict[tuple[str, str], RuleMoney]  # (rule, currency)
    start: dict[str, Entity]  # entities as the replay started
    end: dict[str, Entity]  # and as it ended
    days: int = 0
    hard_limits: bool = True

    def budget_changes(self) -> list[tuple[Entity, int, int]]:
        """(entity, daily budget at the start, at the end) of every entity whose daily budget changed."""
        out = []
        for entity_id, first in self.start.items():
            last = self.end[entity_id]
            if first.daily_budget is not None and last.daily_budget != first.daily_budget:
                out.append((last, first.daily_budget, last.daily_budget or 0))
        return out


def default_limits() -> BudgetGuardrailSettings:
    """The hard limits' defaults, without reading the environment (the CLI passes the configured ones)."""
    return BudgetGuardrailSettings.model_construct()


def _ceilings(entities: Sequence[Entity], limits: BudgetGuardrailSettings) -> dict[str, int]:
    """Per account: BUDGET_DAILY_CEILING, else the multiple of its active daily total as the replay starts."""
    totals: dict[str, int] = defaultdict(int)
    currencies: dict[str, str] = {}
    for e in entities:
        currencies[e.account_id] = e.currency
        if e.level in ("campaign", "adset") and e.status == "ACTIVE" and e.daily_budget:
            totals[e.account_id] += e.daily_budget
    out = {}
    for account, currency in currencies.items():
        configured = daily_ceiling_minor(limits.daily_ceiling, currency)
        out[account] = configured if configured is not None else max_daily_budget(
            totals[account], limits.max_multiple_of_first_seen)
    return out


class _HardLimits:
    """The executor's per-object hard limits, on simulated raises (`campaign_executor.logic.hard_budget_refusal`)."""

    def __init__(self, start: Mapping[str, Entity], limits: BudgetGuardrailSettings) -> None:
        self.first_seen = {i: e.daily_budget for i, e in start.items() if e.daily_budget}
        self.limits = limits
        self.increases: dict[str, list[date]] = defaultdict(list)

    def refusal(self, action: Action, day: date, currency: str) -> tuple[str, str] | None:
        if action.kind not in BUDGET_KINDS or action.budget is None or action.previous_budget is None:
            return None
        if action.budget <= action.previous_budget:
            return None
        first = self.first_seen.get(action.entity_id)
        if action.budget_field == "daily_budget" and first is not None:
            limit = max_daily_budget(first, self.limits.max_multiple_of_first_seen)
            if action.budget > limit:
                return "hard_max_budget", (
                    f"{format_money(action.budget, currency)} is above the limit of {format_money(limit, currency)} "
                    f"({self.limits.max_multiple_of_first_seen:g}× the {format_money(first, currency)} at the start)")
        recent = [d for d in self.increases[action.entity_id] if day - d < timedelta(days=7)]
        if len(recent) >= self.limits.max_increases_per_week:
            return "budget_increases_per_week", (
                f"{len(recent)} raises in the last 7 days (at most {self.limits.max_increases_per_week} a week)")
        return None


def replay(
    rules: Sequence[Rule],
    history: Snapshot,
    days: int = 30,
    *,
    end: date | None = None,
    state: EngineState | None = None,
    settings: EngineSettings | None = None,
    limits: BudgetGuardrailSettings | None = None,
    hard_limits: bool = True,
    window_reach_by_day: Mapping[date, WindowReach] | None = None,
) -> BacktestReport:
    """Replay the last ``days`` days of ``history`` (ending at ``end``, default the newest row's day).

    Dry-run rules are simulated as if they had acted, so that their cooldowns and caps play out. Entities start
    in the state given in ``history`` (normally: as they are now). With ``hard_limits`` (the default) the
    executor's hard limits from ``limits`` refuse raises as the executor would. ``window_reach_by_day[day]`` is
    Meta's deduplicated reach per (entity, window) as of that day.
    """
    start = {e.id: e for e in history.entities}
    report = BacktestReport(decisions=[], money={}, start=start, end=dict(start), days=days,
                            hard_limits=hard_limits)
    if not history.rows:
        return report
    limits = limits or default_limits()
    last_day = end or max(row.date for row in history.rows)
    tz = _replay_zone(history.entities)
    entities = dict(start)
    accounts = {e.account_id.removeprefix("act_") for e in history.entities}
    state = state or EngineState()
    if hard_limits and not state.account_daily_budget_ceiling:
        state = replace(state, account_daily_budget_ceiling=_ceilings(history.entities, limits))
    hard = _HardLimits(start, limits)
    paused: dict[str, tuple[date, str, str]] = {}  # entity -> (day paused, rule, currency)
    stopped: list[tuple[str, date, date, str, str]] = []  # (entity, paused on, resumed on, rule, currency)
    for offset in range(days - 1, -1, -1):
        day = last_day - timedelta(days=offset)
        now = datetime.combine(day, time(23, 59, 59), tzinfo=tz)
        state = replace(state, data_as_of=dict.fromkeys(accounts, now))
        reach = (window_reach_by_day or {}).get(day, {})
        snapshot = Snapshot(entities=list(entities.values()), rows=history.rows, window_reach=reach)
        decisions = [with_moves(d) for d in evaluate(rules, snapshot, state, now, settings)]
        if hard_limits:
            decisions = [_check_hard(d, hard, day, report) for d in decisions]
        state = record_actions(state, decisions, include_dry_run=True, keep=timedelta(days=days + 8))
        _apply(entities, decisions)
        for decision in decisions:
            _account(decision, day, last_day, hard, paused, stopped, report)
        report.decisions.extend(decisions)
    for entity_id, (since, rule, currency) in paused.items():
        stopped.append((entity_id, since, last_day, rule, currency))
    _spend_stopped(history, stopped, report)
    report.end = entities
    logger.info("backtest over %d days: %d decisions", days, len(report.decisions))
    return report


def _money(report: BacktestReport, decision: Decision) -> RuleMoney:
    return report.money.setdefault((decision.rule, decision.currency), RuleMoney())


def _check_hard(decision: Decision, hard: _HardLimits, day: date, report: BacktestReport) -> Decision:
    if decision.reason == "ceiling":
        _money(report, decision).refused["daily_ceiling"] += 1
        return decision
    if decision.outcome == "skipped":
        return decision
    for action in decision.actions:
        refusal = hard.refusal(action, day, decision.currency)
        if refusal is not None:
            guardrail, detail = refusal
            _money(report, decision).refused[guardrail] += 1
            return decision.model_copy(update={
                "outcome": "skipped", "reason": "budget_limit",
                "explanation": f"{decision.explanation} Refused by the executor's hard limit {guardrail}: {detail}.",
            })
    return decision


def _account(
    decision: Decision,
    day: date,
    last_day: date,
    hard: _HardLimits,
    paused: dict[str, tuple[date, str, str]],
    stopped: list[tuple[str, date, date, str, str]],
    report: BacktestReport,
) -> None:
    if decision.outcome == "skipped":
        return
    for action in decision.actions:
        if action.kind in BUDGET_KINDS and action.budget is not None and action.previous_budget is not None:
            money = _money(report, decision)
            delta = action.budget - action.previous_budget
            if delta > 0:
                money.raises += 1
                hard.increases[action.entity_id].append(day)
            elif delta < 0:
                money.cuts += 1
            money.budget_moved += delta * (last_day - day).days if action.budget_field == "daily_budget" else delta
        elif action.kind == "pause":
            _money(report, decision).pauses += 1
            paused.setdefault(action.entity_id, (day, decision.rule, decision.currency))
        elif action.kind == "unpause" and action.entity_id in paused:
            since, rule, currency = paused.pop(action.entity_id)
            stopped.append((action.entity_id, since, day, rule, currency))


def _spend_stopped(history: Snapshot, stopped: list[tuple[str, date, date, str, str]], report: BacktestReport) -> None:
    """Stored spend of each paused entity on the days after its pause, up to the day it was unpaused."""
    if not stopped:
        return
    wanted = {entity_id for entity_id, *_ in stopped}
    spend: dict[tuple[str, date], int] = defaultdict(int)
    for row in history.rows:
        for key in {row.ad_id, row.adset_id, row.campaign_id}:
            if key in wanted:
                spend[(key, row.date)] += row.spend
    for entity_id, since, until, rule, currency in stopped:
        total = sum(spend.get((entity_id, since + timedelta(days=n)), 0) for n in range(1, (until - since).days + 1))
        report.money.setdefault((rule, currency), RuleMoney()).spend_stopped += total


def unbounded_rules(rules: Sequence[Rule]) -> list[str]:
    """One sentence per enabled rule that can raise budgets again and again with no cap of its own."""
    out = []
    for rule in rules:
        if not rule.enabled or rule.guardrails.max_budget is not None:
            continue
        for action in rule.actions:
            if isinstance(action, ChangeBudgetAction) and action.percent > 0:
                growth = (1 + action.percent / 100) ** 30
                out.append(
                    f"rule {rule.name} raises budgets by {action.percent:g}% each time it acts and has no "
                    f"guardrails.max_budget: its budgets can grow without bound (once a day for 30 days is "
                    f"{growth:,.0f}×); only the executor's hard limits stop it"
                )
    return out


def _action_text(decision: Decision) -> str:
    parts = []
    for action in decision.actions:
        if action.budget is not None and action.previous_budget is not None:
            parts.append(
                f"budget {format_money(action.previous_budget, decision.currency)}"
                f"->{format_money(action.budget, decision.currency)}"
            )
        else:
            parts.append(action.kind)
    return ", ".join(parts) or "-"


def render_backtest(
    decisions: Sequence[Decision],
    *,
    include_skipped: bool = True,
    hide_reasons: Iterable[str] = ("not_matched",),
) -> str:
    """A plain-text table (one line per decision) followed by counts per rule and outcome."""
    hidden = set(hide_reasons)
    shown = [
        d
        for d in decisions
        if (d.outcome != "skipped" or include_skipped) and (d.reason is None or d.reason not in hidden)
    ]
    header = ("day", "rule", "entity", "outcome", "action", "explanation")
    lines = [
        (
            d.evaluated_at.date().isoformat(),
            d.rule,
            d.entity_name,
            d.outcome if d.reason is None else f"{d.outcome}:{d.reason}",
            _action_text(d) if d.outcome != "skipped" else "-",
            d.explanation,
        )
        for d in shown
    ]
    widths = [max([len(header[i])] + [len(line[i]) for line in lines]) for i in range(5)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells[:5], widths, strict=True)) + "  " + cells[5]

    table = [fmt(header), "  ".join("-" * w for w in widths) + "  " + "-" * 11]
    table.extend(fmt(line) for line in lines)
    counts = Counter((d.rule, d.outcome if d.reason is None else f"{d.outcome}:{d.reason}") for d in decisions)
    table.append("")
    table.append(f"{len(decisions)} decisions on {len({d.evaluated_at.date() for d in decisions})} days")
    table.extend(f"  {rule}: {outcome} x{n}" for (rule, outcome), n in sorted(counts.items()))
    return "\n".join(table)


def _signed(minor: int, currency: str) -> str:
    return ("+" if minor > 0 else "-" if minor < 0 else "") + format_money(abs(minor), currency)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _budget_totals(changes: Sequence[tuple[Entity, int, int]]) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for entity, first, last in changes:
        a, b = totals.get(entity.currency, (0, 0))
        totals[entity.currency] = (a + first, b + last)
    return totals


def render_money(
    report: BacktestReport, *, warnings: Sequence[str] = (), unlimited: BacktestReport | None = None
) -> str:
    """Per rule and in total: the budget it moved, the spend its pauses stopped, the final daily budgets; and,
    loudly, the rules whose budgets can grow without bound (with what the replay comes to without hard limits)."""
    lines: list[str] = []
    banner: list[str] = []
    if warnings:
        banner = ["!" * 100, "!!! BUDGETS CAN GROW WITHOUT BOUND", *(f"!!! {w}" for w in warnings)]
        if unlimited is not None:
            for currency, (first, last) in sorted(_budget_totals(unlimited.budget_changes()).items()):
                limited = _budget_totals(report.budget_changes()).get(currency, (first, first))[1]
                ratio = f" ({last / first:,.2f}× the start)" if first else ""
                banner.append(
                    f"!!! without the executor's hard limits this replay ends at {format_money(last, currency)}/day"
                    f"{ratio} for the budgets the rules changed, from {format_money(first, currency)}; with them at "
                    f"{format_money(limited, currency)}")
        banner.append("!!! set guardrails.max_budget on these rules")
        banner.append("!" * 100)
        lines += [*banner, ""]
    lines.append("Money per rule (budget moved: budget added or cut × the replayed days after the change; spend "
                 "stopped: stored spend of what the rule paused, after the pause)")
    if not report.hard_limits:
        lines.append("  (the executor's hard limits were NOT applied)")
    rows = [("rule", "currency", "raises", "cuts", "pauses", "refused", "budget moved", "spend stopped")]
    totals: dict[str, RuleMoney] = {}
    for (rule, currency), m in sorted(report.money.items()):
        refused = sum(m.refused.values())
        rows.append((rule, currency, str(m.raises), str(m.cuts), str(m.pauses),
                     str(refused) + (f" ({', '.join(f'{k} {v}' for k, v in sorted(m.refused.items()))})"
                                     if refused else ""),
                     _signed(m.budget_moved, currency), format_money(m.spend_stopped, currency)))
        t = totals.setdefault(currency, RuleMoney())
        t.raises, t.cuts, t.pauses = t.raises + m.raises, t.cuts + m.cuts, t.pauses + m.pauses
        t.budget_moved += m.budget_moved
        t.spend_stopped += m.spend_stopped
        t.refused.update(m.refused)
    for currency, t in sorted(totals.items()):
        rows.append(("total", currency, str(t.raises), str(t.cuts), str(t.pauses), str(sum(t.refused.values())),
                     _signed(t.budget_moved, currency), format_money(t.spend_stopped, currency)))
    lines += _table(rows) if len(rows) > 1 else ["  nothing moved"]
    changes = report.budget_changes()
    lines.append("Final daily budgets (what the rules changed)")
    if changes:
        rows = [("entity", "start", "end", "")]
        for entity, first, last in sorted(changes, key=lambda c: (c[0].currency, c[0].name)):
            rows.append((entity.name, format_money(first, entity.currency), format_money(last, entity.currency),
                         f"{last / first:.2f}×" if first else ""))
        for currency, (first, last) in sorted(_budget_totals(changes).items()):
            rows.append((f"total {currency}", format_money(first, currency), format_money(last, currency),
                         f"{last / first:.2f}×" if first else ""))
        lines += _table(rows)
    else:
        lines.append("  no budget changed")
    if banner:
        lines += ["", *banner]
    return "\n".join(lines)
