"""The Automation page in a real headless browser: a fresh install's rules in shadow mode over the sandbox's ads
(insights_poller -> rules_engine), an operator who enables one rule there, and the rules engine acting on it
through the campaign executor against the Graph sandbox. On a throwaway vhost and the console's own database.

Needs Debian's chromium (`apt-get install -y chromium`), driven by playwright; never `playwright install`.
Screenshots go to tests/artifacts/console/ (git-ignored).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from services.campaign_executor.app import create_app as create_executor
from services.console.app import create_app as create_console
from services.insights_poller.app import create_app as create_insights_poller
from services.insights_poller.settings import InsightsSettings
from services.rules_engine.app import create_app as create_rules_engine
from services.rules_engine.settings import NotifySettings, RulesSettings
from shared.service import Service
from shared.settings import BrokerSettings, DatabaseSettings, MetaSettings, Settings
from tests.fixtures.console import OPERATOR, PASSWORD, console_settings
from tests.fixtures.guide_rules import write_guide_rules_dir
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_console_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.integration.test_console_browser import pytestmark as needs_chromium

pytestmark = [needs_chromium, pytest.mark.timeout(180)]
RULE = "kill-underperformers"


@dataclass
class Automation:
    console_url: str
    db: asyncpg.Pool
    sandbox: SandboxHandle


@pytest.fixture
async def automation(settings: Settings, vhost_url: str, console_dsn: str, console_db: asyncpg.Pool,
                     sandbox: SandboxHandle) -> AsyncIterator[Automation]:
    """The console and the services behind its Automation page, as `leadwire run` starts them, on one database."""
    await console_db.execute("truncate rule_decision_reviews, rule_actions, rule_decisions, rule_runs, rule_consent, "
                             "rule_breakers, campaign_commands, first_seen_budgets cascade")
    await sandbox.freeze_clock()
    base = console_settings(settings, console_dsn, port=0).replace(  # port 0: other suites may hold 8087
        DatabaseSettings(database_url=console_dsn, db_pool_min=1, db_pool_max=4),
        BrokerSettings(amqp_url=vhost_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5),
        MetaSettings(access_token=sandbox.token, app_secret=sandbox.app_secret, graph_url=sandbox.url,
                     api_version=sandbox.version, ad_account_id=[sandbox.account_id], health_check_seconds=0,
                     request_timeout_seconds=10),
        # the guide's CPL rules (they ship disabled): kill-underperformers is what this test watches
        RulesSettings(dir=write_guide_rules_dir(), interval_seconds=0, notify_channels=["log"]),
        NotifySettings(smtp_host=""),
        InsightsSettings(interval_seconds=3600, full_days=8, poll_seconds=0.01),
    )
    started: list[Service] = []
    try:
        for factory in (create_console, create_rules_engine, create_executor, create_insights_poller):
            service = factory(base)
            await service.start()
            started.append(service)
        yield Automation(f"http://127.0.0.1:{started[0].ops_port}", console_db, sandbox)
    finally:
        for service in reversed(started):
            await service.stop()


async def meta_status(sandbox: SandboxHandle, object_id: str) -> str:
    status, _, body = await sandbox.graph("GET", object_id, fields="status")
    assert status == 200, body
    return str(body["status"])


async def test_operator_enables_a_rule_from_shadow_mode_and_the_rules_engine_acts(automation: Automation) -> None:
    from playwright.async_api import async_playwright, expect

    db = automation.db
    # The poller's first refresh is evaluated in shadow mode: kill-underperformers would pause the loser.
    shadow = await eventually(lambda: db.fetchrow(
        "select * from console_rule_decisions where rule = $1 and status = 'shadow' order by id limit 1", RULE),
        timeout=90, what="a shadow decision of kill-underperformers")
    loser = shadow["entity_id"]
    assert await meta_status(automation.sandbox, loser) == "ACTIVE"
    assert await db.fetchval("select count(*) from campaign_commands") == 0, "nothing sent before consent"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type in ("error", "warning") else None)
            await session(page, automation, loser, shadow, expect)
        finally:
            await browser.close()
    assert problems == []


async def session(page: Any, automation: Automation, loser: str, shadow: Any, expect: Any) -> None:
    url = automation.console_url
    await page.goto(f"{url}/automation")
    await page.get_by_label("User name").fill(OPERATOR)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{url}/automation")

    rule_row = page.locator(f'[data-testid="rules"] tr[data-rule="{RULE}"]')
    await expect(rule_row.get_by_test_id("rule-state")).to_have_text("Shadow mode")
    row = page.locator(f'tr[data-decision="{shadow["id"]}"]')
    await expect(row.get_by_test_id("decision-status")).to_contain_text("Would act (shadow mode)")
    await expect(row).to_contain_text(f"Would pause ad set '{shadow['entity_name']}' because CPL over the last")
    await page.get_by_label("Outcome").select_option("shadow")  # htmx swaps the rows
    await expect(page).to_have_url(f"{url}/automation?rule=&object=&status=shadow")
    await expect(page.locator('#decision-rows tr[data-status]:not([data-status="shadow"])')).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "automation-shadow.png"), full_page=True)

    await page.get_by_role("button", name=f"Enable {RULE}").click()
    await expect(page.get_by_test_id("notice")).to_contain_text("enables the rule and evaluates at once")

    # The rules engine evaluates at once; the executor pauses the loser at Meta (the sandbox).
    async def paused() -> bool:
        return await meta_status(automation.sandbox, loser) == "PAUSED"

    await eventually(paused, timeout=30, what="the loser paused at Meta")
    await eventually(lambda: automation.db.fetchval(
        "select count(*) > 0 from console_rule_decisions where rule = $1 and entity_id = $2 and status = 'acted'",
        RULE, loser), timeout=15, what="the result recorded")
    await page.goto(f"{url}/automation?rule={RULE}&object={loser}&status=acted")
    await expect(rule_row.get_by_test_id("rule-state")).to_contain_text(f"Enabled by {OPERATOR}")
    acted = page.locator('#decision-rows tr[data-status="acted"]')
    await expect(acted).to_have_count(1)
    await expect(acted.get_by_test_id("decision-status")).to_contain_text("Done")
    await expect(acted).to_contain_text(f"Paused ad set '{shadow['entity_name']}' because CPL over the last")
    await page.screenshot(path=str(ARTIFACTS / "automation-acted.png"), full_page=True)
