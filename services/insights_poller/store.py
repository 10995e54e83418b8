"""PostgreSQL side of the insights poller: accounts, objects, daily insights (0004) and window reach (0009)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.insights_poller.logic import (
    AccountInfo,
    InsightRow,
    Window,
    WindowReach,
    ad_record,
    adset_record,
    campaign_record,
)


async def account_state(conn: asyncpg.Connection, account_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("select * from ad_accounts where account_id = $1", account_id)


async def last_full_refresh(conn: asyncpg.Connection, account_id: str) -> datetime | None:
    return await conn.fetchval("select last_full_refresh_at from ad_accounts where account_id = $1", account_id)


async def known_campaign_ids(conn: asyncpg.Connection, account_id: str) -> list[str]:
    """Campaigns we have seen for the account, listed or not (deleted campaigns can still have insights)."""
    rows = await conn.fetch(
        "select campaign_id from campaigns where account_id = $1 "
        "union select distinct campaign_id from insights_daily where account_id = $1",
        account_id,
    )
    return [r["campaign_id"] for r in rows if r["campaign_id"]]


async def upsert_account(conn: asyncpg.Connection, account: AccountInfo) -> None:
    await conn.execute(
        """
        insert into ad_accounts (account_id, name, currency, currency_offset, timezone_name, account_status)
        values ($1, $2, $3, $4, $5, $6)
        on conflict (account_id) do update set
            name = excluded.name, currency = excluded.currency, currency_offset = excluded.currency_offset,
            timezone_name = excluded.timezone_name, account_status = excluded.account_status, updated_at = now()
        """,
        account.account_id, account.name, account.currency, account.offset, account.timezone_name,
        account.account_status,
    )


def _columns(records: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[r[i] for r in records] for i in range(width)]


async def upsert_objects(
    conn: asyncpg.Connection, account_id: str, objects: Mapping[str, list[dict[str, Any]]]
) -> None:
    """Replace the account's object graph with what Meta listed; unlisted objects get listed = false."""
    campaigns = [campaign_record(account_id, c) for c in objects.get("campaigns", []) if c.get("id")]
    adsets = [adset_record(account_id, a) for a in objects.get("adsets", []) if a.get("id")]
    ads = [ad_record(account_id, a) for a in objects.get("ads", []) if a.get("id")]
    await conn.execute(
        """
        insert into campaigns (campaign_id, account_id, name, objective, status, effective_status,
                               daily_budget_minor, lifetime_budget_minor, bid_strategy, created_time, updated_time)
        select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                             $7::bigint[], $8::bigint[], $9::text[], $10::timestamptz[], $11::timestamptz[])
        on conflict (campaign_id) do update set
            account_id = excluded.account_id, name = excluded.name, objective = excluded.objective,
            status = excluded.status, effective_status = excluded.effective_status,
            daily_budget_minor = excluded.daily_budget_minor, lifetime_budget_minor = excluded.lifetime_budget_minor,
            bid_strategy = excluded.bid_strategy, created_time = excluded.created_time,
            updated_time = excluded.updated_time, listed = true, synced_at = now()
        """,
        *_columns(campaigns, 11),
    )
    await conn.execute(
        """
        insert into adsets (adset_id, account_id, campaign_id, name, status, effective_status, daily_budget_minor,
                            lifetime_budget_minor, bid_strategy, bid_amount_minor, optimization_goal, billing_event,
                            created_time, updated_time)
        select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                             $8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::text[],
                             $13::timestamptz[], $14::timestamptz[])
        on conflict (adset_id) do update set
            account_id = excluded.account_id, campaign_id = excluded.campaign_id, name = excluded.name,
            status = excluded.status, effective_status = excluded.effective_status,
            daily_budget_minor = excluded.daily_budget_minor, lifetime_budget_minor = excluded.lifetime_budget_minor,
            bid_strategy = excluded.bid_strategy, bid_amount_minor = excluded.bid_amount_minor,
            optimization_goal = excluded.optimization_goal, billing_event = excluded.billing_event,
            created_time = excluded.created_time, updated_time = excluded.updated_time, listed = true,
            synced_at = now()
        """,
        *_columns(adsets, 14),
    )
    await conn.execute(
        """
        insert into ads (ad_id, account_id, campaign_id, adset_id, name, status, effective_status, created_time,
                         updated_time)
        select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                             $8::timestamptz[], $9::timestamptz[])
        on conflict (ad_id) do update set
            account_id = excluded.account_id, campaign_id = excluded.campaign_id, adset_id = excluded.adset_id,
            name = excluded.name, status = excluded.status, effective_status = excluded.effective_status,
            created_time = excluded.created_time, updated_time = excluded.updated_time, listed = true,
            synced_at = now()
        """,
        *_columns(ads, 9),
    )
    for table, key, ids in (("campaigns", "campaign_id", [c[0] for c in campaigns]),
                            ("adsets", "adset_id", [a[0] for a in adsets]),
                            ("ads", "ad_id", [a[0] for a in ads])):
        # Table and column names come from the literal tuple above, never from input.
        await conn.execute(
            f"update {table} set listed = false, synced_at = now() "  # noqa: S608
            f"where account_id = $1 and listed and {key} <> all($2::text[])",
            account_id, ids,
        )
    await conn.execute("update ad_accounts set objects_synced_at = now() where account_id = $1", account_id)


