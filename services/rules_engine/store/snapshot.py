"""The snapshot the rules read (the rules engine's store, continued): entities, insights summed per window segment,
CRM outcomes and window reach, through the owners' read models only (`stored_*`; the package doc says which).
What the rules need decides what is read (`services/rules_engine/snapshot.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta

import asyncpg

from services.rules_engine.model import Entity, MetricRow, Snapshot
from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import Rule
from services.rules_engine.snapshot import levels_of, lookback_days, segments, uses_crm, uses_insights

_ENTITY_SQL = {
    "adset": """
        select s.adset_id as id, s.name, coalesce(s.effective_status, s.status, 'UNKNOWN') as status,
               s.account_id, s.campaign_id, c.name as campaign_name, s.adset_id,
               s.daily_budget_minor, s.lifetime_budget_minor, a.currency, a.timezone_name, s.synced_at
        from stored_adsets s
        join stored_ad_accounts a on a.account_id = s.account_id
        left join stored_campaigns c on c.campaign_id = s.campaign_id
        where s.listed and s.account_id = any($1::text[])
        order by s.adset_id
    """,
    "campaign": """
        select c.campaign_id as id, c.name, coalesce(c.effective_status, c.status, 'UNKNOWN') as status,
               c.account_id, c.campaign_id, c.name as campaign_name, null::text as adset_id,
               c.daily_budget_minor, c.lifetime_budget_minor, a.currency, a.timezone_name, c.synced_at
        from stored_campaigns c
        join stored_ad_accounts a on a.account_id = c.account_id
        where c.listed and c.account_id = any($1::text[])
        order by c.campaign_id
    """,
    "ad": """
        select d.ad_id as id, d.name, coalesce(d.effective_status, d.status, 'UNKNOWN') as status,
               d.account_id, d.campaign_id, c.name as campaign_name, d.adset_id,
               null::bigint as daily_budget_minor, null::bigint as lifetime_budget_minor,
               a.currency, a.timezone_name, d.synced_at
        from stored_ads d
        join stored_ad_accounts a on a.account_id = d.account_id
        left join stored_campaigns c on c.campaign_id = d.campaign_id
        where d.listed and d.account_id = any($1::text[])
        order by d.ad_id
    """,
}

# Delivery summed per ad set (or per ad, when a rule works at ad level) and per *segment* of days: the days between
# consecutive window boundaries ($2, offsets from today in the account's time zone). Every window the rules use is
# a union of whole segments, so one row per segment dated at its newest day gives `evaluate` the same window sums
# as one row per day, with a fraction of the rows. Per-day rows ($2 = every offset) serve the backtest.
_ROWS = """
    with acct as (
        select account_id, ($3::timestamptz at time zone timezone_name)::date as today
        from stored_ad_accounts where account_id = any($1::text[])
    )
    select a.today - ($2::int[])[width_bucket(a.today - i.date, $2::int[])] as date,
           {ad} as ad_id, i.adset_id, i.campaign_id, sum(i.spend_minor)::bigint as spend,
           sum(i.impressions)::bigint as impressions, sum(i.reach)::bigint as reach,
           sum(i.clicks)::bigint as clicks, sum(i.leads)::bigint as leads
    from stored_insights_daily i
    join acct a on a.account_id = i.account_id
    where i.account_id = any($1::text[]) and i.date >= $4 and i.date <= a.today
    group by 1, 2, i.adset_id, i.campaign_id
    order by i.adset_id, 1
"""
_ROWS_BY_ADSET = _ROWS.format(ad="null::text")
_ROWS_BY_AD = _ROWS.format(ad="i.ad_id")

# Meta's deduplicated reach per object and window, with the account's "today" as of $2 to check the range against.
_WINDOW_REACH = """
    select r.object_id, r.window_label, r.date_since, r.date_until, r.reach,
           ($2::timestamptz at time zone a.timezone_name)::date as today
    from stored_window_reach r
    join stored_ad_accounts a on a.account_id = r.account_id
    where r.account_id = any($1::text[]) and r.level = any($3::text[]) and r.window_label = any($4::text[])
"""

# CRM outcomes attributed to the lead's ad and the day (account time zone) the lead was created. A lead counts
# once per kind however many matching event names the CRM sent for it.
_CRM_ROWS = """
    select (l.created_time at time zone a.timezone_name)::date as date,
           case when $5 then l.ad_id end as ad_id,
           s.adset_id, s.campaign_id,
           count(distinct o.lead_id) filter (where lower(o.event_name) = any($3::text[])) as qualified_leads,
           count(distinct o.lead_id) filter (where lower(o.event_name) = any($4::text[])) as signed_cases
    from rule_crm_outcomes o
    join stored_leads l on l.leadgen_id = o.lead_id
    left join stored_ads d on d.ad_id = l.ad_id
    join stored_adsets s on s.adset_id = coalesce(l.adset_id, d.adset_id)
    join stored_ad_accounts a on a.account_id = s.account_id
    where s.account_id = any($1::text[])
      and l.created_time >= $2
      and (lower(o.event_name) = any($3::text[]) or lower(o.event_name) = any($4::text[]))
    group by 1, 2, 3, 4
"""

# Our own recent mutations, to apply to objects the insights poller has not re-read since (a paused ad set is
# PAUSED for the next run even if the object sync is 15 minutes away). Failed or refused commands changed nothing.
_OUR_MUTATIONS = """
    select entity_id, kind, budget_field, budget_minor, acted_at, reserve_id
    from rule_actions
    where (entity_id = any($1::text[]) or reserve_id = any($1::text[])) and acted_at > $2
      and kind in ('pause', 'pause_for_today', 'unpause', 'change_budget', 'set_budget', 'rotate_creative')
      and (result_status is null or result_status = 'ok')
    order by acted_at
