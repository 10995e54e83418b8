"""The insights poller against the Graph sandbox over HTTP, the real PostgreSQL and the real RabbitMQ.

The witness is always the sandbox itself: what it answers for the same window at campaign level must equal what
the poller stored at ad level, summed per campaign per day.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import SecretStr

from contracts.messages import RoutingKey
from services.graph_sandbox.keys import SANDBOX
from services.insights_poller import cli
from services.insights_poller.app import create_app
from services.insights_poller.logic import Window, major_to_minor, trailing_window
from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import ALERT_CODE, Worker
from shared.graph import GraphClient, PermissionDeniedError
from shared.settings import MetaSettings, Settings
from shared.topology import EXCHANGE
from tests.fixtures.infra import eventually, unique
from tests.fixtures.sandbox import SandboxHandle, SandboxServer

MAIN = "act_1000000001"
JPY = "act_1000000002"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def frozen_clock(sandbox: SandboxHandle) -> None:
    """The poller and the test read "today" at different moments, and Meta's today grows between them."""
    await sandbox.freeze_clock()


@pytest.fixture
async def clean(db: asyncpg.Pool, frozen_clock: None) -> None:
    """The sandbox's account ids are fixed: forget what earlier tests stored for them."""
    accounts = [MAIN, JPY]
    async with db.acquire() as conn, conn.transaction():
        for table in ("insights_daily", "ads", "adsets", "campaigns", "ad_accounts"):
            await conn.execute(f"delete from {table} where account_id = any($1::text[])", accounts)  # noqa: S608


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def meta_settings(sandbox: SandboxHandle, accounts: list[str]) -> MetaSettings:
    return MetaSettings(
        access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret), graph_url=sandbox.url,
        ad_account_id=accounts, request_timeout_seconds=10,
    )


def make_poller(
    db: asyncpg.Pool, http: aiohttp.ClientSession, sandbox: SandboxHandle, accounts: list[str],
    *, window: float = 3600.0, registry: CollectorRegistry | None = None, **overrides: Any,
) -> Worker:
    windows = {"app": window, "ad_account": window, "buc": window, "insights": window}
    graph = GraphClient(http, meta_settings(sandbox, accounts), registry=registry or CollectorRegistry(),
                        usage_windows=windows)
    overrides.setdefault("poll_seconds", 0.01)
    return Worker(db, graph, InsightsSettings(**overrides), accounts)


def today_in(sandbox: SandboxHandle, account: str) -> date:
    return datetime.now(ZoneInfo(sandbox.state["accounts"][account]["timezone_name"])).date()


async def sandbox_campaign_days(sandbox: SandboxHandle, account: str, window: Window) -> dict[tuple[str, str], Any]:
    """(campaign_id, day) -> (spend in minor units, leads) as the sandbox reports them at campaign level."""
    status, _, body = await sandbox.graph(
        "GET", f"{account}/insights", level="campaign", time_increment=1, limit=5000,
        time_range=json.dumps(window.time_range()), fields="campaign_id,spend,actions,account_currency",
    )
    assert status == 200, body
    assert "next" not in body.get("paging", {})
    out = {}
    for row in body["data"]:
        offset = 1 if row["account_currency"] == "JPY" else 100
        leads = sum(int(a["value"]) for a in row.get("actions", []) if a["action_type"] == "lead")
        out[(row["campaign_id"], row["date_start"])] = (major_to_minor(row["spend"], offset), leads)
    return out


async def stored_campaign_days(db: asyncpg.Pool, account: str, window: Window) -> dict[tuple[str, str], Any]:
    rows = await db.fetch(
        "select campaign_id, date, sum(spend_minor) as spend, sum(leads) as leads from insights_daily "
        "where account_id = $1 and date between $2 and $3 group by campaign_id, date",
        account, window.since, window.until,
    )
    return {(r["campaign_id"], r["date"].isoformat()): (int(r["spend"]), int(r["leads"])) for r in rows}


async def assert_matches_sandbox(db: asyncpg.Pool, sandbox: SandboxHandle, account: str, window: Window) -> None:
    expected = await sandbox_campaign_days(sandbox, account, window)
    assert expected, "the sandbox has delivery in this window"
    assert await stored_campaign_days(db, account, window) == expected


