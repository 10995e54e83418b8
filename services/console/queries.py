"""The console's reads: every query names a `console_*` view (migrations 0020, 0101, 0115, 0116), never another
service's table.

Cohort counts (a window's leads by lead date, organic / test apart, with their qualified and signed ones) read
`console_lead_cohorts` (0116): one narrow row per lead carrying its outcomes' names, kept by triggers, so no request
joins the window's leads to their outcomes. Spend reads `console_spend_daily` / `console_adset_spend_daily`, over
insights summed per ad set and day (0115). See README, "Speed"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.console.logic import Day

if TYPE_CHECKING:
    import asyncpg

PAGE_SIZE = 50

_LEAD_COUNTS = """
select count(*)::integer                                                as leads,
       count(*) filter (where not is_organic)::integer                  as paid,
       count(*) filter (where is_organic and not is_test)::integer      as organic,
       count(*) filter (where is_test)::integer                         as test,
       count(*) filter (where crm_status = 'delivered')::integer        as delivered,
       count(*) filter (where crm_status = 'waiting')::integer          as waiting,
       count(*) filter (where crm_status = 'failed')::integer           as failed,
       count(*) filter (where crm_status = 'skipped')::integer          as skipped,
       percentile_cont(0.5) within group (order by extract(epoch from delivered_at - created_time))
           filter (where delivered_at is not null)                      as latency_p50,
       percentile_cont(0.95) within group (order by extract(epoch from delivered_at - created_time))
           filter (where delivered_at is not null)                      as latency_p95
from console_leads
where created_time >= $1 and created_time < $2
"""

# Per currency (accounts in one currency add up): spend today and over 7 / 30 days ending today, each account's
# days counted in its own time zone, with the leads Meta counted over the same days.
_SPEND = """
with acc as (
    select account_id, currency, currency_offset, (now() at time zone timezone_name)::date as today
    from console_ad_accounts
)
select acc.currency,
       coalesce(sum(s.spend_minor) filter (where s.date = acc.today), 0)::bigint     as spend_today,
       coalesce(sum(s.leads) filter (where s.date = acc.today), 0)::bigint           as leads_today,
       coalesce(sum(s.spend_minor) filter (where s.date > acc.today - 7), 0)::bigint as spend_7d,
       coalesce(sum(s.leads) filter (where s.date > acc.today - 7), 0)::bigint       as leads_7d,
       coalesce(sum(s.spend_minor), 0)::bigint                                       as spend_30d,
       coalesce(sum(s.leads), 0)::bigint                                             as leads_30d
