"""Benchmark: the console's pages on an account with 100,000 leads and 2 years of daily insights for 500 ads.

Run: ``python -m tests.benchmarks.bench_console [--leads N] [--ads A] [--days D] [--runs U] [--parked P]
[--requests R] [--no-seed] [--only TEXT]``.
Seeds a database of its own (`leadwire_bench_console`, suffixed `_$LEADWIRE_TEST_VHOST` per checkout; recreated)
with SQL (leads, insights, CRM outcomes, and U hourly rule runs of 100 decisions each for Automation), parks P
messages in RabbitMQ's parking queues for Stuck (dropped again at the end: only those), starts the console on a
free port, logs in, and prints the p50 / p95 / max latency of each page over R sequential requests (goal: p95 <
300 ms). `--no-seed` measures the database an earlier run seeded; `--only` the pages whose name contains TEXT.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import aio_pika
import aiohttp
import asyncpg

from services.console.app import create_app
from services.console.security import hash_password
from services.console.settings import ConsoleSettings
from shared.messaging import declare_topology
from shared.parked import Action, Selection, apply, list_parked
from shared.settings import BrokerSettings, DatabaseSettings, OpsSettings, Settings
from shared.topology import H_ATTEMPT, H_FIRST_FAILURE, H_PARKED_AT, H_REASON, consumer
from tests.fixtures.console import csrf_of
from tests.fixtures.infra import AMQP_URL, bench_dsn, fresh_database

# Per checkout, as the other benches: two checkouts benchmarking at once never drop each other's database.
DSN = bench_dsn("leadwire_bench_console")
PASSWORD = "bench password 123"

_SEED = """
insert into ad_accounts (account_id, name, currency, currency_offset, timezone_name, last_refresh_at)
values ('act_1', 'Firm', 'USD', 100, 'America/Phoenix', now());
insert into campaigns (campaign_id, account_id, name)
select (1000 + c)::text, 'act_1', 'Campaign ' || c from generate_series(1, $1::int / 50) c;
insert into adsets (adset_id, account_id, campaign_id, name)
select (2000 + s)::text, 'act_1', (1000 + 1 + (s - 1) / 5)::text, 'Ad set ' || s
from generate_series(1, $1::int / 10) s;
insert into ads (ad_id, account_id, campaign_id, adset_id, name)
select (3000 + a)::text, 'act_1', (1000 + 1 + (a - 1) / 50)::text, (2000 + 1 + (a - 1) / 10)::text, 'Ad ' || a
from generate_series(1, $1::int) a;
insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, currency, spend_minor, impressions,
                            clicks, leads)
select ad.ad_id, d::date, 'act_1', ad.campaign_id, ad.adset_id, 'USD', (500 + random() * 3000)::bigint,
       (200 + random() * 2000)::bigint, (random() * 40)::bigint, (random() * 3)::int
from ads ad, generate_series(current_date - ($2::int - 1), current_date, interval '1 day') d;
insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, fields,
                   raw, source, fetched_at)
select (10^15 + n)::bigint::text, '1', '77', ad.ad_id, ad.adset_id, ad.campaign_id, t, n % 20 = 0,
       jsonb_build_object('full_name', 'Person ' || n, 'email', 'p' || n || '@example.com'), '{}',
       case when n % 10 = 0 then 'backfill' else 'webhook' end, t + interval '2 seconds'
from generate_series(1, $3::int) n
cross join lateral (select now() - ($2::int * interval '1 day') * (n::float / $3::int) ^ 2 as t) tt
join ads ad on ad.ad_id = (3000 + 1 + n % $1::int)::text;
insert into crm_deliveries (leadgen_id, adapter, status, attempts, delivered_at)
select leadgen_id, 'webhook', case when right(leadgen_id, 2) = '00' then 'failed' else 'delivered' end, 1,
       case when right(leadgen_id, 2) = '00' then null else created_time + interval '3 seconds' end