async def outbox_since(db: asyncpg.Pool, first_id: int, message_type: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        "select body from outbox where id > $1 and message_type = $2 order by id", first_id, message_type
    )
    return [json.loads(r["body"]) if isinstance(r["body"], str) else r["body"] for r in rows]


async def outbox_mark(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("select coalesce(max(id), 0) from outbox"))


async def insights_posts(sandbox: SandboxHandle, account: str) -> int:
    return (await sandbox.calls())["by_path"].get(f"POST /{account}/insights", 0)


# ------------------------------------------------------------------------------------------------------------


async def test_refresh_stores_exactly_the_sandbox_numbers(db, http, sandbox, clean) -> None:
    mark = await outbox_mark(db)
    poller = make_poller(db, http, sandbox, [MAIN, JPY])

    outcomes = await poller.refresh_all()

    assert [o.error for o in outcomes] == [None, None]
    for outcome in outcomes:
        # First refresh of an account is the full restatement window (28 days, today included).
        assert outcome.window == trailing_window(today_in(sandbox, outcome.account_id), 28)
        assert outcome.full
        await assert_matches_sandbox(db, sandbox, outcome.account_id, outcome.window)
    # Yen are stored as yen (offset 1), dollars as cents (offset 100).
    currencies = dict(await db.fetch("select account_id, currency_offset from ad_accounts "
                                     "where account_id = any($1::text[])", [MAIN, JPY]))
    assert currencies == {MAIN: 100, JPY: 1}
    # The object graph came along: every ad, with minor-unit budgets as Meta returns them.
    ads = await db.fetchval("select count(*) from ads where account_id = $1 and listed", MAIN)
    assert ads == len(sandbox.state["accounts"][MAIN]["ads"])
    budgets = await db.fetch("select daily_budget_minor from campaigns where account_id = $1 "
                             "and daily_budget_minor is not null", MAIN)
    assert [b["daily_budget_minor"] for b in budgets] == [15000]  # the CBO campaign's $150.00
    updates = await outbox_since(db, mark, "InsightsUpdated")
    assert sorted(u["payload"]["account_id"] for u in updates) == [MAIN, JPY]
    main_rows = await db.fetchval("select count(*) from insights_daily where account_id = $1", MAIN)
    assert next(u for u in updates if u["payload"]["account_id"] == MAIN)["payload"]["rows_changed"] == main_rows


async def test_second_refresh_after_restatement_replaces_numbers(db, http, sandbox, clean) -> None:
    poller = make_poller(db, http, sandbox, [MAIN])
    first = await poller.refresh_account(MAIN)
    assert first.full
    rows_before = await db.fetchval("select count(*) from insights_daily where account_id = $1", MAIN)
    spend_before = await db.fetchval("select sum(spend_minor)::bigint from insights_daily where account_id = $1", MAIN)
    # A row Meta does not return (no delivery) inside the next window must not survive the refresh.
    today = today_in(sandbox, MAIN)
    campaign, adset = sandbox.state["accounts"][MAIN]["campaigns"][0], sandbox.state["accounts"][MAIN]["adsets"][0]
    await db.execute(
        "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, currency, spend_minor) "
        "values ('999', $1, $2, $3, $4, 'USD', 12345)", today, MAIN, campaign, adset,
    )

    await sandbox.restate(factor=1.5, days=3)
    second = await poller.refresh_account(MAIN)

    assert second.window == trailing_window(today, 3)  # the full window was read less than a day ago
    assert not second.full
    await assert_matches_sandbox(db, sandbox, MAIN, first.window)  # restated days replaced, older ones intact
    assert await db.fetchval("select count(*) from insights_daily where account_id = $1", MAIN) == rows_before
    assert await db.fetchval("select count(*) from insights_daily where ad_id = '999'") == 0
    spend_after = await db.fetchval("select sum(spend_minor)::bigint from insights_daily where account_id = $1", MAIN)
    assert spend_before < spend_after < spend_before * 1.5  # +50 % on 3 of 28 days, not a second copy
    assert second.rows_changed == second.rows + 1  # every row of the 3 days changed, plus the one deleted
    third = await poller.refresh_account(MAIN)
    assert third.rows_changed == 0  # idempotent: the same numbers again change nothing


