"""Two ad accounts from one configuration (LEADWIRE_ACCOUNTS_FILE) against the Graph sandbox, which holds both (the
USD account and the JPY account, each with a pixel of its own): each account's rules judge that account only, each
lead's conversion goes to its own account's pixel only, and the doctor checks every account."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from services.rules_engine.app import create_app
from services.rules_engine.settings import NotifySettings, RulesSettings
from services.rules_engine.store import load_state
from shared.accounts import AccountsFile, parse_accounts
from shared.doctor import run_checks
from shared.graph import GraphClient
from shared.meta.customer_data import normalize_email, sha256_hex
from shared.settings import BudgetGuardrailSettings, MetaSettings, Settings
from tests.fixtures.infra import eventually, unique
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_campaign_executor import command, result_of, results, send, start_executor  # noqa: F401
from tests.integration.test_capi_sender import Harness, _count_sent, _lead_id, capi, conversion  # noqa: F401
from tests.integration.test_rules_engine import JPY, MAIN, clean, run_of, trigger  # noqa: F401

pytestmark = pytest.mark.timeout(90)

TOKYO_PAGE = "700100200388"  # the JPY account's Page (its leads are stored directly: the sandbox seeds one Page)

RULE = """
name: {name}
currency: {currency}
scope: {{level: {level}}}
conditions: {{all: [{{metric: impressions, window: last_7_days, op: ">", value: 0}}]}}
actions: [pause]
"""


def accounts(sandbox: SandboxHandle, tokyo_rules: Path | None = None) -> AccountsFile:
    tokyo: dict[str, Any] = {"id": JPY, "name": "Tokyo", "page_ids": [TOKYO_PAGE],
                             "pixel_id": sandbox.state["jpy_pixel_id"]}
    if tokyo_rules is not None:
        tokyo["rules_dir"] = str(tokyo_rules)
    return parse_accounts({"accounts": [
        {"id": MAIN, "name": "New York", "page_ids": [sandbox.state["page_id"]], "pixel_id": sandbox.state["pixel_id"]},
        tokyo,
    ]})


def sandbox_meta(sandbox: SandboxHandle, file: AccountsFile, **extra: Any) -> MetaSettings:
    return MetaSettings(_env_file=None, access_token=SecretStr(sandbox.token),
                        app_secret=SecretStr(sandbox.app_secret), graph_url=sandbox.url, request_timeout_seconds=10,
                        accounts_file=file, **extra)


def rules_dir(tmp_path: Path, name: str, currency: str, level: str) -> Path:
    directory = tmp_path / unique("rules")
    directory.mkdir()
    (directory / "watch.yaml").write_text(RULE.format(name=name, currency=currency, level=level), encoding="utf-8")
    return directory


async def refresh(db: asyncpg.Pool, meta: MetaSettings) -> None:
    """The insights poller's refresh of both sandbox accounts (objects and 7 days of insights)."""
    windows = {"app": 3600.0, "ad_account": 3600.0, "buc": 3600.0, "insights": 3600.0}
    async with aiohttp.ClientSession() as http:
        graph = GraphClient(http, meta, registry=CollectorRegistry(), usage_windows=windows)
        poller = Worker(db, graph, InsightsSettings(poll_seconds=0.01), meta.ad_account_id)
        for account, zone in ((MAIN, "America/New_York"), (JPY, "Asia/Tokyo")):
            today = datetime.now(ZoneInfo(zone)).date()
            await poller.refresh_account(account, since=today - timedelta(days=7), until=today)


@pytest.fixture
async def rules_engine(settings: Settings) -> AsyncIterator[Any]:
    running = []

    async def start(meta: MetaSettings, default_dir: Path) -> None:
        # With a rate, a USD rule could judge the JPY account and the reverse: only the scoping keeps them apart.
        rules = RulesSettings(_env_file=None, dir=default_dir, interval_seconds=0, currency_rates=["USD/JPY=150"])
        service = create_app(settings.replace(rules, NotifySettings(smtp_host=""), meta))
        await service.start()
        running.append(service)

    yield start
    for service in running:
        await service.stop()


async def test_each_accounts_rules_judge_that_account_only(
    sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker, clean: None, rules_engine: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    usd_rule, tokyo_rule = unique("usd-watch-"), unique("tokyo-watch-")
    meta = sandbox_meta(sandbox, accounts(sandbox, rules_dir(tmp_path, tokyo_rule, "JPY", "campaign")))
    assert meta.ad_account_id == [MAIN, JPY], "the file's accounts are the ones every service covers"
    await refresh(db, meta)
    # Different levels: neither rule's pause of an object could hide the other rule's decision on it.
    await rules_engine(meta, rules_dir(tmp_path, usd_rule, "USD", "adset"))

    decided: dict[str, set[tuple[str, str]]] = {}
    for account in (MAIN, JPY):
        run = await run_of(db, await trigger(broker, account))
        rows = await db.fetch("select rule, account_id, outcome from rule_decisions where run_id = $1", run["run_id"])
        decided[account] = {(r["rule"], r["account_id"]) for r in rows}
        assert {r["outcome"] for r in rows} <= {"would_act", "skipped"}, "shadow mode: nothing acts without consent"

    assert (usd_rule, MAIN) in decided[MAIN], "RULES_DIR's rule judged the account without rules of its own"
    assert (tokyo_rule, JPY) in decided[JPY], "the Tokyo account's own rule judged it"
    assert {rule for rule, _ in decided[MAIN]} == {usd_rule}, "the Tokyo rule never judges the New York account"
    assert {rule for rule, _ in decided[JPY]} == {tokyo_rule}, "RULES_DIR's rule never judges the Tokyo account"

    # The ceilings the engine holds raises to: the account's own (major units of its currency) over
    # BUDGET_DAILY_CEILING, as the executor does.
    async with db.acquire() as conn:
        state = await load_state(conn, [MAIN, JPY], datetime.now(UTC), ceiling_major=1, first_seen_multiple=2,
                                 account_ceilings={JPY: 80_000})
    assert dict(state.account_daily_budget_ceiling) == {MAIN: 100, JPY: 80_000}


async def store_lead(db: asyncpg.Pool, page_id: str, email: str) -> str:
    lead_id = _lead_id()
    await db.execute(  # the e-mail match key as lead_fetcher stores it (a CRM outcome with only an e-mail finds it)
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source, email_key) "
        "values ($1, $2, $3, $4, '{}', 'webhook', $5)", lead_id, page_id,
        datetime.fromtimestamp(time.time() - 3600, UTC), {"email": email, "full_name": "Pat Example"},
        sha256_hex(normalize_email(email)))
    return lead_id


