"""Insights poller vs. the operator guide's per-ad-set polling, on a 1,000-ad account in the Graph sandbox.

Run: `python -m tests.benchmarks.bench_insights` (needs PostgreSQL; uses the database `leadwire_bench`).

Figures: Graph calls as Meta counts them (the sandbox's call log: every batch item and every page is one call)
and wall time, for
* the poller's full refresh (28 days, ad level, daily) and its incremental refresh (last 3 days), each including the
  deduplicated reach per ad set and campaign over INSIGHTS_REACH_WINDOWS (one call per level and window and page),
  and an incremental refresh without those reads to show what they cost;
* the guide's loop (docs/operator-guide.md §7.3): list the ad sets, then one insights call per ad set, either per window
  (`date_preset=last_3d`; or the 28 days with `time_increment=1`) or per ad set per day.
The naive loop gets ad-set rows, not ad rows: it reads less data and still makes far more calls.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.graph_sandbox.app import create_app
from services.graph_sandbox.config import SandboxConfig
from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from shared.db.migrate import ensure_database, migrate
from shared.db.pool import create_pool
from shared.graph import GraphClient
from shared.settings import DatabaseSettings, MetaSettings

APP_SECRET = "sandbox-app-secret"
TOKEN = "bench-token"
ACCOUNT = "act_1000000001"
ADS = 1000
DAYS = 30
NAIVE_CONCURRENCY = 10


async def _control(http: aiohttp.ClientSession, url: str, method: str, path: str, body: Any = None) -> Any:
    async with http.request(method, f"{url}/_sandbox/{path}", json=body) as resp:
        return await resp.json()


async def _calls(http: aiohttp.ClientSession, url: str) -> int:
    return int((await _control(http, url, "GET", "calls"))["total"])


async def _poller_refresh(poller: Worker, http: aiohttp.ClientSession, url: str) -> tuple[int, float, Any]:
    await _control(http, url, "POST", "calls/reset")
    started = time.perf_counter()
    outcome = await poller.refresh_account(ACCOUNT)
    elapsed = time.perf_counter() - started
    return await _calls(http, url), elapsed, outcome


async def _naive(http: aiohttp.ClientSession, url: str, per_adset_params: list[dict[str, Any]]) -> tuple[int, float]:
    """The guide's loop: list active ad sets, then insights per ad set (one call per params entry)."""
    await _control(http, url, "POST", "calls/reset")
    headers = {"Authorization": f"OAuth {TOKEN}"}
    started = time.perf_counter()
    adsets: list[str] = []
    next_url: str | None = f"{url}/v26.0/{ACCOUNT}/adsets"
    params: dict[str, str] | None = {"fields": "id,name,status,daily_budget"}
    while next_url:
        async with http.get(next_url, params=params, headers=headers) as resp:
            page = await resp.json()
        adsets.extend(item["id"] for item in page["data"])
        next_url, params = page.get("paging", {}).get("next"), None
    gate = asyncio.Semaphore(NAIVE_CONCURRENCY)

    async def one(adset: str, extra: dict[str, Any]) -> None:
        async with gate, http.get(f"{url}/v26.0/{adset}/insights", headers=headers, params={
            "fields": "spend,impressions,actions,cost_per_action_type", **extra,
        }) as resp:
            body = await resp.json()
            assert resp.status == 200, body

    await asyncio.gather(*(one(adset, extra) for adset in adsets for extra in per_adset_params))
    return await _calls(http, url), time.perf_counter() - started


