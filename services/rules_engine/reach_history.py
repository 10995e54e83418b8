"""Meta's deduplicated reach over the rules' windows for each day of a backtest (frequency = impressions / reach).

Reach counts people, so it does not add up over days; the stored daily rows cannot give a window's reach and
the live engine's `insights_window_reach` only holds today's windows. The backtest asks Meta, once per distinct
date range and level: `GET act_<id>/insights?level=<level>&time_range={since,until}` (no time_increment: one row
per object for the whole range). Consecutive days share ranges (today's `previous_7_days` is yesterday's
`last_7_days`), so each is read once. Only windows of reach and frequency conditions are read.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import Rule
from shared.graph import GraphClient
from shared.graph.errors import GraphError
from shared.graph.usage import Scope

logger = logging.getLogger(__name__)

REACH_METRICS = frozenset({"reach", "frequency"})
LEVELS = ("campaign", "adset", "ad")


def reach_windows(rules: Iterable[Rule]) -> set[str]:
    """Bounded windows over which enabled rules compare reach or frequency."""
    found: set[str] = set()
    for rule in rules:
        if not rule.enabled:
            continue
        for cond in [*rule.min_data, *rule.conditions.leaves()]:
            if cond.metric in REACH_METRICS:
                found.add(cond.window)
            if cond.compare_to is not None and cond.compare_to.metric in REACH_METRICS:
                found.add(cond.right_window)
    return {w for w in found if window_bounds(w)[1] is not None}


def ranges(windows: Iterable[str], replay_days: Iterable[date]) -> dict[tuple[date, date], list[tuple[date, str]]]:
    """(since, until) -> the (replay day, window) pairs that range serves."""
    out: dict[tuple[date, date], list[tuple[date, str]]] = defaultdict(list)
    for day in replay_days:
        for window in sorted(windows):
            lo, hi = window_bounds(window)
            assert hi is not None
            out[(day - timedelta(days=hi), day - timedelta(days=lo))].append((day, window))
    return dict(out)


@dataclass
class ReachHistory:
    by_day: dict[date, dict[tuple[str, str], int]]
    calls: int = 0
    failed: int = 0


async def read_reach_history(
    graph: GraphClient,
    accounts: Sequence[str],
    rules: Sequence[Rule],
    levels: Iterable[str],
    replay_days: Sequence[date],
) -> ReachHistory:
    """``{replay day: {(object id, window): reach}}`` for every object with delivery in the window's range."""
    wanted = ranges(reach_windows(rules), replay_days)
    history = ReachHistory(by_day=defaultdict(dict))
    for account in accounts:
        for level in [lv for lv in LEVELS if lv in set(levels)]:
            for (since, until), uses in sorted(wanted.items()):
                params = {"level": level, "time_range": {"since": since.isoformat(), "until": until.isoformat()},
                          "fields": f"{level}_id,reach", "limit": 500}
                history.calls += 1
                try:
                    rows = [row async for row in graph.paginate(
                        f"{account}/insights", params, scope=Scope.ad_account(account, "ads_insights"))]
                except GraphError as exc:
                    history.failed += 1
                    logger.warning("window reach %s..%s at %s level of %s unavailable: %s", since, until, level,
                                   account, exc)
                    continue
                for row in rows:
                    object_id = row.get(f"{level}_id")
                    if not object_id:
                        continue
                    for day, window in uses:
                        history.by_day[day][(str(object_id), window)] = int(row.get("reach") or 0)
    history.by_day = dict(history.by_day)
    return history