"""


async def load_snapshot(
    conn: asyncpg.Connection,
    rules: Sequence[Rule],
    accounts: Sequence[str],
    now: datetime,
    *,
    lookback_cap: int,
    qualified_events: Sequence[str],
    signed_events: Sequence[str],
    extra_levels: Iterable[str] = (),
    extra_days: int = 0,
    per_day: bool = False,
) -> Snapshot:
    """Entities of the rules' levels in ``accounts`` and their delivery (and CRM outcomes) since the lookback.

    ``extra_days`` reads that many more days and ``per_day`` keeps one row per day instead of one per window
    segment (a backtest replays each day with its own windows behind it).
    """
    levels = levels_of(rules) | set(extra_levels)
    entities: list[Entity] = []
    synced: dict[str, datetime] = {}
    for level in ("campaign", "adset", "ad"):
        if level not in levels:
            continue
        for r in await conn.fetch(_ENTITY_SQL[level], list(accounts)):
            entities.append(
                Entity(
                    id=r["id"], level=level, name=r["name"], status=r["status"], account_id=r["account_id"],  # type: ignore[arg-type]
                    campaign_id=r["campaign_id"], campaign_name=r["campaign_name"], adset_id=r["adset_id"],
                    daily_budget=r["daily_budget_minor"], lifetime_budget=r["lifetime_budget_minor"],
                    currency=r["currency"], timezone=r["timezone_name"],
                )
            )
            synced[r["id"]] = r["synced_at"]
    entities = await _apply_our_mutations(conn, entities, synced, now)

    rows: list[MetricRow] = []
    window_reach: dict[tuple[str, str], int] = {}
    if entities and uses_insights(rules):
        days = lookback_days(rules, lookback_cap) + extra_days
        # One spare day: "today" differs between the accounts' time zones and UTC.
        since: date = now.date() - timedelta(days=days)
        per_ad = "ad" in levels
        bounds = segments(rules, days + 1, per_day=per_day)
        for r in await conn.fetch(_ROWS_BY_AD if per_ad else _ROWS_BY_ADSET, list(accounts), bounds, now, since):
            rows.append(MetricRow(r["date"], r["ad_id"], r["adset_id"], r["campaign_id"], r["spend"],
                                  r["impressions"], r["reach"], r["clicks"], r["leads"]))
        window_reach = await load_window_reach(conn, rules, accounts, now, levels)
        if uses_crm(rules):
            since_time = datetime.combine(since, datetime.min.time(), tzinfo=now.tzinfo)
            for r in await conn.fetch(
                _CRM_ROWS, list(accounts), since_time, [e.lower() for e in qualified_events],
                [e.lower() for e in signed_events], per_ad,
            ):
                rows.append(MetricRow(r["date"], r["ad_id"], r["adset_id"], r["campaign_id"],
                                      qualified_leads=r["qualified_leads"], signed_cases=r["signed_cases"]))
    return Snapshot(entities=entities, rows=rows, window_reach=window_reach)


async def load_window_reach(
    conn: asyncpg.Connection, rules: Iterable[Rule], accounts: Sequence[str], now: datetime, levels: Iterable[str]
) -> dict[tuple[str, str], int]:
    """``{(entity id, window): reach}`` of the stored deduplicated reach whose date range is the window's range
    as of ``now`` in the entity's account time zone (other rows are stale or for another day: left out)."""
    windows: dict[str, tuple[int, int]] = {}
    for rule in rules:
        for window in rule.windows():
            lo, hi = window_bounds(window)
            if hi is not None:
                windows[window] = (lo, hi)
    wanted = sorted(set(levels) & {"adset", "campaign", "ad"})
    if not windows or not wanted:
        return {}
    out: dict[tuple[str, str], int] = {}
    for r in await conn.fetch(_WINDOW_REACH, list(accounts), now, wanted, sorted(windows)):
        lo, hi = windows[r["window_label"]]
        today: date = r["today"]
        if (r["date_since"], r["date_until"]) == (today - timedelta(days=hi), today - timedelta(days=lo)):
            out[(r["object_id"], r["window_label"])] = r["reach"]
    return out


async def _apply_our_mutations(
    conn: asyncpg.Connection, entities: list[Entity], synced: dict[str, datetime], now: datetime
) -> list[Entity]:
    if not entities:
        return entities
    by_id = {e.id: e for e in entities}
    for r in await conn.fetch(_OUR_MUTATIONS, list(by_id), now - timedelta(days=2)):
        if r["kind"] == "rotate_creative":
            _rotated(by_id, synced, r)
            continue
        entity = by_id[r["entity_id"]]
        if synced.get(entity.id) is not None and r["acted_at"] <= synced[entity.id]:
            continue  # the object sync already saw the result of this action
        if r["kind"] in ("pause", "pause_for_today"):
            by_id[entity.id] = replace(entity, status="PAUSED")
        elif r["kind"] == "unpause":
            by_id[entity.id] = replace(entity, status="ACTIVE")
        elif r["budget_field"] in ("daily_budget", "lifetime_budget") and r["budget_minor"]:
            by_id[entity.id] = replace(entity, **{r["budget_field"]: r["budget_minor"]})
    return [by_id[e.id] for e in entities]


def _rotated(by_id: dict[str, Entity], synced: dict[str, datetime], r: asyncpg.Record) -> None:
    """A rotation: its ad PAUSED and its reserve ACTIVE, each until the object sync has seen it."""
    for object_id, status in ((r["entity_id"], "PAUSED"), (r["reserve_id"], "ACTIVE")):
        entity = by_id.get(object_id)
        if entity is None or (synced.get(object_id) is not None and r["acted_at"] <= synced[object_id]):
            continue
        by_id[object_id] = replace(entity, status=status)
