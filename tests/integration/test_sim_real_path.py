"""The decision-quality simulator (tests/benchmarks/sim) against the real path, over three days on the sandbox.

Each morning (00:00 in the account's time zone) the same rules decide twice:
* the real path: the Graph sandbox delivers the day, the insights poller stores it in PostgreSQL, the rules engine's
  store loads the snapshot, `evaluate` decides, and the campaign executor's worker applies each command to the
  sandbox within its guardrails;
* the simulated path: the simulator's account (a mirror of the sandbox's ad sets) builds its in-memory snapshot
  from what was delivered (insights one day late, one row per ad set and day, as in the benchmark), decides with
  the same `evaluate`, and applies the commands with its model of the executor.
They must decide the same actions, the executor and its model must apply and refuse the same ones, and the
sandbox's delivery on the following days must be what the simulator assumes: the share of the profile an ad set
delivers is its budget over its starting budget, and nothing while paused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.campaign_executor.commands import CommandContext
from services.campaign_executor.meta_reads import MetaReads
from services.campaign_executor.worker import Worker
from services.graph_sandbox.delivery import delivered_share
from services.graph_sandbox.keys import SANDBOX
from services.insights_poller import worker as insights_worker
from services.insights_poller.settings import InsightsSettings
from services.rules_engine.logic import evaluate, record_actions, record_result
from services.rules_engine.messages import to_command
from services.rules_engine.model import EngineState, MetricRow
from services.rules_engine.store import load_snapshot
from shared.graph import GraphClient
from shared.settings import BudgetGuardrailSettings, MetaSettings
from tests.benchmarks.sim import policies as P
from tests.benchmarks.sim import world
from tests.benchmarks.sim.account import DAY0, Account, AdSet, Policy
from tests.benchmarks.sim.params import SimParams
from tests.fixtures.sandbox import SandboxHandle, SandboxServer

pytestmark = pytest.mark.timeout(120)

MAIN = "act_1000000001"
NY = ZoneInfo("America/New_York")
DAYS = 3


@pytest.fixture
async def fresh(db: asyncpg.Pool, sandbox: SandboxHandle) -> AsyncIterator[None]:
    """Forget what other tests stored for the sandbox's fixed account and objects (ids repeat after a reset)."""
    account = sandbox.state["accounts"][MAIN]
    objects = account["campaigns"] + account["adsets"] + account["ads"]

    async def clear() -> None:
        async with db.acquire() as conn, conn.transaction():
            for table in ("insights_window_reach", "insights_daily", "ads", "adsets", "campaigns", "ad_accounts"):
                await conn.execute(f"delete from {table} where account_id = $1", MAIN)  # noqa: S608
            await conn.execute("delete from campaign_commands where object_id = any($1::text[])", objects)
            await conn.execute("delete from first_seen_budgets where key = any($1::text[])", [*objects, MAIN])

    await clear()
    yield
    await clear()


def _sim_day(day: date) -> int:
    """The simulator's day number of a calendar day (its day 1 is DAY0 + 1)."""
    return (day - DAY0).days


def _actions(done: list) -> list[tuple[str, str, str, int | None]]:
    return sorted((a.rule, a.entity_id, a.kind, a.budget) for a, _ in done)


