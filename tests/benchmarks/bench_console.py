"""Benchmark: the console's pages on an account with 100,000 leads and 2 years of daily insights for 500 ads.

Run: ``python -m tests.benchmarks.bench_console [--leads N] [--ads A] [--days D] [--requests R] [--no-seed]``.
Seeds a database of its own (`leadwire_bench_console`, suffixed `_$LEADWIRE_TEST_VHOST` per checkout; recreated)
with SQL, starts the console on a free port, logs in, and prints the p50 / p95 / max latency of each page over R
sequential requests (goal: p95 < 300 ms). `--no-seed` measures the database an earlier run seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from services.console.app import create_app
from services.console.security import hash_password
from services.console.settings import ConsoleSettings
from shared.db.migrate import ensure_database, migrate
from shared.settings import BrokerSettings, DatabaseSettings, OpsSettings, Settings
from tests.fixtures.console import csrf_of
from tests.fixtures.infra import AMQP_URL, BENCH_DSN

# Per checkout, as the other benches: two checkouts benchmarking at once never drop each other's database.
DB_NAME = "leadwire_bench_console" + (f"_{os.environ['LEADWIRE_TEST_VHOST']}" if os.environ.get("LEADWIRE_TEST_VHOST")
                                      else "")
DSN = urlunsplit(urlsplit(BENCH_DSN)._replace(path=f"/{DB_NAME}"))
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
analyze;
"""


async def seed(ads: int, days: int, leads: int) -> None:
    admin = await asyncpg.connect(urlunsplit(urlsplit(DSN)._replace(path="/postgres")))
    try:
        await admin.execute(f'drop database if exists "{DB_NAME}" with (force)')
    finally:
        await admin.close()
    await ensure_database(DSN)
    await migrate(DSN)
    conn = await asyncpg.connect(DSN)
    try:
        started = time.perf_counter()
        for statement in _SEED.split(";\n"):
            if statement.strip():
                # Sizes are ints of ours: written into the statement (asyncpg cannot type an unused $n).
                sized = statement.replace("$1", str(ads)).replace("$2", str(days)).replace("$3", str(leads))
                await conn.execute(sized)
        counts = await conn.fetchrow("select (select count(*) from leads) as leads, "
                                     "(select count(*) from insights_daily) as insights")
        print(f"seeded {counts['leads']:,} leads and {counts['insights']:,} insights rows "
              f"in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


async def measure(requests: int) -> int:
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
                "performance 30 days": "/performance?days=30",
                "performance 90 days, ad sets": "/performance?days=90&campaign=1001",
            }
            print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for name, path in pages.items():
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
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--no-seed", action="store_true", help="measure the database seeded by an earlier run")
    args = parser.parse_args()
    if not args.no_seed:
        asyncio.run(seed(args.ads, args.days, args.leads))
    failures = asyncio.run(measure(args.requests))
    if failures:
        print(f"{failures} requests did not answer 200", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
