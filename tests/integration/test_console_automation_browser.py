"""The Automation page in a real headless browser: a fresh install's rules in shadow mode over the sandbox's ads
(insights_poller -> rules_engine) beside a notify-only rule shown as on with nothing to enable, an operator who
enables one rule there, and the rules engine acting on it through the campaign executor against the Graph sandbox.
On a throwaway vhost and the console's own database.

The browser and the services: tests/fixtures/browser.py (needs Debian's chromium).
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
from shared.settings import MetaSettings, Settings
from tests.fixtures.browser import Browser, chain_settings, needs_chromium, running
from tests.fixtures.console import OPERATOR, console_settings
from tests.fixtures.guide_rules import GUIDE_FILES, write_guide_rules_dir
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle

pytestmark = [needs_chromium, pytest.mark.timeout(180)]
RULE = "kill-underperformers"
REMINDER = "refresh-reminder"  # notify-only: on without consent


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
    base = chain_settings(
        console_settings(settings, console_dsn, port=0),  # port 0: other suites may hold 8087
        console_dsn, vhost_url,
        MetaSettings(access_token=sandbox.token, app_secret=sandbox.app_secret, graph_url=sandbox.url,
                     api_version=sandbox.version, ad_account_id=[sandbox.account_id], health_check_seconds=0,
                     request_timeout_seconds=10),
        # the guide's CPL rules (they ship disabled): kill-underperformers is what this test watches; and the
        # shipped notify-only reminder, which the page shows as on with nothing to enable
        RulesSettings(dir=write_guide_rules_dir(files=(*GUIDE_FILES, "35_refresh_reminder.yaml")),
                      interval_seconds=0, notify_channels=["log"]),
        NotifySettings(smtp_host=""),
        InsightsSettings(interval_seconds=3600, full_days=8, poll_seconds=0.01),
    )
    async with running(base, create_console, create_rules_engine, create_executor, create_insights_poller) as started:
        yield Automation(f"http://127.0.0.1:{started[0].ops_port}", console_db, sandbox)


async def meta_status(sandbox: SandboxHandle, object_id: str) -> str:
    status, _, body = await sandbox.graph("GET", object_id, fields="status")
    assert status == 200, body
    return str(body["status"])


async def test_operator_enables_a_rule_from_shadow_mode_and_the_rules_engine_acts(
    automation: Automation, browser: Browser
) -> None:
    db = automation.db
    # The poller's first refresh is evaluated in shadow mode: kill-underperformers would pause the loser.
    shadow = await eventually(lambda: db.fetchrow(
        "select * from console_rule_decisions where rule = $1 and status = 'shadow' order by id limit 1", RULE),
        timeout=90, what="a shadow decision of kill-underperformers")
    loser = shadow["entity_id"]
    assert await meta_status(automation.sandbox, loser) == "ACTIVE"
    assert await db.fetchval("select count(*) from campaign_commands") == 0, "nothing sent before consent"
    await session(browser, automation, loser, shadow)
    assert browser.problems == []


async def session(browser: Browser, automation: Automation, loser: str, shadow: Any) -> None:
    page, expect, url = browser.page, browser.expect, automation.console_url
    await page.goto(f"{url}/automation")
    await browser.sign_in()
    await expect(page).to_have_url(f"{url}/automation")

    rule_row = page.locator(f'[data-testid="rules"] tr[data-rule="{RULE}"]')
    await expect(rule_row.get_by_test_id("rule-state")).to_have_text("Shadow mode")
    reminder_row = page.locator(f'[data-testid="rules"] tr[data-rule="{REMINDER}"]')
    await expect(reminder_row.get_by_test_id("rule-state")).to_have_text("On — notifies only (needs no consent)")
    await expect(reminder_row.get_by_role("button")).to_have_count(0)
    await expect(rule_row.get_by_role("button", name=f"Enable {RULE}")).to_have_count(1)
    row = page.locator(f'tr[data-decision="{shadow["id"]}"]')
    await expect(row.get_by_test_id("decision-status")).to_contain_text("Would act (shadow mode)")
    await expect(row).to_contain_text(f"Would pause ad set '{shadow['entity_name']}' because CPL over the last")
    await page.get_by_label("Outcome").select_option("shadow")  # htmx swaps the rows
    await expect(page).to_have_url(f"{url}/automation?rule=&object=&status=shadow")
    await expect(page.locator('#decision-rows tr[data-status]:not([data-status="shadow"])')).to_have_count(0)
    await browser.screenshot("automation-shadow.png")

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
    await browser.screenshot("automation-acted.png")