from acc
left join console_spend_daily s on s.account_id = acc.account_id and s.date > acc.today - 30 and s.date <= acc.today
    and s.date > current_date - 32  -- a constant floor (any zone's window is inside it): filters before grouping
group by acc.currency
order by acc.currency
"""

# Leads of a window (by the lead's date: a lead signed in March counts for January if it came in January) with
# at least one CRM outcome among the qualified / signed event names.
_COHORT = """
select count(*) filter (where outcomes && $3::text[])::integer as qualified,
       count(*) filter (where outcomes && $4::text[])::integer as signed
from console_lead_cohorts
where created_time >= $1 and created_time < $2
"""

_SEARCH = """
select leadgen_id, created_time, fetched_at, source, page_id, form_id, campaign_id, adset_id, ad_id,
       campaign_name, adset_name, ad_name, is_organic, is_test, platform, delivered_at, crm_attempts, crm_status
from console_leads
where ($1::timestamptz is null or created_time >= $1) and ($2::timestamptz is null or created_time < $2)
  and ($3::text is null or crm_status = $3)
  and ($4::text is null
       or $4 in (leadgen_id, form_id, campaign_id, adset_id, ad_id)
       or campaign_name ilike '%' || $5 || '%' or adset_name ilike '%' || $5 || '%' or ad_name ilike '%' || $5 || '%')
order by created_time desc, leadgen_id
limit $6 offset $7
"""


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class LeadFilter:
    start: datetime | None = None
    end: datetime | None = None
    status: str | None = None
    query: str | None = None
    page: int = 0


async def now(pool: asyncpg.Pool) -> datetime:
    """The console's clock is the database's: every time it shows or compares ("today", "5 min ago") was stamped
    there, so a web host whose clock drifts cannot shift a day's boundaries or an age."""
    value: datetime = await pool.fetchval("select now()")
    return value


async def account_zone(pool: asyncpg.Pool) -> str | None:
    """The first ad account's time zone, if any account is known."""
    return await pool.fetchval("select timezone_name from console_ad_accounts order by account_id limit 1")


async def lead_counts(pool: asyncpg.Pool, day: Day) -> dict[str, Any]:
    return dict(await pool.fetchrow(_LEAD_COUNTS, day.start, day.end))


async def spend(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(_SPEND)]


async def cohort(pool: asyncpg.Pool, start: datetime, end: datetime, qualified: list[str],
                 signed: list[str]) -> dict[str, int]:
    row = await pool.fetchrow(_COHORT, start, end, [e.lower() for e in qualified], [e.lower() for e in signed])
    return {"qualified": row["qualified"], "signed": row["signed"]}


async def health(pool: asyncpg.Pool) -> dict[str, Any]:
    return dict(await pool.fetchrow("select * from console_health"))


async def search_leads(pool: asyncpg.Pool, where: LeadFilter) -> list[dict[str, Any]]:
    query = where.query.strip() if where.query else None
    rows = await pool.fetch(_SEARCH, where.start, where.end, where.status, query or None,
                            _like_escaped(query) if query else None, PAGE_SIZE + 1, where.page * PAGE_SIZE)
    return [dict(r) for r in rows]


async def lead(pool: asyncpg.Pool, leadgen_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("select * from console_leads where leadgen_id = $1", leadgen_id)
    return dict(row) if row else None


async def answers(pool: asyncpg.Pool, leadgen_id: str) -> dict[str, Any]:
    """The lead's answers: personal data. Callers mask them unless the operator revealed them (audited)."""
    value = await pool.fetchval("select fields from console_lead_answers where leadgen_id = $1", leadgen_id)
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


async def trail(pool: asyncpg.Pool, leadgen_id: str, captured_message_id: Any) -> dict[str, Any]:
    """Everything that happened to a lead after it was stored, each part from its own view."""
    captured = await pool.fetchrow(
        "select created_at, published_at from console_lead_captured where message_id = $1", captured_message_id
    )
    deliveries = await pool.fetch(
        "select * from console_crm_deliveries where leadgen_id = $1 order by adapter", leadgen_id
    )
    outcomes = await pool.fetch(
        "select * from console_crm_outcomes where leadgen_id = $1 order by event_time", leadgen_id
    )
    capi = await pool.fetch("select * from console_capi_sends where leadgen_id = $1 order by claimed_at", leadgen_id)
    reveals = await pool.fetch(
        "select at, username from console_audit where action = 'reveal_lead' and subject = $1 order by at desc "
        "limit 20", leadgen_id,
    )
    return {
        "captured": dict(captured) if captured else None,
        "deliveries": [dict(r) for r in deliveries],
        "outcomes": [dict(r) for r in outcomes],
        "capi": [dict(r) for r in capi],
        "reveals": [dict(r) for r in reveals],
    }


# Performance: Meta's numbers per campaign (or per ad set of one campaign) over the last `days` days of each
# account (today included), and the stored leads of the same days by lead date with their CRM outcomes.
_PERFORMANCE_SPEND = """
with acc as (select account_id, (now() at time zone timezone_name)::date as today from console_ad_accounts)
select s.campaign_id, case when $2::text is null then null else s.adset_id end as adset_id,
       max(s.campaign_name) as campaign_name,
       case when $2::text is null then null else max(s.adset_name) end as adset_name,
       s.account_id, s.currency,
       sum(s.spend_minor)::bigint as spend_minor, sum(s.impressions)::bigint as impressions,
       sum(s.leads)::bigint as meta_leads
from console_adset_spend_daily s
join acc on acc.account_id = s.account_id
where s.date > acc.today - $1::integer and s.date <= acc.today and ($2::text is null or s.campaign_id = $2)
  and s.date > current_date - ($1::integer + 2)  -- a constant floor: filters before the view groups
group by s.campaign_id, 2, s.account_id, s.currency  -- a campaign is in one account: the account only labels it
order by sum(s.spend_minor) desc
"""

_PERFORMANCE_LEADS = """
select campaign_id, case when $5::text is null then null else adset_id end as adset_id,
       count(*) filter (where not is_organic)::integer             as paid_leads,
       count(*) filter (where is_organic and not is_test)::integer as organic_leads,
       count(*) filter (where is_test)::integer                    as test_leads,
       count(*) filter (where outcomes && $3::text[])::integer     as qualified,
       count(*) filter (where outcomes && $4::text[])::integer     as signed
from console_lead_cohorts
where created_time >= $1 and created_time < $2 and ($5::text is null or campaign_id = $5)
group by campaign_id, 2
"""

_DAILY_SPEND = """
with acc as (select account_id, (now() at time zone timezone_name)::date as today from console_ad_accounts)
select s.date, s.currency, sum(s.spend_minor)::bigint as spend_minor, sum(s.leads)::bigint as meta_leads
from console_spend_daily s
join acc on acc.account_id = s.account_id
where s.date > acc.today - $1::integer and s.date <= acc.today and ($2::text is null or s.campaign_id = $2)
  and s.date > current_date - ($1::integer + 2)  -- a constant floor: filters before the view groups
group by s.date, s.currency
order by s.date
"""

_DAILY_OUTCOMES = """
select (created_time at time zone $3)::date as day,
       count(*) filter (where outcomes && $4::text[])::integer as qualified,
       count(*) filter (where outcomes && $5::text[])::integer as signed
from console_lead_cohorts
where created_time >= $1 and created_time < $2 and ($6::text is null or campaign_id = $6) and outcomes <> '{}'
group by 1
"""


async def performance(pool: asyncpg.Pool, days: int, campaign_id: str | None, start: datetime, end: datetime,
                      qualified: list[str], signed: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(spend rows, lead rows) per campaign, or per ad set of `campaign_id`."""
    spend_rows = await pool.fetch(_PERFORMANCE_SPEND, days, campaign_id)
    lead_rows = await pool.fetch(_PERFORMANCE_LEADS, start, end, [e.lower() for e in qualified],
                                 [e.lower() for e in signed], campaign_id)
    return [dict(r) for r in spend_rows], [dict(r) for r in lead_rows]


async def daily(pool: asyncpg.Pool, days: int, campaign_id: str | None, start: datetime, end: datetime, zone: str,
                qualified: list[str], signed: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(spend per day and currency, outcomes per lead day) for the chart."""
    spend_rows = await pool.fetch(_DAILY_SPEND, days, campaign_id)
    outcome_rows = await pool.fetch(_DAILY_OUTCOMES, start, end, zone, [e.lower() for e in qualified],
                                    [e.lower() for e in signed], campaign_id)
    return [dict(r) for r in spend_rows], [dict(r) for r in outcome_rows]