async def test_failing_async_job_is_split_and_completes(db, http, sandbox, clean) -> None:
    # Jobs covering more than one campaign fail with "too much data" (100/1487534); sync reads are off.
    await sandbox.insights(max_campaigns_per_job=1, polls_to_complete=2)
    poller = make_poller(db, http, sandbox, [MAIN], sync_max_rows=0)

    outcome = await poller.refresh_account(MAIN)

    assert outcome.mode == "async"
    await assert_matches_sandbox(db, sandbox, MAIN, outcome.window)
    campaigns_with_delivery = {c for c, _ in await sandbox_campaign_days(sandbox, MAIN, outcome.window)}
    # One failed whole-account run, then halves until each run covers one campaign.
    assert await insights_posts(sandbox, MAIN) >= 1 + len(campaigns_with_delivery)


async def test_skipped_job_is_resubmitted(db, http, sandbox, clean) -> None:
    await sandbox.insights(job_skip=True, polls_to_complete=2)
    poller = make_poller(db, http, sandbox, [MAIN], sync_max_rows=0, poll_seconds=0.2)
    task = asyncio.create_task(poller.refresh_account(MAIN))
    try:
        await eventually(lambda: _at_least(insights_posts(sandbox, MAIN), 2), what="a skipped run resubmitted")
        await sandbox.insights(job_skip=False)
        outcome = await asyncio.wait_for(task, timeout=20)
    finally:
        task.cancel()
    await assert_matches_sandbox(db, sandbox, MAIN, outcome.window)


async def _at_least(value: Any, n: int) -> bool:
    return await value >= n


async def test_throttling_mid_refresh_pauses_and_resumes(db, http, sandbox, clean) -> None:
    # A tiny ads_insights budget, and another tool bursting into it while our paged read is under way.
    # Insights calls take 80 ms each, so the 12-page read is surely under way when the burst comes.
    await sandbox.limits(buc={"ads_insights": {"budget": 12, "window_seconds": 1.5}})
    await sandbox.faults(latency_ms=80, path_regex=r"/insights$")
    registry = CollectorRegistry()
    poller = make_poller(db, http, sandbox, [MAIN], window=1.5, page_size=50, registry=registry)
    task = asyncio.create_task(poller.refresh_account(MAIN))
    try:
        await eventually(lambda: _at_least(_insights_gets(sandbox), 3), what="the insights read under way")
        burst = await asyncio.gather(*(
            sandbox.graph("GET", f"{MAIN}/insights", level="account", date_preset="yesterday") for _ in range(25)
        ))
        assert any(status == 400 for status, _, _ in burst), "the burst used up the budget"
        outcome = await asyncio.wait_for(task, timeout=30)
    finally:
        task.cancel()

    assert (registry.get_sample_value("graph_throttled_total", {"scope": "buc:1000000001:ads_insights"}) or 0) >= 1
    await assert_matches_sandbox(db, sandbox, MAIN, outcome.window)
    stored = await db.fetchval("select count(*) from insights_daily where account_id = $1", MAIN)
    distinct = await db.fetchval("select count(distinct (ad_id, date)) from insights_daily where account_id = $1",
                                 MAIN)
    assert stored == distinct == outcome.rows


async def _insights_gets(sandbox: SandboxHandle) -> int:
    return sum(n for path, n in (await sandbox.calls())["by_path"].items() if path == f"GET /{MAIN}/insights")


async def test_account_without_ads_is_an_empty_refresh(db, http, sandbox, sandbox_server: SandboxServer,
                                                       clean) -> None:
    state = sandbox_server.app[SANDBOX].state
    for node_id in [n.id for n in state.nodes.values()
                    if n.account == JPY and n.kind in ("campaign", "adset", "ad", "adcreative")]:
        del state.nodes[node_id]
    mark = await outbox_mark(db)
    poller = make_poller(db, http, sandbox, [JPY])

    outcome = await poller.refresh_account(JPY)

    assert (outcome.ok, outcome.rows, outcome.rows_changed) == (True, 0, 0)
    assert await db.fetchval("select count(*) from insights_daily where account_id = $1", JPY) == 0
    assert await db.fetchval("select count(*) from ad_accounts where account_id = $1", JPY) == 1
    updates = await outbox_since(db, mark, "InsightsUpdated")
    assert [(u["payload"]["account_id"], u["payload"]["rows_changed"]) for u in updates] == [(JPY, 0)]