_UPSERT_INSIGHTS = """
with incoming as (
    select * from unnest($2::text[], $3::date[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                         $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::numeric[],
                         $15::numeric[], $16::numeric[], $17::numeric[], $18::integer[], $19::text[], $20::text[],
                         $21::text[])
        as t(ad_id, date, campaign_id, adset_id, campaign_name, adset_name, ad_name, currency, spend_minor,
             impressions, reach, clicks, ctr, cpc, cpm, frequency, leads, actions, action_values,
             cost_per_action_type)
)
insert into insights_daily as d (ad_id, date, account_id, campaign_id, adset_id, campaign_name, adset_name,
                                 ad_name, currency, spend_minor, impressions, reach, clicks, ctr, cpc, cpm,
                                 frequency, leads, actions, action_values, cost_per_action_type)
select ad_id, date, $1, campaign_id, adset_id, campaign_name, adset_name, ad_name, currency, spend_minor,
       impressions, reach, clicks, ctr, cpc, cpm, frequency, leads, actions::jsonb, action_values::jsonb,
       cost_per_action_type::jsonb
from incoming
on conflict (ad_id, date) do update set
    account_id = excluded.account_id, campaign_id = excluded.campaign_id, adset_id = excluded.adset_id,
    campaign_name = excluded.campaign_name, adset_name = excluded.adset_name, ad_name = excluded.ad_name,
    currency = excluded.currency, spend_minor = excluded.spend_minor, impressions = excluded.impressions,
    reach = excluded.reach, clicks = excluded.clicks, ctr = excluded.ctr, cpc = excluded.cpc, cpm = excluded.cpm,
    frequency = excluded.frequency, leads = excluded.leads, actions = excluded.actions,
    action_values = excluded.action_values, cost_per_action_type = excluded.cost_per_action_type,
    updated_at = now()
where (d.account_id, d.campaign_id, d.adset_id, d.campaign_name, d.adset_name, d.ad_name, d.currency,
       d.spend_minor, d.impressions, d.reach, d.clicks, d.ctr, d.cpc, d.cpm, d.frequency, d.leads, d.actions,
       d.action_values, d.cost_per_action_type)
      is distinct from
      (excluded.account_id, excluded.campaign_id, excluded.adset_id, excluded.campaign_name, excluded.adset_name,
       excluded.ad_name, excluded.currency, excluded.spend_minor, excluded.impressions, excluded.reach,
       excluded.clicks, excluded.ctr, excluded.cpc, excluded.cpm, excluded.frequency, excluded.leads,
       excluded.actions, excluded.action_values, excluded.cost_per_action_type)
returning 1
"""