async def test_the_simulated_path_and_the_real_one_agree_over_three_days(
    db: asyncpg.Pool, sandbox: SandboxHandle, sandbox_server: SandboxServer, fresh: None,
) -> None:
    sb = sandbox_server.app[SANDBOX]
    start = datetime.now(NY).date()
    # The guide's four rules act on the seeded account (they pause its losers and scale its winner); a ceiling far
    # above the account keeps the test on the limits that both models share without the campaigns' budgets.
    rules = P.guide_cpl_rules()
    limits = BudgetGuardrailSettings(_env_file=None, daily_ceiling=1_000_000)
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, ad_account_id=[MAIN], request_timeout_seconds=10)
    windows = {"app": 3600.0, "ad_account": 3600.0, "buc": 3600.0, "insights": 3600.0}
    async with aiohttp.ClientSession() as http:
        graph = GraphClient(http, meta, registry=CollectorRegistry(), usage_windows=windows)
        poller = insights_worker.Worker(db, graph, InsightsSettings(poll_seconds=0.01), [MAIN])
        worker = Worker(db, CommandContext(graph, MetaReads(graph, max_wait=5), limits), consumer_name="test.sim")

        # The simulator's account mirrors the sandbox's ad sets as leadwire first reads them.
        await sandbox.set_clock(datetime.combine(start + timedelta(days=1), time(0), NY).isoformat(), frozen=True)
        await poller.refresh_account(MAIN, since=start - timedelta(days=6), until=start + timedelta(days=1))
        adsets = await db.fetch(
            "select adset_id, name, coalesce(effective_status, status, 'UNKNOWN') status, daily_budget_minor "
            "from adsets where account_id = $1 and listed order by adset_id", MAIN)
        params = SimParams(acting_days=_sim_day(start) + DAYS + 2)
        sim = Account(params, 0, Policy("guide", rules))
        sim.adsets = [
            AdSet(world.AdSetTruth(r["name"], 50.0, 0.3, 0.25, 40.0), r["adset_id"], r["daily_budget_minor"] or 0,
                  r["daily_budget_minor"] or 0, status=r["status"])
            for r in adsets
        ]
        sim.by_id = {a.entity_id: a for a in sim.adsets}
        sim.rows = [[None] * (params.acting_days + 2) for _ in sim.adsets]
        sim.limits, sim.ceiling = limits, 100_000_000
        sim.state = EngineState()
        starting = {a.entity_id: a.budget for a in sim.adsets}
        delivering = {a.entity_id for a in sim.adsets if a.status == "ACTIVE"}  # the seeded profile's own statuses
        index = {a.entity_id: i for i, a in enumerate(sim.adsets)}

        real_state = EngineState()
        history: dict[str, list[tuple[str, int]]] = {a.entity_id: [] for a in sim.adsets}  # (status, budget) a day
        acted = 0
        for k in range(1, DAYS + 1):
            day = start + timedelta(days=k)
            now = datetime.combine(day, time(0), NY)
            await sandbox.set_clock(now.isoformat(), frozen=True)
            await poller.refresh_account(MAIN, since=day - timedelta(days=7), until=day)

            # Real path: PostgreSQL -> the rules engine's snapshot -> evaluate -> the executor's worker -> the sandbox.
            async with db.acquire() as conn:
                snapshot = await load_snapshot(conn, rules, [MAIN], now, lookback_cap=35, qualified_events=[],
                                               signed_events=[])
                daily = await conn.fetch(
                    "select adset_id, date, sum(spend_minor)::bigint s, sum(impressions)::bigint i, "
                    "sum(reach)::bigint r, sum(clicks)::bigint c, sum(leads)::bigint l from insights_daily "
                    "where account_id = $1 and date < $2 group by 1, 2", MAIN, day)
            real_state = EngineState(actions=real_state.actions, consecutive_failures=real_state.consecutive_failures,
                                     data_as_of={MAIN: now})
            decisions = evaluate(rules, snapshot, real_state, now, sim.engine_settings)  # the same allowance
            real_state = record_actions(real_state, decisions)
            real_done = []
            for decision in decisions:
                for action in decision.actions if decision.outcome == "acted" else ():
                    message = to_command(action)
                    if message is None:
                        continue
                    result = await worker.execute(message)
                    assert result is not None
                    real_state = record_result(real_state, action.rule, ok=result.status == "ok")
                    real_done.append((action, result.status == "ok"))

            # Simulated path: the delivered days as the simulator stores them, its snapshot, evaluate, its executor.
            for row in daily:
                i = index.get(row["adset_id"])
                if i is not None and 0 < _sim_day(row["date"]) < len(sim.rows[i]):
                    sim.rows[i][_sim_day(row["date"])] = MetricRow(row["date"], None, row["adset_id"], None,
                                                                   row["s"], row["i"], row["r"], row["c"], row["l"])
            sim_done = sim._decide(_sim_day(day))
            assert _actions(sim_done) == _actions(real_done), f"day {k}"
            assert sorted(ok for _, ok in sim_done) == sorted(ok for _, ok in real_done), f"day {k}"
            acted += len(real_done)
            for a in sim.adsets:
                history[a.entity_id].append((a.status, a.budget))
        assert acted > 0, "the rules acted on the sandbox's account"

        # Delivery: what the sandbox delivered on each day after the decisions is what the simulator assumes.
        await sandbox.set_clock(datetime.combine(start + timedelta(days=DAYS + 1), time(0), NY).isoformat(),
                                frozen=True)
        ads = {a.fields.get("adset_id"): a for a in sb.state.of_kind("ad")}
        compared: list[float] = []
        for adset_id, days in history.items():
            ad = ads.get(adset_id)
            if ad is None or ad.extra.get("profile") is None or adset_id not in delivering:
                continue
            for k, (status, budget) in enumerate(days, start=1):
                expected = 0.0 if status != "ACTIVE" else (budget / starting[adset_id] if starting[adset_id] else 1.0)
                share = delivered_share(sb, ad, start + timedelta(days=k), NY)
                assert share == pytest.approx(expected), (adset_id, k, status, budget)
                compared.append(expected)
        assert len(compared) >= 3 * DAYS
        assert 0.0 in compared, "a pause was delivered as the simulator assumes"
        assert max(compared) > 1.0, "a raise was delivered as the simulator assumes"
