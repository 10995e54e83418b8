"""Benchmark: loading the rules' snapshot from PostgreSQL (`store.load_snapshot`) for the shipped default rules, with
and without their ad-level rule, on 10,000 ad sets with 3 ads each and 30 days of insights.

Run: ``python -m tests.benchmarks.bench_rules_snapshot [--adsets N] [--days D] [--ads A] [--repeat R] [--no-seed]``.
Seeds a database of its own (`leadwire_bench_rules_snapshot`, suffixed `_$LEADWIRE_TEST_VHOST` per checkout;
recreated) with COPY from the data `bench_rules` evaluates (`shipped_snapshot`: 5 accounts, ad sets, ads, one
`insights_daily` row per ad and day, the deduplicated window reach of every ad set and ad, and one lead per qualified
lead or signed case with its CRM outcomes). Then prints, for each rule set, the wall time of `load_snapshot` as the
worker calls it (median, best and worst of R runs on one pooled connection; the first run is a warm-up, not
counted), the entities and rows it read, its peak Python memory (tracemalloc), and the CPU time of `evaluate` on
what it read, which is checked against `bench_rules`' `segment_snapshot` of the same data (same decisions).
Then it times writing those decisions as the worker does (`record_run` + `record_decisions` in one transaction,
commit included, through the migrated schema's triggers: `rule_decisions.status`, `rule_decision_hours`), a fresh run
id each time (median of R runs after one warm-up; the decisions tables are emptied first), and prints rows/s, the
growth of `rule_decisions` (pg_total_relation_size, indexes and TOAST included) per run, and both projected per
day at the engine's default run interval (RULES_INTERVAL_SECONDS).
`--no-seed` measures the database an earlier run seeded.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from datetime import time as day_time
from zoneinfo import ZoneInfo

import asyncpg

from services.rules_engine.logic import evaluate
from services.rules_engine.model import Decision, EngineSettings, EngineState, Snapshot
from services.rules_engine.rule_terms import window_bounds
from services.rules_engine.rules import Rule
from services.rules_engine.settings import RulesSettings
from services.rules_engine.store import load_snapshot, record_decisions, record_run
from shared.db.pool import create_pool
from shared.settings import DatabaseSettings
from tests.benchmarks.bench_rules import (
    NOW,
    REACH_WINDOWS,
    comparable,
    segment_snapshot,
    shipped_rules,
    shipped_snapshot,
)
from tests.fixtures.infra import bench_dsn, fresh_database

DSN = bench_dsn("leadwire_bench_rules_snapshot")
TODAY = NOW.astimezone(ZoneInfo("America/New_York")).date()  # the last day of bench_rules' data


def _accounts(snapshot: Snapshot) -> list[str]:
    return sorted({e.account_id for e in snapshot.entities})


def _leads(snapshot: Snapshot) -> Iterator[tuple[tuple, list[tuple]]]:
    """One lead per qualified lead or signed case of each ad and day (created at noon, account time), and its CRM
    outcomes: the first ``qualified_leads`` QualifiedLead, the first ``signed_cases`` SignedCase (an ad's share of
    its ad set's numbers can have more of the second). No lead without an outcome: the rules read none."""
    zones: dict[str, ZoneInfo] = {}
    zone_of = {e.id: e.timezone for e in snapshot.entities}
    n = 0
    for row in snapshot.rows:
        for k in range(max(row.qualified_leads, row.signed_cases)):
            n += 1
            lead_id = str(10**15 + n)
            assert row.ad_id is not None
            tz = zones.setdefault(zone_of[row.ad_id], ZoneInfo(zone_of[row.ad_id]))
            created = datetime.combine(row.date, day_time(12), tzinfo=tz)
            lead = (lead_id, "1", row.ad_id, row.adset_id, row.campaign_id, created, "{}", "backfill")
            events = []
            if k < row.qualified_leads:
                events.append((lead_id, "QualifiedLead", created + timedelta(days=1), uuid.uuid4()))
            if k < row.signed_cases:
                events.append((lead_id, "SignedCase", created + timedelta(days=2), uuid.uuid4()))
            yield lead, events


def _reach_rows(snapshot: Snapshot) -> list[tuple]:
    """`insights_window_reach` rows of the snapshot's window reach, read for the windows' ranges as of TODAY
    (impressions, not read by the rules: 0)."""
    entity = {e.id: e for e in snapshot.entities}
    out = []
    for (object_id, window), reach in snapshot.window_reach.items():
        lo, hi = window_bounds(window)
        assert hi is not None
        out.append(
            (
                entity[object_id].account_id,
                entity[object_id].level,
                object_id,
                window,
                TODAY - timedelta(days=hi),
                TODAY - timedelta(days=lo),
                reach,
                0,
            )
        )
    return out


async def seed(snapshot: Snapshot) -> None:
    """The ad objects, insights, window reach, leads and CRM outcomes of ``snapshot`` (per-ad rows), by COPY."""
    await fresh_database(DSN)
    started = time.perf_counter()
    entities = {level: [e for e in snapshot.entities if e.level == level] for level in ("adset", "ad")}
    account_of = {e.id: e.account_id for e in snapshot.entities}
    campaigns: dict[str, tuple[str, str]] = {}
    for e in entities["adset"]:
        assert e.campaign_id is not None
        campaigns.setdefault(e.campaign_id, (e.account_id, e.campaign_name or e.campaign_id))
    leads, outcomes = [], []
    for lead, events in _leads(snapshot):
        leads.append(lead)
        outcomes.extend(events)
    conn = await asyncpg.connect(DSN)
    try:
        copies: list[tuple[str, Sequence[str], list[tuple]]] = [
            (
                "ad_accounts",
                ("account_id", "name", "currency", "currency_offset", "timezone_name"),
                [(a, f"Firm {a}", "USD", 100, "America/New_York") for a in _accounts(snapshot)],
            ),
            (
                "campaigns",
                ("campaign_id", "account_id", "name"),
                [(c, account, name) for c, (account, name) in campaigns.items()],
            ),
            (
                "adsets",
                ("adset_id", "account_id", "campaign_id", "name", "status", "effective_status", "daily_budget_minor"),
                [
                    (e.id, e.account_id, e.campaign_id, e.name, e.status, e.status, e.daily_budget)
                    for e in entities["adset"]
                ],
            ),
            (
                "ads",
                ("ad_id", "account_id", "campaign_id", "adset_id", "name", "status", "effective_status"),
                [(e.id, e.account_id, e.campaign_id, e.adset_id, e.name, e.status, e.status) for e in entities["ad"]],
            ),
            (
                "insights_daily",
                (
                    "ad_id",
                    "date",
                    "account_id",
                    "campaign_id",
                    "adset_id",
                    "currency",
                    "spend_minor",
                    "impressions",
                    "reach",
                    "clicks",
                    "leads",
                ),
                [
                    (
                        r.ad_id,
                        r.date,
                        account_of[r.ad_id or ""],
                        r.campaign_id,
                        r.adset_id,
                        "USD",
                        r.spend,
                        r.impressions,
                        r.reach,
                        r.clicks,
                        r.leads,
                    )
                    for r in snapshot.rows
                ],
            ),
            (
                "insights_window_reach",
                (
                    "account_id",
                    "level",
                    "object_id",
                    "window_label",
                    "date_since",
                    "date_until",
                    "reach",
                    "impressions",
                ),
                _reach_rows(snapshot),
            ),
            (
                "leads",
                ("leadgen_id", "page_id", "ad_id", "adset_id", "campaign_id", "created_time", "raw", "source"),
                leads,
            ),
            ("rule_crm_outcomes", ("lead_id", "event_name", "event_time", "message_id"), outcomes),
        ]
        for table, columns, records in copies:
            await conn.copy_records_to_table(table, records=records, columns=list(columns))
        await conn.execute("analyze")
        # As autovacuum keeps them (visibility map set: index-only scans), as bench_console does.
        await conn.execute("vacuum insights_daily, insights_window_reach, leads, rule_crm_outcomes, ads, adsets")
        print(
            f"seeded {len(entities['adset']):,} ad sets, {len(entities['ad']):,} ads, {len(snapshot.rows):,} "
            f"insights rows, {len(snapshot.window_reach):,} window reach rows, {len(leads):,} leads with "
            f"{len(outcomes):,} CRM outcomes in {time.perf_counter() - started:.1f} s"
        )
    finally:
        await conn.close()


async def measure(
    label: str, rules: list[Rule], accounts: list[str], repeat: int, expected: Snapshot
) -> tuple[float, list[Decision], int]:
    """Print the load figures of ``rules``' snapshot; check what it read against ``expected``; the median load,
    the decisions evaluated on it and the number of entities."""
    settings = RulesSettings()
    pool = await create_pool(DatabaseSettings(database_url=DSN, db_pool_min=1, db_pool_max=1))

    async def load() -> Snapshot:
        async with pool.acquire() as conn, conn.transaction():  # as the worker: one transaction per run
            return await load_snapshot(
                conn,
                rules,
                accounts,
                NOW,
                lookback_cap=settings.lookback_days,
                qualified_events=settings.qualified_events,
                signed_events=settings.signed_events,
            )

    try:
        await load()  # warm-up: the tables' pages into the cache, the statements prepared
        timings, cpu = [], []
        for _ in range(repeat):
            start, start_cpu = time.perf_counter(), time.process_time()
            snapshot = await load()
            timings.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        tracemalloc.start()
        snapshot = await load()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        await pool.close()
    levels: dict[str, int] = {}
    for e in snapshot.entities:
        levels[e.level] = levels.get(e.level, 0) + 1
    median = statistics.median(timings)
    print(
        f"[{label}] load_snapshot: median {median:.3f} s, best {min(timings):.3f} s, worst {max(timings):.3f} s "
        f"over {repeat} runs; this process's CPU median {statistics.median(cpu):.3f} s (decoding rows; the rest is "
        f"PostgreSQL); peak memory (tracemalloc) {peak / 2**20:.1f} MiB"
    )
    print(
        f"[{label}] read: entities {levels}, rows {len(snapshot.rows):,}, window reach {len(snapshot.window_reach):,}"
    )
    state = EngineState(data_as_of={a.removeprefix("act_"): NOW for a in accounts})
    start_cpu = time.process_time()
    decisions = evaluate(rules, snapshot, state, NOW, EngineSettings())
    evaluate_cpu = time.process_time() - start_cpu
    # The entities in the order the SQL reads them (by level, then id): guardrails such as max_actions_per_run act
    # on the first ones.
    order = {"campaign": 0, "adset": 1, "ad": 2}
    expected = replace(expected, entities=sorted(expected.entities, key=lambda e: (order[e.level], e.id)))
    same = comparable(decisions) == comparable(evaluate(rules, expected, state, NOW, EngineSettings()))
    print(
        f"[{label}] evaluate on it: CPU {evaluate_cpu:.3f} s, {len(decisions):,} decisions; load + evaluate "
        f"{median + evaluate_cpu:.3f} s; same decisions as bench_rules' segment_snapshot of the data: {same}"
    )
    return median, decisions, len(snapshot.entities)


async def measure_record(
    label: str, rules: list[Rule], accounts: list[str], decisions: list[Decision], entities: int, repeat: int
) -> tuple[float, int]:
    """Print the cost of recording ``decisions`` as the worker does; the median seconds and bytes per run.

    The worker writes them in its run's transaction: `record_run`, then `record_decisions` (the shadow decisions it
    announces one by one, for their ids; none here: every rule acts, as `bench_rules` evaluates them)."""
    pool = await create_pool(DatabaseSettings(database_url=DSN, db_pool_min=1, db_pool_max=1))

    async def size(conn: asyncpg.Connection) -> int:
        return await conn.fetchval("select pg_total_relation_size('rule_decisions')")

    async def record() -> tuple[float, int]:
        run_id = uuid.uuid4()
        async with pool.acquire() as conn:
            before = await size(conn)
            start = time.perf_counter()
            async with conn.transaction():
                await record_run(
                    conn,
                    run_id=run_id,
                    trigger="schedule",
                    trigger_message_id=None,
                    accounts=accounts,
                    started_at=NOW,
                    rules=rules,
                    rule_problems=0,
                    entities=entities,
                    decisions=decisions,
                )
                await record_decisions(conn, run_id, decisions, announced=())
            elapsed = time.perf_counter() - start
            return elapsed, await size(conn) - before

    try:
        async with pool.acquire() as conn:  # each rule set from the same empty tables (rule_decision_hours: by trigger)
            await conn.execute("truncate rule_decisions, rule_runs cascade")
        await record()  # warm-up: the statements prepared, the first pages of the tables and indexes allocated
        timings, growth = [], []
        for _ in range(repeat):
            elapsed, grown = await record()
            timings.append(elapsed)
            growth.append(grown)
    finally:
        await pool.close()
    median, per_run = statistics.median(timings), int(statistics.median(growth))
    runs_per_day = 86_400 / RulesSettings().interval_seconds
    outcomes = Counter(d.outcome if d.reason is None else f"{d.outcome}:{d.reason}" for d in decisions)
    print(
        f"[{label}] record_run + record_decisions of {len(decisions):,} decisions in one transaction: median "
        f"{median:.3f} s, best {min(timings):.3f} s, worst {max(timings):.3f} s over {repeat} runs "
        f"({len(decisions) / median:,.0f} rows/s); rule_decisions grows {per_run / 2**20:.1f} MiB a run "
        f"({per_run / len(decisions):,.0f} bytes a decision, indexes included)"
    )
    print(f"[{label}] decisions: {dict(outcomes.most_common())}")
    print(
        f"[{label}] at the default run interval ({RulesSettings().interval_seconds:.0f} s: {runs_per_day:.0f} "
        f"scheduled runs a day): {len(decisions) * runs_per_day:,.0f} rows, "
        f"{per_run * runs_per_day / 2**30:.2f} GiB and {median * runs_per_day:.0f} s of writing a day"
    )
    return median, per_run


async def main_async(args: argparse.Namespace) -> None:
    daily = shipped_snapshot(args.adsets, args.days, args.ads)
    assert all(window in REACH_WINDOWS for _, window in daily.window_reach)
    if not args.no_seed:
        await seed(daily)
    shipped, without_ad = shipped_rules()
    accounts = _accounts(daily)
    loads, writes = {}, {}
    for label, rules in (("shipped defaults", shipped), ("shipped defaults without ad-level rules", without_ad)):
        loads[label], decisions, entities = await measure(
            label, rules, accounts, args.repeat, segment_snapshot(daily, rules, NOW)
        )
        writes[label] = await measure_record(label, rules, accounts, decisions, entities, args.repeat)
    with_ad, without = loads.values()
    print(
        f"[shipped defaults] the ad-level rules make the snapshot load {with_ad - without:+.3f} s "
        f"({with_ad / without:.1f}x)"
    )
    (write_with, size_with), (write_without, size_without) = writes.values()
    print(
        f"[shipped defaults] the ad-level rules make recording a run's decisions {write_with - write_without:+.3f} s "
        f"({write_with / write_without:.1f}x) and rule_decisions grow {(size_with - size_without) / 2**20:+.1f} MiB "
        "a run"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--adsets", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--ads", type=int, default=3, help="ads per ad set")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-seed", action="store_true", help="measure the database an earlier run seeded")
    asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