_DELETE_KEYS = """
delete from insights_daily d
using unnest($2::text[], $3::date[]) as k(ad_id, date)
where d.account_id = $1 and d.ad_id = k.ad_id and d.date = k.date
returning 1
"""


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


async def replace_insights(
    conn: asyncpg.Connection, account_id: str, window: Window, rows: Sequence[InsightRow]
) -> int:
    """Make the stored rows of `account_id` in `window` exactly `rows`. Returns rows inserted/changed/deleted."""
    inside = [r for r in rows if r.day in window]
    columns: list[list[Any]] = [
        [r.ad_id for r in inside], [r.day for r in inside], [r.campaign_id for r in inside],
        [r.adset_id for r in inside], [r.campaign_name for r in inside], [r.adset_name for r in inside],
        [r.ad_name for r in inside], [r.currency for r in inside], [r.spend_minor for r in inside],
        [r.impressions for r in inside], [r.reach for r in inside], [r.clicks for r in inside],
        [r.ctr for r in inside], [r.cpc for r in inside], [r.cpm for r in inside], [r.frequency for r in inside],
        [r.leads for r in inside], [_dumps(r.actions) for r in inside], [_dumps(r.action_values) for r in inside],
        [_dumps(r.cost_per_action_type) for r in inside],
    ]
    # Meta omits ads without delivery, so a stored row of the refreshed window that Meta no longer returns means
    # the ad had no delivery that day after all (or was restated away): delete it rather than keep stale numbers.
    stored = await conn.fetch(
        "select ad_id, date from insights_daily where account_id = $1 and date between $2 and $3",
        account_id, window.since, window.until,
    )
    fresh = {r.key for r in inside}
    gone = [(r["ad_id"], r["date"]) for r in stored if (r["ad_id"], r["date"]) not in fresh]
    deleted = 0
    if gone:
        deleted = len(await conn.fetch(_DELETE_KEYS, account_id, [g[0] for g in gone], [g[1] for g in gone]))
    changed = len(await conn.fetch(_UPSERT_INSIGHTS, account_id, *columns)) if inside else 0
    return changed + deleted


_INSERT_WINDOW_REACH = """
insert into insights_window_reach (account_id, level, object_id, window_label, date_since, date_until, reach,
                                   impressions, frequency)
select $1, * from unnest($2::text[], $3::text[], $4::text[], $5::date[], $6::date[], $7::bigint[], $8::bigint[],
                         $9::numeric[])
"""


async def replace_window_reach(conn: asyncpg.Connection, account_id: str, rows: Sequence[WindowReach]) -> int:
    """Make the account's stored window reach exactly `rows` (windows not read this time are dropped)."""
    await conn.execute("delete from insights_window_reach where account_id = $1", account_id)
    unique = list({r.key: r for r in rows}.values())  # one row per (level, object, window), the last read wins
    if unique:
        await conn.execute(
            _INSERT_WINDOW_REACH, account_id, [r.level for r in unique], [r.object_id for r in unique],
            [r.label for r in unique], [r.window.since for r in unique], [r.window.until for r in unique],
            [r.reach for r in unique], [r.impressions for r in unique], [r.frequency for r in unique],
        )
    return len(unique)


async def mark_refreshed(conn: asyncpg.Connection, account_id: str, window: Window, *, full: bool) -> None:
    await conn.execute(
        """
        update ad_accounts set last_refresh_at = now(), last_refresh_since = $2, last_refresh_until = $3,
               last_full_refresh_at = case when $4 then now() else last_full_refresh_at end, updated_at = now()
        where account_id = $1
        """,
        account_id, window.since, window.until, full,
    )


async def lock_account(conn: asyncpg.Connection, account_id: str) -> None:
    """Serialize writers of one account's insights (a CLI refresh and the service) until the transaction ends."""
    await conn.execute("select pg_advisory_xact_lock(hashtext('insights_poller:' || $1))", account_id)

