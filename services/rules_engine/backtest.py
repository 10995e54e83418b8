"""Backtest: replay stored daily insights day by day and show what the rules would have done.

Each day is evaluated as of 23:59:59 in the accounts' timezone, with the guardrail state (cooldowns, daily caps,
pause-for-today resumes) carried from one day to the next and the simulated actions applied to the entities
(paused ad sets stay paused, raised budgets stay raised). Delivery rows are replayed as stored: the backtest
shows decisions, not what delivery would have been after them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.rules_engine.logic import evaluate, record_actions
from services.rules_engine.model import Decision, EngineSettings, EngineState, Entity, Snapshot
from services.rules_engine.rules import Rule
from shared.money import format_money

logger = logging.getLogger(__name__)


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
            if action.kind in ("pause", "pause_for_today"):
                entities[entity.id] = replace(entity, status="PAUSED")
            elif action.kind == "unpause":
                entities[entity.id] = replace(entity, status="ACTIVE")
            elif action.budget_field is not None and action.budget is not None:
                entities[entity.id] = replace(entity, **{action.budget_field: action.budget})


def backtest(
    rules: Sequence[Rule],
    history: Snapshot,
    days: int = 30,
    *,
    end: date | None = None,
    state: EngineState | None = None,
    settings: EngineSettings | None = None,
) -> list[Decision]:
    """Replay the last ``days`` days of ``history`` (ending at ``end``, default the newest row's day).

    Dry-run rules are simulated as if they had acted, so that their cooldowns and caps play out. Entities start
    in the state given in ``history`` (normally: as they are now). Returns every decision, oldest day first.
    """
    if not history.rows:
        return []
    last_day = end or max(row.date for row in history.rows)
    tz = _replay_zone(history.entities)
    entities = {e.id: e for e in history.entities}
    accounts = {e.account_id.removeprefix("act_") for e in history.entities}
    state = state or EngineState()
    out: list[Decision] = []
    for offset in range(days - 1, -1, -1):
        day = last_day - timedelta(days=offset)
        now = datetime.combine(day, time(23, 59, 59), tzinfo=tz)
        state = replace(state, data_as_of=dict.fromkeys(accounts, now))
        snapshot = Snapshot(entities=list(entities.values()), rows=history.rows)
        decisions = evaluate(rules, snapshot, state, now, settings)
        state = record_actions(state, decisions, include_dry_run=True, keep=timedelta(days=days + 8))
        _apply(entities, decisions)
        out.extend(decisions)
    logger.info("backtest over %d days: %d decisions", days, len(out))
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