from leads;
insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id)
select leadgen_id, 'QualifiedLead', created_time + interval '1 day', gen_random_uuid() from leads
where right(leadgen_id, 1) in ('1', '2');
insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id)
select leadgen_id, 'SignedCase', created_time + interval '20 days', gen_random_uuid() from leads
where right(leadgen_id, 1) = '1' and right(leadgen_id, 2) < '50';
insert into rule_runs (run_id, trigger, accounts, started_at, finished_at, rules, entities, decisions, acted, counts)
select md5('run' || r)::uuid, 'insights_updated', array['act_1'], now() - r * interval '1 hour',
       now() - r * interval '1 hour' + interval '2 seconds',
       array['pause_high_cpl', 'scale_winners', 'zero_leads', 'budget_pacing', 'signed_cost'], 20, 100, 1,
       '{"skipped:not_matched": 85}'
from generate_series(1, $4::int) r;
insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, currency,
                            outcome, reason, shadow, metrics, explanation)
select md5('run' || r)::uuid, now() - r * interval '1 hour',
       (array['pause_high_cpl', 'scale_winners', 'zero_leads', 'budget_pacing', 'signed_cost'])[1 + d % 5],
       (2000 + 1 + (d / 5 + r) % ($1::int / 10))::text, 'adset', 'Ad set ' || (1 + (d / 5 + r) % ($1::int / 10)),
       'act_1', 'USD',
       case when d = 0 then 'acted' when d % 20 = 1 then 'would_act' else 'skipped' end,
       case when d = 0 or d % 20 = 1 then null when d % 10 = 3 then 'cooldown' else 'not_matched' end,
       d % 20 = 1,
       jsonb_build_object('last_7d', jsonb_build_object('spend', 75000 + d, 'leads', d % 7, 'cpl',
                                                        case when d % 7 > 0 then (75000 + d) / (d % 7) end)),
       'CPL over the last 7 days is above the limit'
from generate_series(1, $4::int) r, generate_series(0, 99) d;
insert into rule_actions (command_id, run_id, rule, entity_id, entity_level, account_id, kind, acted_at, message_id,
                          result_status, result_detail, result_at)
select gen_random_uuid(), run_id, rule, entity_id, entity_level, account_id, 'pause', evaluated_at,
       gen_random_uuid(), case when id % 7 = 0 then 'failed' else 'ok' end,
       case when id % 7 = 0 then 'Meta answered 400' end, evaluated_at + interval '5 seconds'
from rule_decisions where outcome = 'acted';
analyze;
-- The summaries and the tables under them as autovacuum keeps them (visibility map set: index-only scans).
vacuum leads, insights_daily, insights_adset_daily, lead_cohort_facts, rule_crm_outcomes, rule_decisions;
"""


async def seed(ads: int, days: int, leads: int, runs: int) -> None:
    await fresh_database(DSN)
    conn = await asyncpg.connect(DSN)
    try:
        started = time.perf_counter()
        for statement in _SEED.split(";\n"):
            if statement.strip():
                # Sizes are ints of ours: written into the statement (asyncpg cannot type an unused $n).
                sized = (statement.replace("$1", str(ads)).replace("$2", str(days)).replace("$3", str(leads))
                         .replace("$4", str(runs)))
                await conn.execute(sized)
        counts = await conn.fetchrow("select (select count(*) from leads) as leads, "
                                     "(select count(*) from insights_daily) as insights, "
                                     "(select count(*) from rule_decisions) as decisions")
        print(f"seeded {counts['leads']:,} leads, {counts['insights']:,} insights rows and "
              f"{counts['decisions']:,} rule decisions in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


# Parked for the Stuck page: a CRM adapter's refusals and a Conversions API contract error, as services park them.
_PARKED = ((consumer("crm_sync", "lead_captured"), "CRM (webhook) answered 422: email is invalid"),
           (consumer("capi_sender", "conversion_requested"), "contract: event_time must be a number"))


async def park(count: int) -> frozenset[str]:
    """Park `count` messages (ids of their own) and wait until a sweep of the parking queues sees them all."""
    await declare_topology(AMQP_URL, [])
    ids = []
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        for n in range(count):
            spec, reason = _PARKED[n % len(_PARKED)]
            message_id = f"bench-console-{uuid.uuid4()}"
            headers = {H_REASON: reason, H_ATTEMPT: 5, H_PARKED_AT: datetime.now(UTC).isoformat(),
                       H_FIRST_FAILURE: f"{datetime.now(UTC).timestamp() - 3600:.3f}"}
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", message_id=message_id, type="LeadCaptured", headers=headers),
                routing_key=spec.parking_queue_name,
            )
            ids.append(message_id)
    wanted = frozenset(ids)
    consumers = [spec for spec, _ in _PARKED]
    for _ in range(60):  # a quorum queue's message count lags by seconds; a sweep reads that many
        if len(await list_parked(AMQP_URL, consumers, Selection(ids=wanted))) == len(wanted):
            break
        await asyncio.sleep(0.5)
    return wanted


async def unpark(ids: frozenset[str]) -> None:
    """Drop the bench's own parked messages again (others are left as they were)."""
    await apply(AMQP_URL, [spec for spec, _ in _PARKED], Selection(ids=ids), Action.DROP)