async def test_permission_error_for_one_account_does_not_stop_the_others(db, http, sandbox, clean) -> None:
    await sandbox.faults(error_rate=1.0, path_regex=JPY, error_status=403, error={
        "code": 200, "message": "(#200) Ad account owner has NOT grant ads_management or ads_read permission",
        "type": "OAuthException", "is_transient": False,
    })
    mark = await outbox_mark(db)
    poller = make_poller(db, http, sandbox, [JPY, MAIN])

    outcomes = {o.account_id: o for o in await poller.refresh_all()}

    assert isinstance(outcomes[JPY].error, PermissionDeniedError)
    assert outcomes[MAIN].ok
    await assert_matches_sandbox(db, sandbox, MAIN, outcomes[MAIN].window)
    alerts = await outbox_since(db, mark, "AlertRaised")
    assert [(a["payload"]["code"], a["payload"]["subject"], a["payload"]["severity"]) for a in alerts] == [
        (ALERT_CODE, JPY, "critical")
    ]
    updates = await outbox_since(db, mark, "InsightsUpdated")
    assert [u["payload"]["account_id"] for u in updates] == [MAIN]


async def test_service_publishes_insights_updated_once_per_refresh(
    db, http, sandbox, clean, settings: Settings, amqp: Any
) -> None:
    queue = await amqp.declare_queue(unique("test.insights."), exclusive=True, auto_delete=True)
    await queue.bind(EXCHANGE.name, routing_key=RoutingKey.INSIGHTS_UPDATED)
    mark = await outbox_mark(db)
    service = create_app(settings.replace(
        meta_settings(sandbox, [MAIN]), InsightsSettings(interval_seconds=3600, poll_seconds=0.01),
    ))
    received: list[dict[str, Any]] = []

    async def take(n: int) -> bool:
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            body = json.loads(message.body)
            if body["payload"]["account_id"] == MAIN and await _ours(db, mark, body["message_id"]):
                received.append(body)
        return len(received) >= n

    await service.start()
    try:
        await eventually(lambda: take(1), timeout=30, what="InsightsUpdated from the scheduled refresh")
        # An on-demand refresh of the same account is a second refresh, hence a second message.
        await make_poller(db, http, sandbox, [MAIN]).refresh_account(MAIN, since=today_in(sandbox, MAIN))
        await eventually(lambda: take(2), timeout=30, what="InsightsUpdated from the on-demand refresh")
        assert REGISTRY.get_sample_value("leadwire_insights_last_success_timestamp_seconds", {"account": MAIN})
    finally:
        await service.stop()
    assert len(received) == 2
    assert len({r["message_id"] for r in received}) == 2
    updates = await outbox_since(db, mark, "InsightsUpdated")
    assert len(updates) == 2  # two refreshes, two messages, nothing more
    assert received[1]["payload"]["date_since"] == received[1]["payload"]["date_until"]


async def _ours(db: asyncpg.Pool, mark: int, message_id: str) -> bool:
    return bool(await db.fetchval("select 1 from outbox where id > $1 and message_id = $2::uuid", mark, message_id))


async def test_cli_refresh_reads_the_asked_window(db, sandbox, clean, settings: Settings) -> None:
    since = today_in(sandbox, MAIN) - timedelta(days=9)
    await sandbox.faults(error_rate=1.0, path_regex=JPY, error_status=400, error={
        "code": 190, "error_subcode": 463, "message": "Error validating access token: Session has expired",
        "type": "OAuthException", "is_transient": False,
    })

    status = await cli.refresh(settings.replace(meta_settings(sandbox, [MAIN, JPY])), [MAIN, JPY], since, None)

    assert status == 1  # one account failed (expired token), the other was refreshed all the same
    window = Window(since, today_in(sandbox, MAIN))
    await assert_matches_sandbox(db, sandbox, MAIN, window)
    first = await db.fetchval("select min(date) from insights_daily where account_id = $1", MAIN)
    assert first == since
