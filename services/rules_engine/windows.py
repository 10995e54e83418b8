"""Window sums: a snapshot's rows grouped per entity once, and every (window, column) a rule reads summed once per
entity, whatever the number of rules that read it. Days are taken in each entity's account timezone.
"""

from __future__ import annotations

import logging
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from itertools import groupby
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.rules_engine.model import MetricRow, Snapshot
from services.rules_engine.rule_terms import window_bounds

logger = logging.getLogger(__name__)

SPEND, IMPRESSIONS, REACH, CLICKS, LEADS, QUALIFIED_LEADS, SIGNED_CASES = range(7)  # slot columns


def zone(tz_name: str, zones: dict[str, ZoneInfo]) -> ZoneInfo:
    tz = zones.get(tz_name)
    if tz is None:
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            logger.warning("unknown timezone %r, using UTC", tz_name)
            tz = ZoneInfo("UTC")
        zones[tz_name] = tz
    return tz


def local_today(now: datetime, tz_name: str, zones: dict[str, ZoneInfo]) -> date:
    return now.astimezone(zone(tz_name, zones)).date()


def next_midnight(now: datetime, tz_name: str, zones: dict[str, ZoneInfo]) -> datetime:
    """The next midnight in ``tz_name`` after ``now``, in ``now``'s timezone."""
    today = local_today(now, tz_name, zones)  # also caches the zone
    tz = zones[tz_name]
    return datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz).astimezone(now.tzinfo)


_ROW_KEY_INDEX = {"ad": 1, "adset": 2, "campaign": 3}  # MetricRow field positions
_ROW_FIRST_METRIC = 4
METRIC_COLUMNS: dict[str, tuple[int, ...]] = {
    "spend": (SPEND,),
    "impressions": (IMPRESSIONS,),
    "reach": (REACH,),
    "clicks": (CLICKS,),
    "leads": (LEADS,),
    "qualified_leads": (QUALIFIED_LEADS,),
    "signed_cases": (SIGNED_CASES,),
    "cpl": (SPEND, LEADS),
    "cost_per_qualified_lead": (SPEND, QUALIFIED_LEADS),
    "cost_per_signed_case": (SPEND, SIGNED_CASES),
    "ctr": (CLICKS, IMPRESSIONS),
    "cpm": (SPEND, IMPRESSIONS),
    "frequency": (IMPRESSIONS, REACH),
}

Slot = tuple[str, int]  # (window, column): one number per entity


class _SumPlan(NamedTuple):
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


def _plan(spans: Sequence[tuple[int, int]], slots: Sequence[tuple[int, int]]) -> _SumPlan:
    """The slices to sum for window positions ``spans``; slots over the same slice share one sum."""
    parts: dict[tuple[int, int, int], int] = {}
    picks = []
    for window_index, column in slots:
        start, end = spans[window_index]
        part = (_ROW_FIRST_METRIC + column, start, end) if end > start else (_ROW_FIRST_METRIC + column, 0, 0)
        picks.append(parts.setdefault(part, len(parts)))
    return _SumPlan(tuple(parts), tuple(picks))


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
    plans: dict[tuple[str, tuple[date, ...]], _SumPlan] = {}
    plans_by_spans: dict[tuple[tuple[int, int], ...], _SumPlan] = {}
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
                today = local_today(now, tz_name, zones)
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

