"""The console's summaries (migrations 0115-0117) give exactly the numbers the raw rows give.

insights_adset_daily (kept by triggers on insights_daily) behind `console_spend_daily` / `console_adset_spend_daily`,
and lead_cohort_facts (kept by triggers on leads and rule_crm_outcomes) behind `console_lead_cohorts`, which the
Performance page and Today's costs read. Each test writes through every path a writer takes (the insights poller's
`replace_insights`, inserts, upserts, updates, deletes, an outcome before its lead, truncation) and compares the
summaries and the console's queries with the same numbers computed from the raw rows, as the page did before.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.console import logic, queries
from services.insights_poller.logic import InsightRow, Window
from services.insights_poller.store import replace_insights

# What console_spend_daily and console_adset_spend_daily were (0020): insights_daily grouped at request time.
_RAW_SPEND = """
select i.account_id, i.date, i.campaign_id, max(coalesce(c.name, i.campaign_name)) as campaign_name, i.currency,
       acc.currency_offset, sum(i.spend_minor)::bigint as spend_minor, sum(i.impressions)::bigint as impressions,
       sum(i.clicks)::bigint as clicks, sum(i.leads)::bigint as leads
from insights_daily i join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id
group by i.account_id, i.date, i.campaign_id, i.currency, acc.currency_offset
order by 1, 2, 3, 5
"""
_RAW_ADSET_SPEND = """
select i.account_id, i.date, i.campaign_id, i.adset_id, max(coalesce(c.name, i.campaign_name)) as campaign_name,
       max(coalesce(s.name, i.adset_name)) as adset_name, i.currency, acc.currency_offset,
       sum(i.spend_minor)::bigint as spend_minor, sum(i.impressions)::bigint as impressions,
       sum(i.clicks)::bigint as clicks, sum(i.leads)::bigint as leads
from insights_daily i join ad_accounts acc on acc.account_id = i.account_id
left join campaigns c on c.campaign_id = i.campaign_id left join adsets s on s.adset_id = i.adset_id
group by i.account_id, i.date, i.campaign_id, i.adset_id, i.currency, acc.currency_offset
order by 1, 2, 3, 4, 7
"""
# What the console's cohort queries were (before 0116): the window's leads joined to their outcomes.
_RAW_PERFORMANCE_LEADS = """
with window_leads as (
    select leadgen_id, campaign_id, adset_id, is_organic, is_test from console_lead_facts
    where created_time >= $1 and created_time < $2 and ($5::text is null or campaign_id = $5)
), outcomes as (
    select o.leadgen_id, bool_or(lower(o.event_name) = any($3::text[])) as qualified,
           bool_or(lower(o.event_name) = any($4::text[])) as signed
    from console_crm_outcomes o join window_leads w using (leadgen_id) group by o.leadgen_id
)
select w.campaign_id, case when $5::text is null then null else w.adset_id end as adset_id,
       count(*) filter (where not w.is_organic)::integer as paid_leads,
       count(*) filter (where w.is_organic and not w.is_test)::integer as organic_leads,
       count(*) filter (where w.is_test)::integer as test_leads,
       count(*) filter (where o.qualified)::integer as qualified, count(*) filter (where o.signed)::integer as signed
from window_leads w left join outcomes o using (leadgen_id)
group by w.campaign_id, 2
"""
_RAW_DAILY_OUTCOMES = """
select (l.created_time at time zone $3)::date as day,
       count(distinct l.leadgen_id) filter (where lower(o.event_name) = any($4::text[]))::integer as qualified,
       count(distinct l.leadgen_id) filter (where lower(o.event_name) = any($5::text[]))::integer as signed
from console_lead_facts l join console_crm_outcomes o on o.leadgen_id = l.leadgen_id
where l.created_time >= $1 and l.created_time < $2 and ($6::text is null or l.campaign_id = $6)
group by 1
"""
_RAW_COHORT = """
select count(distinct l.leadgen_id) filter (where lower(o.event_name) = any($3::text[]))::integer as qualified,
       count(distinct l.leadgen_id) filter (where lower(o.event_name) = any($4::text[]))::integer as signed
