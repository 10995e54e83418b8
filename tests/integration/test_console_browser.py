"""The console in a real headless browser, over leads that went the whole way: Meta's webhook (the sandbox) →
ingress → lead_fetcher → crm_sync → a CRM, whose outcomes come back through the ingress to the rules_engine and the
capi_sender (→ the sandbox's Conversions API), and over the sandbox's ads numbers read by the insights_poller; on a
throwaway RabbitMQ vhost and the console's own database.

Needs Debian's chromium (`apt-get install -y chromium`), driven by playwright; never `playwright install`.
Screenshots of each page go to tests/artifacts/console/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest

from services.capi_sender.app import create_app as create_capi_sender
from services.console import logic
from services.console.app import create_app as create_console
from services.crm_sync.app import create_app as create_crm_sync
from services.crm_sync.settings import CrmSyncSettings
from services.ingress.app import create_app as create_ingress
from services.ingress.settings import IngressSettings
from services.insights_poller.app import create_app as create_insights_poller
from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from services.lead_fetcher.app import create_app as create_lead_fetcher
from services.lead_fetcher.settings import LeadFetcherSettings
from services.rules_engine.app import create_app as create_rules_engine
from services.rules_engine.settings import RulesSettings
from shared.graph import GraphClient
from shared.money import to_minor
from shared.service import Service
from shared.settings import MetaSettings, Settings
from tests.fixtures.browser import ARTIFACTS, Browser, chain_settings, needs_chromium, running
from tests.fixtures.console import OPERATOR, console_settings
from tests.fixtures.crm import FakeCrm, crm_sink  # noqa: F401
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_lead_fetcher_helpers import SANDBOX_WINDOWS

CRM_EVENTS_SECRET = "console-test-crm-events"

pytestmark = needs_chromium


@dataclass
class Chain:
    console_url: str
    ingress_url: str
    db: asyncpg.Pool
    sandbox: SandboxHandle
    crm: FakeCrm
    poller: Service


@pytest.fixture
async def chain(settings: Settings, vhost_url: str, console_dsn: str, console_db: asyncpg.Pool,
                sandbox: SandboxHandle, crm_sink: FakeCrm) -> AsyncIterator[Chain]:  # noqa: F811
    """Every service the console reads from, and the console, as `leadwire run` starts them, on one database."""
    state = sandbox.state
    # Meta's "today" grows through the day: the clock stands still, so the poller and the test read the same day.
    await sandbox.freeze_clock()
    base = chain_settings(
        console_settings(settings, console_dsn, target_cpl=Decimal(60), target_cost_per_signed=Decimal(500),
                         meta_check_seconds=60),
        console_dsn, vhost_url,
        MetaSettings(access_token=sandbox.token, page_access_token=sandbox.page_token, app_secret=sandbox.app_secret,
                     graph_url=sandbox.url, api_version=sandbox.version, page_ids=[state["page_id"]],
                     ad_account_id=[sandbox.account_id], pixel_id=state["pixel_id"], webhook_verify_token="verify",
                     health_check_seconds=0),
        IngressSettings(ingress_host="127.0.0.1", crm_events_secret=CRM_EVENTS_SECRET),
        RulesSettings(dry_run=True, interval_seconds=0),
        LeadFetcherSettings(backfill_interval_seconds=0, fetch_batch_window_ms=20, access_retry_seconds=1),
        CrmSyncSettings(crm_webhook_url=crm_sink.webhook_url, crm_webhook_secret="crm-secret", crm_timeout_seconds=2),
        InsightsSettings(interval_seconds=3600, full_days=30, poll_seconds=0.01),
    )

    def sandbox_windows(service: Service) -> None:
        if service.name == "lead_fetcher":  # the sandbox's rate-limit windows are seconds, not Meta's hours
            assert service.http is not None
            service.graph = GraphClient(service.http, base.meta, usage_windows=SANDBOX_WINDOWS)

    async with running(base, create_console, create_insights_poller, create_rules_engine, create_capi_sender,
                       create_crm_sync, create_lead_fetcher, create_ingress, after_start=sandbox_windows) as started:
        console, poller, ingress = started[0], started[1], started[-1]
        yield Chain(f"http://127.0.0.1:{console.ops_port}", f"http://127.0.0.1:{ingress.ops_port}", console_db,
                    sandbox, crm_sink, poller)


async def delivered(db: asyncpg.Pool, ids: list[str]) -> bool:
    count = await db.fetchval(
        "select count(*) from crm_deliveries where leadgen_id = any($1::text[]) and status = 'delivered'", ids
    )
    return count == len(ids)


async def refreshed(db: asyncpg.Pool) -> bool:
    return bool(await db.fetchval("select count(*) from ad_accounts where last_full_refresh_at is not null"))


async def sandbox_costs(sandbox: SandboxHandle) -> dict[str, str]:
    """Spend today and cost per lead over 7 and 30 days (today included), from the sandbox's account insights."""
    account = sandbox.account_id
    today = datetime.now(ZoneInfo(sandbox.state["accounts"][account]["timezone_name"])).date()
    costs: dict[str, Any] = {}
    for key, days in (("today", 1), ("7d", 7), ("30d", 30)):
        since = today - timedelta(days=days - 1)
        status, _, body = await sandbox.graph(
            "GET", f"{account}/insights", level="account", fields="spend,actions,account_currency",
            time_range=json.dumps({"since": since.isoformat(), "until": today.isoformat()}),
        )
        assert status == 200, body
        [row] = body["data"]
        currency = row["account_currency"]
        spend = to_minor(row["spend"], currency)
        leads = sum(int(a["value"]) for a in row.get("actions", []) if a["action_type"] == "lead")
        costs[key] = logic.money(spend if key == "today" else logic.cost_per(spend, leads), currency)
        costs[f"spend_{key}"] = logic.money(spend, currency)
    for days in (7, 30):  # per campaign, as Performance shows them over 7 and 30 days
        since = today - timedelta(days=days - 1)
        status, _, body = await sandbox.graph(
            "GET", f"{account}/insights", level="campaign", fields="campaign_id,spend,actions,account_currency",
            time_range=json.dumps({"since": since.isoformat(), "until": today.isoformat()}), limit=500,
        )
        assert status == 200, body
        costs[f"campaign_cpl_{days}d"] = {
            row["campaign_id"]: logic.money(logic.cost_per(
                to_minor(row["spend"], row["account_currency"]),
                sum(int(a["value"]) for a in row.get("actions", []) if a["action_type"] == "lead"),
            ), row["account_currency"])
            for row in body["data"]
        }
    return costs