async def main_async() -> None:
    base = os.environ.get("DATABASE_URL", "postgresql://leadwire:leadwire@127.0.0.1:5432/leadwire")
    dsn = urlunsplit(urlsplit(base)._replace(path="/leadwire_bench"))
    await ensure_database(dsn)
    await migrate(dsn)
    pool = await create_pool(DatabaseSettings(database_url=dsn, db_pool_min=1, db_pool_max=4))
    app = create_app(SandboxConfig(app_secret=APP_SECRET))
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            state = await _control(http, url, "POST", "reset", {"seed": 1, "ads": ADS, "days": DAYS})
            account = state["accounts"][ACCOUNT]
            async with pool.acquire() as conn:
                for table in ("insights_daily", "ads", "adsets", "campaigns", "ad_accounts"):
                    await conn.execute(f"delete from {table} where account_id = $1", ACCOUNT)  # noqa: S608
            meta = MetaSettings(access_token=SecretStr(TOKEN), app_secret=SecretStr(APP_SECRET), graph_url=url,
                                ad_account_id=[ACCOUNT], request_timeout_seconds=30)
            graph = GraphClient(http, meta, registry=CollectorRegistry())
            settings = InsightsSettings(poll_seconds=0.2)
            poller = Worker(pool, graph, settings, [ACCOUNT])

            full_calls, full_s, full = await _poller_refresh(poller, http, url)
            inc_calls, inc_s, inc = await _poller_refresh(poller, http, url)
            no_reach = Worker(pool, graph, settings.model_copy(update={"reach_windows": []}), [ACCOUNT])
            bare_calls, bare_s, bare = await _poller_refresh(no_reach, http, url)

            today = datetime.now(ZoneInfo(account["timezone_name"])).date()
            days28 = [today - timedelta(days=i) for i in range(27, -1, -1)]
            days3 = days28[-3:]
            range28 = json.dumps({"since": days28[0].isoformat(), "until": today.isoformat()})

            def day(d: Any) -> dict[str, Any]:
                return {"time_range": json.dumps({"since": d.isoformat(), "until": d.isoformat()})}

            naive_window3 = await _naive(http, url, [{"date_preset": "last_3d"}])
            naive_window28 = await _naive(http, url, [{"time_range": range28, "time_increment": 1}])
            naive_daily3 = await _naive(http, url, [day(d) for d in days3])
            naive_daily28 = await _naive(http, url, [day(d) for d in days28])
    finally:
        await runner.cleanup()
        await pool.close()

    lines = [
        f"account: {len(account['ads'])} ads, {len(account['adsets'])} ad sets, "
        f"{len(account['campaigns'])} campaigns, {DAYS} days of delivery",
        "",
        f"{'':44}{'Graph calls':>12}{'wall s':>9}{'rows':>8}",
        f"{'poller full refresh (28 d, ' + full.mode + ')':44}{full_calls:>12}{full_s:>9.2f}{full.rows:>8}",
        f"{'poller incremental refresh (3 d, ' + inc.mode + ')':44}{inc_calls:>12}{inc_s:>9.2f}{inc.rows:>8}",
        f"{'  ... without window reach reads':44}{bare_calls:>12}{bare_s:>9.2f}{bare.rows:>8}",
        f"{'naive per ad set, last_3d window':44}{naive_window3[0]:>12}{naive_window3[1]:>9.2f}",
        f"{'naive per ad set, 28 d window (daily)':44}{naive_window28[0]:>12}{naive_window28[1]:>9.2f}",
        f"{'naive per ad set per day, 3 d':44}{naive_daily3[0]:>12}{naive_daily3[1]:>9.2f}",
        f"{'naive per ad set per day, 28 d':44}{naive_daily28[0]:>12}{naive_daily28[1]:>9.2f}",
        "",
        f"incremental: {naive_window3[0] / inc_calls:.0f}x fewer calls than per-ad-set-per-window, "
        f"{naive_daily3[0] / inc_calls:.0f}x fewer than per-ad-set-per-day",
        f"full:        {naive_window28[0] / full_calls:.0f}x fewer calls than per-ad-set-per-window, "
        f"{naive_daily28[0] / full_calls:.0f}x fewer than per-ad-set-per-day",
        f"poller calls counted by the poller itself: full {full.graph_calls}, incremental {inc.graph_calls}",
        f"window reach ({', '.join(settings.reach_windows)} x ad set, campaign): {inc_calls - bare_calls} calls, "
        f"{inc.reach_rows} rows stored",
    ]
    print("\n".join(lines))


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