from console_lead_facts l join console_crm_outcomes o on o.leadgen_id = l.leadgen_id
where l.created_time >= $1 and l.created_time < $2
"""
_RAW_COHORTS = """
select l.leadgen_id, l.created_time, l.campaign_id, l.adset_id, l.is_organic, l.is_test,
       coalesce((select array_agg(distinct lower(o.event_name) order by lower(o.event_name))
                 from rule_crm_outcomes o where o.lead_id = l.leadgen_id), '{}') as outcomes
from console_lead_facts l order by 1
"""
QUALIFIED = ["qualifiedlead", "qualified lead", "mql"]
SIGNED = ["signedcase", "signed case", "purchase"]
EVENTS = ("QualifiedLead", "qualified lead", "MQL", "SignedCase", "Purchase", "Contacted")
TEST_ANSWERS = {"email": "<test lead: dummy data for email>"}


def _rows(records: list[asyncpg.Record]) -> list[dict[str, object]]:
    return [dict(r) for r in records]


async def _same_spend(db: asyncpg.Pool) -> None:
    assert _rows(await db.fetch("select * from console_spend_daily order by 1, 2, 3, 5")) == \
        _rows(await db.fetch(_RAW_SPEND))
    assert _rows(await db.fetch("select * from console_adset_spend_daily order by 1, 2, 3, 4, 7")) == \
        _rows(await db.fetch(_RAW_ADSET_SPEND))


def _sorted(records: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(records, key=lambda r: json.dumps(r, default=str, sort_keys=True))


async def _same_cohorts(db: asyncpg.Pool) -> None:
    assert _rows(await db.fetch("select * from console_lead_cohorts order by 1")) == _rows(await db.fetch(_RAW_COHORTS))
    now = await queries.now(db)
    campaigns = [None, *(r[0] for r in await db.fetch("select distinct campaign_id from leads "
                                                       "where campaign_id is not null order by 1 limit 2"))]
    for zone_name in ("UTC", "America/Phoenix", "Asia/Kolkata", "Australia/Adelaide"):
        zone = ZoneInfo(zone_name)
        for days in (7, 30, 90):
            start, end = logic.day_of(now, zone, days - 1).start, logic.day_of(now, zone).end
            for campaign in campaigns:
                _, lead_rows = await queries.performance(db, days, campaign, start, end, QUALIFIED, SIGNED)
                raw = await db.fetch(_RAW_PERFORMANCE_LEADS, start, end, QUALIFIED, SIGNED, campaign)
                assert _sorted(lead_rows) == _sorted(_rows(raw)), (zone_name, days, campaign)
                _, outcome_rows = await queries.daily(db, days, campaign, start, end, zone_name, QUALIFIED, SIGNED)
                raw = await db.fetch(_RAW_DAILY_OUTCOMES, start, end, zone_name, QUALIFIED, SIGNED, campaign)
                assert _sorted(outcome_rows) == _sorted(_rows(raw)), (zone_name, days, campaign)
            cohort = await queries.cohort(db, start, end, QUALIFIED, SIGNED)
            assert cohort == dict(await db.fetchrow(_RAW_COHORT, start, end, QUALIFIED, SIGNED))


async def test_spend_views_over_the_summary_equal_insights_grouped_at_request_time(console_db: asyncpg.Pool) -> None:
    db, rng = console_db, random.Random(18)
    await db.execute("insert into ad_accounts (account_id, currency, currency_offset, timezone_name) values "
                     "('act_1', 'USD', 100, 'America/Phoenix'), ('act_2', 'JPY', 1, 'Asia/Kolkata')")
    # Names: campaign 11 and ad set 21 are synced (their names win), the others only named by insights rows.
    await db.execute("insert into campaigns (campaign_id, account_id, name) values ('11', 'act_1', 'Synced name')")
    await db.execute("insert into adsets (adset_id, account_id, campaign_id, name) values "
                     "('21', 'act_1', '11', 'Synced set')")
    today = datetime.now(UTC).date()
    rows = []
    for ad in range(12):
        account, campaign = ("act_1", str(11 + ad % 2)) if ad < 8 else ("act_2", "13")
        for days_ago in range(0, 100, 3):
            rows.append((f"9{ad}", today - timedelta(days=days_ago), account, campaign, str(20 + ad % 4),
                         f"Campaign {campaign} v{ad % 3}", f"Set {ad % 4}", "JPY" if account == "act_2" else "USD",
                         rng.randint(0, 90_000), rng.randint(0, 5_000), rng.randint(0, 50), rng.randint(0, 4)))
    await db.executemany(
        "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, campaign_name, adset_name, "
        "currency, spend_minor, impressions, clicks, leads) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        rows[: len(rows) // 2])  # one statement per row
    await db.execute(  # the rest in one statement
        "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, campaign_name, adset_name, "
        "currency, spend_minor, impressions, clicks, leads) select * from unnest($1::text[], $2::date[], $3::text[], "
        "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], "
        "$12::int[])", *[list(column) for column in zip(*rows[len(rows) // 2:], strict=True)])
    await _same_spend(db)

    # Restated numbers, renamed objects, an ad moved to another ad set, rows Meta no longer returns.
    await db.execute("update insights_daily set spend_minor = spend_minor + 7, campaign_name = 'Zz renamed' "
                     "where ad_id = '91' and date > $1", today - timedelta(days=20))
    await db.execute("update insights_daily set adset_id = '29' where ad_id = '92'")
    await db.execute("delete from insights_daily where ad_id = '93' and date < $1", today - timedelta(days=50))
    await _same_spend(db)

    # The insights poller's own refresh of act_1's last 10 days: some rows changed, the rest of the window gone.
    window = Window(today - timedelta(days=9), today)
    fresh = [InsightRow(ad_id=f"9{ad}", day=today - timedelta(days=d), campaign_id="11", adset_id="21",
                        campaign_name="Synced name", adset_name="Set 1", ad_name=None, currency="USD",
                        spend_minor=1_000 * ad + d, impressions=10, reach=5, clicks=1, ctr=None, cpc=None, cpm=None,
                        frequency=None, leads=d % 3, actions={}, action_values={}, cost_per_action_type={})
             for ad in (0, 2, 4) for d in range(10)]
    async with db.acquire() as conn, conn.transaction():
        assert await replace_insights(conn, "act_1", window, fresh) > 0
    await _same_spend(db)
    assert await db.fetchval("select count(*) from console_adset_spend_daily where account_id = 'act_1' "
                             "and date >= $1 and adset_id <> '21'", window.since) == 0

    await db.execute("truncate insights_daily")
    assert await db.fetchval("select count(*) from console_spend_daily") == 0


async def test_two_writers_of_one_account_both_count(console_db: asyncpg.Pool) -> None:
    """Two transactions add rows to the same ad set and day: the summary has both (the second waits for the first
    and computes the group again)."""
    db = console_db
    await db.execute("insert into ad_accounts (account_id, currency, currency_offset, timezone_name) "
                     "values ('act_1', 'USD', 100, 'UTC')")
    insert = ("insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, currency, spend_minor) "
              "values ($1, current_date, 'act_1', '11', '21', 'USD', $2)")
    async with db.acquire() as first, db.acquire() as second:
        one = first.transaction()
        await one.start()
        await first.execute(insert, "a1", 100)
        two = second.transaction()
        await two.start()
        writing = asyncio.create_task(second.execute(insert, "a2", 20))
        await asyncio.sleep(0.3)
        assert not writing.done()  # waits for the account's lock
        await one.commit()
        await writing
        await two.commit()
    assert await db.fetchval("select spend_minor from console_adset_spend_daily") == 120
    await _same_spend(db)


async def test_lead_cohorts_equal_leads_joined_to_outcomes_in_every_zone(console_db: asyncpg.Pool) -> None:
    db, rng = console_db, random.Random(5)
    now = datetime.now(UTC)
    leads = []
    for n in range(300):
        organic = n % 9 == 0
        campaign = None if organic and n % 2 else str(50 + n % 3)
        fields: object = TEST_ANSWERS if organic and n % 4 == 0 else {"email": f"p{n}@example.com"}
        if n == 27:
            fields = ["not", "an", "object"]
        leads.append((f"77{n:04d}", campaign, None if campaign is None else f"{campaign}{n % 2}",
                      now - timedelta(hours=rng.uniform(0, 24 * 100)), organic, json.dumps(fields)))
    # An outcome before its lead (the CRM was faster than our copy), and outcomes of a lead never stored.
    await db.execute("insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) values "
                     "('770001', 'SignedCase', now(), gen_random_uuid()), "
                     "('nolead', 'QualifiedLead', now(), gen_random_uuid())")
    insert = ("insert into leads (leadgen_id, page_id, campaign_id, adset_id, created_time, is_organic, fields, raw, "
              "source) select l, '1', c, s, t, o, f::jsonb, '{}', 'webhook' from unnest($1::text[], $2::text[], "
              "$3::text[], $4::timestamptz[], $5::boolean[], $6::text[]) as x(l, c, s, t, o, f)")
    await db.execute(insert, *[list(column) for column in zip(*leads[:150], strict=True)])
    for lead in leads[150:]:  # one statement each, as the lead fetcher's small groups
        await db.execute(insert, *[[value] for value in lead])
    outcomes = [(lead[0], event) for lead in leads if rng.random() < 0.4
                for event in rng.sample(EVENTS, rng.randint(1, 3))]
    await db.executemany("insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
                         "values ($1, $2, now(), gen_random_uuid()) on conflict do nothing", outcomes)
    await _same_cohorts(db)

    # Lead rows change (campaign, answers), go away, come back; outcomes are withdrawn and renamed.
    await db.execute("update leads set campaign_id = '52', created_time = created_time - interval '3 days' "
                     "where leadgen_id like '7700%'")
    await db.execute("update leads set fields = $1::jsonb where leadgen_id = '770018'", json.dumps(TEST_ANSWERS))
    await db.execute("delete from rule_crm_outcomes where lead_id in (select lead_id from rule_crm_outcomes "
                     "order by lead_id limit 15)")
    await db.execute("update rule_crm_outcomes o set event_name = 'Purchase' where lower(event_name) = 'contacted' "
                     "and not exists (select 1 from rule_crm_outcomes p where p.lead_id = o.lead_id "
                     "and lower(p.event_name) = 'purchase')")
    await db.execute("delete from leads where leadgen_id like '7701%'")
    await db.execute(insert, *[[value] for value in leads[100]])
    await db.execute("update leads set leadgen_id = 'renamed' where leadgen_id = '770200'")
    await _same_cohorts(db)

    await db.execute("truncate rule_crm_outcomes")
    await _same_cohorts(db)
    await db.execute("truncate leads")
    assert await db.fetchval("select count(*) from lead_cohort_facts") == 0


async def test_a_lead_and_its_outcome_written_at_once_both_count(console_db: asyncpg.Pool) -> None:
    """The lead and its outcome in two transactions at the same time, either committing first."""
    db = console_db
    lead = ("insert into leads (leadgen_id, page_id, campaign_id, created_time, raw, source) "
            "values ($1, '1', '50', now(), '{}', 'webhook')")
    outcome = ("insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
               "values ($1, 'SignedCase', now(), gen_random_uuid())")
    for n, (early, late) in enumerate(((lead, outcome), (outcome, lead))):
        lead_id = f"78000{n}"
        async with db.acquire() as first, db.acquire() as second:
            one = first.transaction()
            await one.start()
            await first.execute(early, lead_id)
            two = second.transaction()
            await two.start()
            writing = asyncio.create_task(second.execute(late, lead_id))
            await asyncio.sleep(0.3)
            await one.commit()
            await writing
            await two.commit()
        row = await db.fetchrow("select created_time is not null as stored, outcomes from console_lead_cohorts "
                                "where leadgen_id = $1", lead_id)
        assert row is not None
        assert row["stored"]
        assert row["outcomes"] == ["signedcase"]
    await _same_cohorts(db)


def test_queries_name_only_console_views() -> None:
    """The console's reads stay on named read models, never the summaries' tables themselves."""
    sql = " ".join(value for name, value in vars(queries).items() if name.startswith("_") and isinstance(value, str))
    assert "console_lead_cohorts" in sql
    for table in ("lead_cohort_facts", "insights_adset_daily", "insights_daily", "rule_crm_outcomes"):
        assert f" {table}" not in sql
