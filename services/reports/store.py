"""All SQL of the daily report. It reads views only (`console_*` of migration 0020, `stored_campaigns` of 0031,
`report_rule_decisions` and `report_open_alerts` of 0085) and writes its own `report_deliveries` and
`report_snapshots`."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from services.reports.logic import Delivery

if TYPE_CHECKING:
    import asyncpg


async def now(pool: asyncpg.Pool) -> datetime:
    """The report's clock is the database's, as the console's: the days it reports on are the days rows were
    stamped in."""
    value: datetime = await pool.fetchval("select now()")
    return value


async def accounts(pool: asyncpg.Pool, account_id: str | None = None) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "select account_id, coalesce(name, account_id) as name, currency, timezone_name from console_ad_accounts "
        "where $1::text is null or account_id = $1 order by account_id", account_id)
    return [dict(r) for r in rows]


async def spend_days(pool: asyncpg.Pool, account_id: str, first: date, last: date) -> list[dict[str, Any]]:
    """Meta's numbers per campaign and day (the account's days)."""
    rows = await pool.fetch(
        "select date, campaign_id, campaign_name, spend_minor, impressions, leads from console_spend_daily "
        "where account_id = $1 and date between $2 and $3", account_id, first, last)
    return [dict(r) for r in rows]


# Leads received between two instants, by their day in the account's zone: paid ones of the account's campaigns
# per campaign, organic and test ones of every Page apart; with how many of them qualified or signed since.
_LEADS = """
with window_leads as (
    select l.leadgen_id, l.campaign_id, l.campaign_name, l.is_organic, l.is_test,
           (l.created_time at time zone $4)::date as day
    from console_leads l
    where l.created_time >= $2 and l.created_time < $3
      and (l.is_organic or l.campaign_id in (select campaign_id from stored_campaigns where account_id = $1))
), outcomes as (
    select o.leadgen_id,
           bool_or(lower(o.event_name) = any($5::text[])) as qualified,
           bool_or(lower(o.event_name) = any($6::text[])) as signed
    from console_crm_outcomes o join window_leads w using (leadgen_id)
    group by o.leadgen_id
)
select w.day, case when w.is_organic then null else w.campaign_id end as campaign_id,
       max(w.campaign_name) as campaign_name, w.is_organic, w.is_test,
       count(*)::integer                            as leads,
       count(*) filter (where o.qualified)::integer as qualified,
       count(*) filter (where o.signed)::integer    as signed
from window_leads w left join outcomes o using (leadgen_id)
group by w.day, 2, w.is_organic, w.is_test
"""


async def lead_days(pool: asyncpg.Pool, account_id: str, start: datetime, end: datetime, zone: str,
                    qualified: list[str], signed: list[str]) -> list[dict[str, Any]]:
    rows = await pool.fetch(_LEADS, account_id, start, end, zone, [e.lower() for e in qualified],
                            [e.lower() for e in signed])
    return [dict(r) for r in rows]


async def rule_counts(pool: asyncpg.Pool, account_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Distinct rule-on-object pairs per outcome between two instants."""
    rows = await pool.fetch(
        "select outcome, count(distinct (rule, entity_id))::integer as pairs from report_rule_decisions "
        "where account_id = $1 and evaluated_at >= $2 and evaluated_at < $3 group by outcome",
        account_id, start, end)
    return [dict(r) for r in rows]


async def rule_items(pool: asyncpg.Pool, account_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """What the rules did or would have done, once per rule, object and outcome, with the latest explanation."""
    rows = await pool.fetch(
        "select rule, entity_id, max(entity_name) as entity_name, max(entity_level) as entity_level, outcome, "
        "count(*)::integer as times, (array_agg(explanation order by evaluated_at desc))[1] as explanation "
        "from report_rule_decisions "
        "where account_id = $1 and evaluated_at >= $2 and evaluated_at < $3 and outcome in ('acted', 'would_act') "
        "group by rule, entity_id, outcome", account_id, start, end)
    return [dict(r) for r in rows]


async def health(pool: asyncpg.Pool) -> dict[str, Any]:
    return dict(await pool.fetchrow("select * from console_health"))


async def open_alerts(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch("select kind, subject, detail, since from report_open_alerts order by since desc limit 20")
    return [dict(r) for r in rows]


async def snapshot(pool: asyncpg.Pool, account_id: str, day: date) -> dict[str, Any] | None:
    value = await pool.fetchval(
        "select stuck from report_snapshots where account_id = $1 and report_date = $2", account_id, day)
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value) if value is not None else None


async def save_snapshot(pool: asyncpg.Pool, account_id: str, day: date, stuck: dict[str, Any]) -> None:
    await pool.execute(
        "insert into report_snapshots (account_id, report_date, stuck) values ($1, $2, $3::jsonb) "
        "on conflict (account_id, report_date) do nothing", account_id, day, json.dumps(stuck))


async def deliveries(pool: asyncpg.Pool, account_id: str, day: date) -> dict[str, Delivery]:
    rows = await pool.fetch(
        "select channel, attempts, delivered_at, gave_up, next_attempt_at from report_deliveries "
        "where account_id = $1 and report_date = $2", account_id, day)
    return {r["channel"]: Delivery(r["channel"], r["attempts"], r["delivered_at"] is not None, r["gave_up"],
                                   r["next_attempt_at"]) for r in rows}


async def record_delivery(pool: asyncpg.Pool, account_id: str, day: date, channel: str, *, error: str | None,
                          gave_up: bool = False, retry_in: float | None = None) -> None:
    """One attempt's result: delivered (`error` None), or failed (retried after `retry_in` s, or given up)."""
    await pool.execute(
        """
        insert into report_deliveries (account_id, report_date, channel, attempts, last_error, next_attempt_at,
                                       delivered_at, gave_up)
        values ($1, $2, $3, 1, $4, now() + make_interval(secs => $5), case when $4::text is null then now() end, $6)
        on conflict (account_id, report_date, channel) do update
        set attempts = report_deliveries.attempts + 1, last_error = excluded.last_error,
            next_attempt_at = excluded.next_attempt_at, delivered_at = excluded.delivered_at,
            gave_up = excluded.gave_up, updated_at = now()
        """, account_id, day, channel, error, retry_in or 0.0, gave_up)


async def try_lock(conn: asyncpg.Connection, account_id: str, day: date) -> bool:
    """Hold a report (account, day) for this transaction: two running copies of the service send it once."""
    return bool(await conn.fetchval("select pg_try_advisory_xact_lock(hashtext('leadwire.report'), "
                                    "hashtext($1::text || ':' || $2::date::text))", account_id, day))