async def test_each_leads_conversion_goes_to_its_own_accounts_pixel_only(
    capi: Harness, db: asyncpg.Pool, sandbox: SandboxHandle,  # noqa: F811
) -> None:
    main_pixel, tokyo_pixel = sandbox.state["pixel_id"], sandbox.state["jpy_pixel_id"]
    # META_PIXEL_ID is the New York pixel, as an existing single-account setup has it.
    capi.settings = capi.settings.replace(sandbox_meta(sandbox, accounts(sandbox), pixel_id=main_pixel))
    new_york = await store_lead(db, sandbox.state["page_id"], unique("ny.") + "@example.com")
    tokyo_email = unique("tokyo.") + "@example.com"
    tokyo = await store_lead(db, TOKYO_PAGE, tokyo_email)
    by_lead_id = [conversion(user={"lead_id": new_york}), conversion(user={"lead_id": tokyo})]
    by_email = conversion(user={"email": tokyo_email})  # a CRM outcome matched to the Tokyo lead by e-mail
    messages = [*by_lead_id, by_email]
    await capi.publish(*messages)
    await capi.start()
    await eventually(lambda: _count_sent(db, [m.payload.event_id or "" for m in messages], 3), what="all sent")

    async def event_ids(pixel: str) -> set[str]:
        return {item["event"]["event_id"] for item in (await sandbox.capi_events(pixel))["events"]}

    ours = {m.payload.event_id for m in messages}
    assert await event_ids(main_pixel) & ours == {by_lead_id[0].payload.event_id}
    assert await event_ids(tokyo_pixel) & ours == {by_lead_id[1].payload.event_id, by_email.payload.event_id}
    stored = dict(await db.fetch("select event_id, pixel_id from capi_events where event_id = any($1::text[])",
                                 list(ours)))
    assert stored == {by_lead_id[0].payload.event_id: main_pixel, by_lead_id[1].payload.event_id: tokyo_pixel,
                      by_email.payload.event_id: tokyo_pixel}


async def test_the_doctor_checks_every_account(sandbox: SandboxHandle, tmp_path: Path) -> None:
    file = accounts(sandbox)
    lacking = parse_accounts({"accounts": [*(a.model_dump() for a in file.accounts[:1]),
                                           {"id": JPY, "page_ids": [], "pixel_id": "999000999"}]})
    async with aiohttp.ClientSession() as http:
        meta = sandbox_meta(sandbox, file)
        findings = {(f.check, f.subject): f for f in await run_checks(GraphClient(http, meta, max_wait=5), meta)}
        assert findings[("ad account", MAIN)].ok
        assert findings[("ad account", JPY)].ok
        assert findings[("pixel", sandbox.state["pixel_id"])].ok
        assert findings[("pixel", sandbox.state["jpy_pixel_id"])].ok, "the second account's own pixel is checked"
        assert findings[("account settings", JPY)].ok

        meta = sandbox_meta(sandbox, lacking)
        findings = {(f.check, f.subject): f for f in await run_checks(GraphClient(http, meta, max_wait=5), meta)}
        assert not findings[("pixel", "999000999")].ok
        assert not findings[("account settings", JPY)].ok
        assert "no Pages" in findings[("account settings", JPY)].summary


async def test_each_accounts_own_budget_ceiling_holds_for_that_account_only(
    start_executor, sandbox: SandboxHandle, broker: RabbitBroker, results: Any,  # noqa: F811
) -> None:
    await sandbox.set_clock("00:30", frozen=True)  # little spent today: the spend floor stays out of the way
    ny_file = accounts(sandbox).model_dump()
    ny_file["accounts"][0]["daily_budget_ceiling"] = 1.0  # $1: below New York's active budgets
    ny_file["accounts"][1]["daily_budget_ceiling"] = 10_000_000  # yen: far above Tokyo's
    # BUDGET_DAILY_CEILING of 1 (a dollar? a yen?) would hold both: each account's own ceiling replaces it.
    await start_executor(BudgetGuardrailSettings(_env_file=None, daily_ceiling=1),
                         accounts=parse_accounts({"accounts": ny_file["accounts"]}))
    new_york = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    tokyo = sandbox.state["adsets_by_name"]["Tokyo - Broad"]

    held = await result_of(results, await send(broker, command(
        "change_budget", object_id=new_york, level="adset", percent=10, force=True)))
    assert (held.status, held.guardrail) == ("refused", "daily_ceiling"), held.detail
    assert "ceiling of $1.00 (the account's daily_budget_ceiling, LEADWIRE_ACCOUNTS_FILE)" in held.detail
    raised = await result_of(results, await send(broker, command(
        "change_budget", object_id=tokyo, level="adset", percent=10)))
    assert raised.status == "ok", raised.detail
    assert (raised.account_id, raised.currency) == (JPY, "JPY")