async def report_outcomes(chain: Chain, lead_id: str, events: list[str]) -> None:
    """The CRM posts a lead's outcomes to the ingress; wait until the rules engine recorded them and Meta's
    Conversions API (the sandbox) accepted them."""
    body = json.dumps([{"event_name": name, "event_time": int(time.time()), "user": {"lead_id": lead_id},
                        "crm_name": "leadwire-test"} for name in events]).encode()
    async with aiohttp.ClientSession() as http, http.post(
        f"{chain.ingress_url}/crm/events", data=body, headers={"Authorization": f"Bearer {CRM_EVENTS_SECRET}"}
    ) as resp:
        assert resp.status == 202, await resp.text()

    async def recorded() -> bool:
        outcomes = await chain.db.fetchval("select count(*) from console_crm_outcomes where leadgen_id = $1", lead_id)
        sent = await chain.db.fetchval(
            "select count(*) from console_capi_sends where leadgen_id = $1 and status = 'sent'", lead_id)
        return outcomes == len(events) and sent == len(events) + 1  # and the lead itself, as the stage "Lead"

    await eventually(recorded, timeout=30, what="outcomes recorded and sent to the Conversions API")


async def test_operator_sees_todays_leads_and_a_trail_in_the_browser(chain: Chain, browser: Browser) -> None:
    await chain.sandbox.webhooks(target_url=f"{chain.ingress_url}/webhooks/meta")
    lead_ids = await chain.sandbox.create_leads(count=3, deliver=True)
    await eventually(lambda: delivered(chain.db, lead_ids), timeout=30, what="3 leads delivered to the CRM")
    await eventually(lambda: refreshed(chain.db), timeout=60, what="the insights poller's first full refresh")
    # The new leads count in Meta's insights for today: the poller reads them again, as its next run would.
    await chain.poller.dependencies(Worker).refresh_all()
    costs = await sandbox_costs(chain.sandbox)
    await report_outcomes(chain, lead_ids[0], ["QualifiedLead", "SignedCase"])
    await run_operator_session(browser, chain, lead_ids, costs)
    assert browser.problems == []