async def measure(requests: int, only: str) -> int:
    hashed = hash_password(PASSWORD)
    settings = Settings(
        database=DatabaseSettings(database_url=DSN, db_pool_min=1, db_pool_max=4),
        broker=BrokerSettings(amqp_url=AMQP_URL),
        ops=OpsSettings(ops_port=0),
        console=ConsoleSettings(users=f"bench:{hashed}", timezone="America/Phoenix", meta_check_seconds=0),
    )
    service = create_app(settings)
    await service.start()
    failures = 0
    try:
        base = f"http://127.0.0.1:{service.ops_port}"
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{base}/login") as resp:
                form = await resp.text()
            async with http.post(f"{base}/login", data={"csrf_token": csrf_of(form), "username": "bench",
                                                         "password": PASSWORD}, allow_redirects=False) as resp:
                assert resp.status == 303, resp.status
            lead_id = str(10**15 + 99_000)
            pages = {
                "today": "/",
                "today tiles (htmx)": "/today/tiles",
                "leads": "/leads",
                "leads today, delivered": "/leads?day=today&status=delivered",
                "leads search by name": "/leads?q=Ad%20set%2017",
                "leads failed (rare)": "/leads?status=failed",
                "lead trail": f"/leads/{lead_id}",
                "performance 7 days": "/performance?days=7",
                "performance 30 days": "/performance?days=30",
                "performance 90 days": "/performance?days=90",
                "performance 90 days, ad sets": "/performance?days=90&campaign=1001",
                "automation": "/automation",
                "automation failed (rare)": "/automation?status=failed",
                "automation object by name": "/automation?object=Ad%20set%2017",
                "stuck": "/stuck",
            }
            print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for name, path in pages.items():
                if only not in name:
                    continue
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    async with http.get(f"{base}{path}", allow_redirects=False) as resp:
                        await resp.read()
                        if resp.status != 200:
                            failures += 1
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{name:32} {statistics.median(times):8.1f} {p95:8.1f} {times[-1]:8.1f}")
    finally:
        await service.stop()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--ads", type=int, default=500)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--runs", type=int, default=90 * 24, help="hourly rule runs of 100 decisions each")
    parser.add_argument("--parked", type=int, default=50, help="messages parked while Stuck is measured")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--only", default="", help="measure only the pages whose name contains this")
    parser.add_argument("--no-seed", action="store_true", help="measure the database seeded by an earlier run")
    args = parser.parse_args()
    if not args.no_seed:
        asyncio.run(seed(args.ads, args.days, args.leads, args.runs))
    parked = asyncio.run(park(args.parked)) if args.parked and args.only in "stuck" else frozenset()
    try:
        failures = asyncio.run(measure(args.requests, args.only))
    finally:
        if parked:
            asyncio.run(unpark(parked))
    if failures:
        print(f"{failures} requests did not answer 200", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