async def run_operator_session(browser: Browser, chain: Chain, lead_ids: list[str], costs: dict[str, Any]) -> None:
    page, expect = browser.page, browser.expect
    await page.goto(f"{chain.console_url}/")
    await expect(page).to_have_url(f"{chain.console_url}/login?next=/")
    await page.screenshot(path=str(ARTIFACTS / "login.png"))
    await browser.sign_in()

    await expect(page.get_by_test_id("leads-today")).to_have_text("3")
    await expect(page.get_by_test_id("delivered-today")).to_have_text("3")
    await expect(page.get_by_test_id("failed-today")).to_have_text("0")
    await expect(page.get_by_test_id("parked")).to_have_text("0")
    await expect(page.get_by_test_id("spend-today")).to_have_text(costs["today"])
    await expect(page.get_by_test_id("cpl-7d")).to_have_text(costs["7d"])
    await expect(page.get_by_test_id("cpl-30d")).to_have_text(costs["30d"])
    await expect(page.get_by_test_id("cpql-7d")).to_have_text(costs["spend_7d"])  # one qualified lead
    await expect(page.get_by_test_id("cpsc-7d")).to_have_text(costs["spend_7d"])  # one signed case
    await browser.screenshot("today.png")

    await page.get_by_role("link", name="Performance", exact=True).click()
    await expect(page.locator("#chart canvas")).to_have_count(1)  # uPlot drew
    rows = page.locator('[data-testid="performance"] tbody tr')
    for days in (7, 30):  # Meta's numbers per campaign, read through the ad set summary (migration 0115)
        if days != 7:
            await page.goto(f"{chain.console_url}/performance?days={days}")
        expected = costs[f"campaign_cpl_{days}d"]
        await expect(rows).to_have_count(len(expected))
        for i in range(len(expected)):
            campaign = (await rows.nth(i).locator("a").first.get_attribute("href")).rsplit("=", 1)[1]
            await expect(rows.nth(i).get_by_test_id("cpl")).to_have_text(expected[campaign])
        if days == 7:
            await browser.screenshot("performance.png")

    await page.get_by_role("link", name="Leads", exact=True).click()
    rows = page.locator("#lead-rows tbody tr")
    await expect(rows).to_have_count(3)
    await page.get_by_label("Search").fill(lead_ids[1])  # htmx swaps the rows as the operator types
    await expect(rows).to_have_count(1)
    await expect(page).to_have_url(f"{chain.console_url}/leads?q={lead_ids[1]}&day=&status=")
    await page.get_by_label("Search").fill("")
    await expect(rows).to_have_count(3)
    await browser.screenshot("leads.png")

    await page.locator(f'a[href="/leads/{lead_ids[0]}"]').click()
    await expect(page.get_by_test_id("lead-status")).to_have_text("In the CRM")
    await expect(page.locator('#trail [data-step="delivery"][data-adapter="webhook"]')).to_contain_text("delivered")
    await expect(page.locator('#trail [data-step="captured"]')).to_contain_text("Handed to CRM delivery")
    await expect(page.locator('#trail [data-step="outcome"]')).to_have_count(2)
    await expect(page.locator('#trail [data-step="capi"]')).to_have_count(3)  # Lead, QualifiedLead, SignedCase
    await expect(page.locator('#trail [data-step="capi"]').first).to_contain_text("accepted by Meta")
    email = await chain.db.fetchval("select fields ->> 'email' from leads where leadgen_id = $1", lead_ids[0])
    assert email
    await expect(page.locator("#answers")).not_to_contain_text(email)
    await browser.screenshot("lead.png")

    await page.get_by_role("button", name="Show personal data").click()
    await expect(page.locator("#answers")).to_contain_text(email)
    await expect(page.locator("#answers")).to_contain_text(f"Shown to {OPERATOR}")
    await browser.screenshot("lead-revealed.png")
    audit = await chain.db.fetchval(
        "select count(*) from console_audit where action = 'reveal_lead' and subject = $1 and username = $2",
        lead_ids[0], OPERATOR,
    )
    assert audit == 1
