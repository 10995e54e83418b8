"""The daily report against the real PostgreSQL, RabbitMQ and the Graph sandbox's insights (read by the real
insights poller), sent to a local Slack webhook and a local SMTP server.

The witness for the money is the sandbox itself: its insights API answers the same day and week at campaign and
account level, and the report must say the same. Leads carry a known name, e-mail and phone number, which must
appear nowhere in what the report prints or sends. A rendered sample goes to tests/artifacts/report/ (git-ignored).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aio_pika
import aiohttp
import asyncpg
import pytest
from aiohttp import web
from pydantic import SecretStr

from services.insights_poller import worker as insights_worker
from services.insights_poller.settings import InsightsSettings
from services.reports import cli, render
from services.reports import worker as reports_worker
from services.reports.settings import ReportSettings
from shared.graph import GraphClient
from shared.messaging import declare_topology
from shared.money import to_minor
from shared.settings import (
    BrokerSettings,
    CrmOutcomeSettings,
    DatabaseSettings,
    MetaSettings,
    NotifySettings,
    Settings,
)
from shared.topology import consumer
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.smtp import SmtpReceiver
from tests.unit.test_daily_report import check_block_kit

pytestmark = pytest.mark.timeout(90)

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NAME = "Bartholomew Quackenbush"
EMAIL = "bart.quackenbush.report@example.org"
PHONE = "+15555550199"
PII = (NAME, "Quackenbush", EMAIL, "bart.quackenbush", PHONE, "5555550199")


# ------------------------------------------------------------------------------------------------ fakes


@dataclass
class SlackHook:
    url: str = ""
    status: int = 200
    payloads: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def slack_hook() -> AsyncIterator[SlackHook]:
    """A local stand-in for a Slack incoming webhook: records each JSON body, answers `status`."""
    hook = SlackHook()

    async def receive(request: web.Request) -> web.Response:
        hook.payloads.append(await request.json())
        return web.Response(status=hook.status, text="ok" if hook.status == 200 else "no_service")

    app = web.Application()
    app.router.add_post("/services/T0/B0/x", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    hook.url = f"http://{host}:{port}/services/T0/B0/x"
    yield hook
    await runner.cleanup()


# ------------------------------------------------------------------------------------------------ the account


@dataclass
class Account:
    db: asyncpg.Pool
    sandbox: SandboxHandle
    account_id: str
    zone: ZoneInfo
    day: date  # the report day: yesterday in the account's zone
    campaigns: list[str]


@pytest.fixture
async def account(console_db: asyncpg.Pool, sandbox: SandboxHandle) -> AsyncIterator[Account]:
    """The sandbox's main ad account read by the insights poller into the (emptied) console database."""
    db = console_db
    await db.execute("truncate report_deliveries, report_snapshots, rule_decisions, rule_actions, rule_runs, "
                     "rule_breakers cascade")
    await sandbox.freeze_clock()  # Meta's "today" grows while the test runs: hold it
    account_id = sandbox.account_id
    zone = ZoneInfo(sandbox.state["accounts"][account_id]["timezone_name"])
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, ad_account_id=[account_id], request_timeout_seconds=10)
    async with aiohttp.ClientSession() as http:
        windows = {"app": 3600.0, "ad_account": 3600.0, "buc": 3600.0, "insights": 3600.0}
        graph = GraphClient(http, meta, usage_windows=windows)
        poller = insights_worker.Worker(db, graph, InsightsSettings(poll_seconds=0.01), [account_id])
        [outcome] = await poller.refresh_all()
        assert outcome.error is None
    day = datetime.now(zone).date() - timedelta(days=1)
    campaigns = sorted(sandbox.state["accounts"][account_id]["campaigns"])
    return Account(db, sandbox, account_id, zone, day, campaigns)


async def sandbox_numbers(sandbox: SandboxHandle, account_id: str, since: date, until: date,
                          level: str) -> dict[str, tuple[int, int]]:
    """(spend in minor units, Meta's leads) per campaign (or for the account, key "total") as the sandbox's
    insights API reports them for a window."""
    status, _, body = await sandbox.graph(
        "GET", f"{account_id}/insights", level=level, limit=500,
        fields="campaign_id,spend,actions,account_currency",
        time_range=json.dumps({"since": since.isoformat(), "until": until.isoformat()}),
    )
    assert status == 200, body
    out = {}
    for row in body["data"]:
        leads = sum(int(a["value"]) for a in row.get("actions", []) if a["action_type"] == "lead")
        out[row.get("campaign_id", "total")] = (to_minor(row["spend"], row["account_currency"]), leads)
    return out


async def insert_lead(db: asyncpg.Pool, leadgen_id: str, created: datetime, campaign_id: str | None,
                      outcomes: tuple[str, ...] = (), *, test: bool = False) -> None:
    # Meta's Lead Ads Testing Tool fills a test lead's answers with placeholders.
    answers = ({"full_name": "<test lead: dummy data for full_name>", "email": "<test lead: dummy data for email>"}
               if test else {"full_name": NAME, "email": EMAIL, "phone_number": PHONE})
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
        "fields, raw, source, fetched_at) values ($1, '1111', '2222', $2, $2, $3, $4, $5, $6, $7, 'webhook', $4)",
        leadgen_id, None if campaign_id is None else f"ad-{campaign_id}", campaign_id, created, campaign_id is None,
        answers, {"id": leadgen_id, **answers},
    )
    for event in outcomes:
        await db.execute("insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
                         "values ($1, $2, now(), gen_random_uuid())", leadgen_id, event)


async def insert_decision(db: asyncpg.Pool, account_id: str, at: datetime, rule: str, outcome: str,
                          entity: str, explanation: str) -> None:
    run_id = uuid.uuid4()
    await db.execute("insert into rule_runs (run_id, trigger, accounts, started_at, rules, entities, decisions, "
                     "acted) values ($1, 'schedule', $2, $3, $4, 1, 1, 0)", run_id, [account_id], at, [rule])
    await db.execute(
        "insert into rule_decisions (run_id, evaluated_at, rule, entity_id, entity_level, entity_name, account_id, "
        "currency, outcome, metrics, explanation) values ($1, $2, $3, $4, 'adset', $4, $5, 'USD', $6, '{}', $7)",
        run_id, at, rule, entity, account_id, outcome, explanation)


def local(day: date, hour: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=zone)


def reports_for(db: asyncpg.Pool, amqp_url: str, *, slack_url: str = "", smtp_port: int = 0,
                **config: Any) -> reports_worker.Worker:
    notify = NotifySettings(slack_webhook_url=SecretStr(slack_url), smtp_host="127.0.0.1" if smtp_port else "",
                            smtp_port=smtp_port or 25, smtp_security="none", smtp_from="leadwire@example.com",
                            notify_email_to=["ops@example.com"], smtp_timeout_seconds=5)
    return reports_worker.Worker(db, ReportSettings(**config), notify, CrmOutcomeSettings(), amqp_url)


def mail_texts(raw: bytes) -> tuple[EmailMessage, str, str, bytes]:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None
    assert html is not None
    [image] = [p for p in message.walk() if p.get_content_type() == "image/png"]
    return message, plain.get_content(), html.get_content(), image.get_payload(decode=True)


def assert_no_pii(*texts: str | bytes) -> None:
    for value in texts:
        folded = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for secret in PII:
            assert secret.lower() not in folded.lower(), f"lead personal data {secret!r} in the report"


# ------------------------------------------------------------------------------------------------ tests


async def test_report_numbers_match_the_sandboxs_insights(account: Account, vhost_url: str) -> None:
    day, zone, db = account.day, account.zone, account.db
    first, second = account.campaigns[:2]
    # Paid leads of the report day (two qualified, one of them signed), of the day before, and of 7 days before
    # (in the previous week only); an organic lead; all with known personal data.
    await insert_lead(db, "r1", local(day, 9, zone), first, ("QualifiedLead",))
    await insert_lead(db, "r2", local(day, 10, zone), first, ("QualifiedLead", "SignedCase"))
    await insert_lead(db, "r3", local(day, 23, zone), second)
    await insert_lead(db, "r4", local(day - timedelta(days=1), 12, zone), second, ("QualifiedLead",))
    await insert_lead(db, "r5", local(day - timedelta(days=7), 12, zone), first, ("SignedCase",))
    await insert_lead(db, "r6", local(day, 11, zone), None)
    await insert_lead(db, "r8", local(day, 12, zone), None, test=True)
    await insert_lead(db, "r7", local(day + timedelta(days=1), 0, zone), first)  # the next day: not counted
    await insert_decision(db, account.account_id, local(day, 9, zone), "high_cpl_pause", "acted", "Broad 25-54",
                          "CPL $61.00 over 3 days is above $50.00: paused.")
    await insert_decision(db, account.account_id, local(day, 10, zone), "zero_leads", "would_act", "Lookalike",
                          "No lead in 24 h while $80.00 spent: would pause (shadow mode).")
    await insert_decision(db, account.account_id, local(day - timedelta(days=1), 9, zone), "zero_leads", "skipped",
                          "Lookalike", "Leads in the last 24 h: nothing to do.")
    await db.execute("insert into rule_breakers (rule, failures, last_detail, opened_at) "
                     "values ('scale_winners', 3, 'budget change refused 3 times', now())")
    # One message parked on this test's own vhost.
    await declare_topology(vhost_url)
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"{}"),
                                               routing_key=consumer("crm_sync", "lead_captured").parking_queue_name)
    reports = reports_for(db, vhost_url)
    parked = await eventually(lambda: _parked(reports), what="the parked message counted", timeout=30)

    [report] = await reports.build(account.account_id, day, parked=parked)

    sandbox, aid = account.sandbox, account.account_id
    week = day - timedelta(days=6)
    expected_day = await sandbox_numbers(sandbox, aid, day, day, "campaign")
    expected_week = await sandbox_numbers(sandbox, aid, week, day, "campaign")
    expected_before = await sandbox_numbers(sandbox, aid, day - timedelta(days=1), day - timedelta(days=1), "campaign")
    assert expected_week, "the sandbox's account delivered that week"
    by_id = {r.campaign_id: r.numbers for r in report.rows}
    assert {c: (n.day.spend_minor, n.day.meta_leads) for c, n in by_id.items() if n.day.spend_minor or
            n.day.meta_leads} == {c: v for c, v in expected_day.items() if v != (0, 0)}
    assert {c: (n.week.spend_minor, n.week.meta_leads) for c, n in by_id.items() if n.week.spend_minor or
            n.week.meta_leads} == {c: v for c, v in expected_week.items() if v != (0, 0)}
    assert {c: (n.day_before.spend_minor, n.day_before.meta_leads) for c, n in by_id.items()
            if n.day_before.spend_minor or n.day_before.meta_leads} == {
        c: v for c, v in expected_before.items() if v != (0, 0)}
    [(total_spend, total_leads)] = (await sandbox_numbers(sandbox, aid, day, day, "account")).values()
    assert (report.total.day.spend_minor, report.total.day.meta_leads) == (total_spend, total_leads)
    [(week_spend, week_leads)] = (await sandbox_numbers(sandbox, aid, week, day, "account")).values()
    assert (report.total.week.spend_minor, report.total.week.meta_leads) == (week_spend, week_leads)
    # Leads, qualified and signed by the lead's date; costs are the sandbox's spend over them.
    assert (by_id[first].day.leads, by_id[first].day.qualified, by_id[first].day.signed) == (2, 2, 1)
    assert (by_id[second].day.leads, by_id[second].day_before.qualified) == (1, 1)
    assert (report.total.week.leads, report.total.week.qualified, report.total.week.signed) == (4, 3, 1)
    assert (report.total.week_before.signed, report.total.week_before.leads) == (1, 2)  # r4 and r5 (D-7)
    assert report.total.day.cost_per_qualified == total_spend / 2
    assert (report.organic.day.leads, report.test.day.leads) == (1, 1)
    text = render.text(report)
    assert re.search(rf"^Cost per qualified lead +{re.escape(report.money(total_spend / 2))} ", text, re.M)
    assert re.search(rf"^Spend +{re.escape(report.money(total_spend))} ", text, re.M)
    # What the rules did, the day before's to compare.
    assert report.rules.day == {"acted": 1, "would_act": 1, "skipped": 0}
    assert report.rules.day_before == {"acted": 0, "would_act": 0, "skipped": 1}
    assert "high_cpl_pause on adset 'Broad 25-54': acted. CPL $61.00" in text
    # What is stuck.
    assert report.stuck.counts["parked"] == 1
    assert "parked in crm_sync/lead_captured: 1" in text
    assert "Open: rule stopped by its circuit breaker scale_winners: budget change refused 3 times" in text
    payload = render.slack(report)
    check_block_kit(payload)
    assert_no_pii(text, json.dumps(payload))


async def _parked(reports: reports_worker.Worker) -> dict[str, int] | None:
    counts = await reports.parked()
    return counts if counts and sum(counts.values()) == 1 else None


async def test_scheduled_report_goes_to_slack_and_email_once_without_personal_data(
    account: Account, slack_hook: SlackHook, smtp: SmtpReceiver, settings: Settings,
) -> None:
    day, zone, db = account.day, account.zone, account.db
    await insert_lead(db, "s1", local(day, 9, zone), account.campaigns[0], ("QualifiedLead",))
    await insert_lead(db, "s2", local(day, 9, zone), None)
    # REPORT_TIME 00:00: yesterday's report is due whatever the hour the test runs at.
    reports = reports_for(db, settings.broker.amqp_url.get_secret_value(), slack_url=slack_hook.url,
                          smtp_port=smtp.port, time="00:00")

    assert await reports.run_due() == 1

    [payload] = slack_hook.payloads
    check_block_kit(payload)
    assert day.strftime("%a %d %b %Y") in payload["blocks"][0]["text"]["text"]
    [raw] = smtp.messages
    assert smtp.recipients == [["ops@example.com"]]
    message, plain, html, png = mail_texts(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert png.startswith(b"\x89PNG")
    cid = next(p for p in message.walk() if p.get_content_type() == "image/png")["Content-ID"].strip("<>")
    assert f"cid:{cid}" in html
    assert "Leads received" in plain
    assert_no_pii(raw, plain, html, json.dumps(payload))
    rows = await db.fetch("select channel, attempts, delivered_at is not null as delivered from report_deliveries "
                          "where account_id = $1 and report_date = $2 order by channel", account.account_id, day)
    assert [tuple(r) for r in rows] == [("email", 1, True), ("slack", 1, True)]
    snapshot = await db.fetchval("select stuck from report_snapshots where account_id = $1 and report_date = $2",
                                 account.account_id, day)
    assert snapshot is not None
    # Checked again (every minute in service): nothing more is sent.
    assert await reports.run_due() == 0
    assert len(slack_hook.payloads) == 1
    assert len(smtp.messages) == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "daily-report.eml").write_bytes(raw)
    (ARTIFACTS / "daily-chart.png").write_bytes(png)
    (ARTIFACTS / "daily-report.html").write_text(html.replace(f"cid:{cid}", "daily-chart.png"), encoding="utf-8")
    (ARTIFACTS / "daily-slack.json").write_text(json.dumps(payload, indent=2), encoding="utf-8")
    if shutil.which(CHROMIUM):  # a picture of the e-mail as a mail client's HTML view shows it
        await screenshot(ARTIFACTS / "daily-report.html", ARTIFACTS / "daily-report-email.png")


async def screenshot(html: Path, png: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(html.as_uri())
            await page.screenshot(path=str(png), full_page=True)
        finally:
            await browser.close()


async def test_a_failing_channel_is_retried_later_and_a_dead_webhook_given_up(
    account: Account, slack_hook: SlackHook, smtp: SmtpReceiver, settings: Settings,
) -> None:
    slack_hook.status = 500
    reports = reports_for(account.db, settings.broker.amqp_url.get_secret_value(), slack_url=slack_hook.url,
                          smtp_port=smtp.port, time="00:00")
    assert await reports.run_due() == 1
    assert (len(slack_hook.payloads), len(smtp.messages)) == (1, 1)
    state = await account.db.fetchrow(
        "select attempts, last_error, delivered_at, gave_up, next_attempt_at > now() as later from report_deliveries "
        "where channel = 'slack'")
    assert (state["attempts"], state["delivered_at"], state["gave_up"], state["later"]) == (1, None, False, True)
    assert state["last_error"] == "slack: HTTP 500: no_service"
    # Within its back-off nothing is sent again, e-mail least of all.
    assert await reports.run_due() == 0
    # Once the back-off ran out, only Slack is tried again; a 404 (the webhook was removed) ends the tries.
    await account.db.execute("update report_deliveries set next_attempt_at = now() where channel = 'slack'")
    slack_hook.status = 404
    assert await reports.run_due() == 1
    assert (len(slack_hook.payloads), len(smtp.messages)) == (2, 1)
    gave_up = await account.db.fetchval("select gave_up from report_deliveries where channel = 'slack'")
    assert gave_up
    await account.db.execute("update report_deliveries set next_attempt_at = now() where channel = 'slack'")
    assert await reports.run_due() == 0


async def test_cli_prints_the_report_and_sends_it(
    account: Account, slack_hook: SlackHook, settings: Settings, console_dsn: str,
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    await insert_lead(account.db, "c1", local(account.day, 9, account.zone), account.campaigns[0])
    cli_settings = settings.replace(
        DatabaseSettings(database_url=console_dsn, db_pool_min=1, db_pool_max=2),
        NotifySettings(slack_webhook_url=SecretStr(slack_hook.url), smtp_host=""),
        BrokerSettings(amqp_url=settings.broker.amqp_url),
    )
    status = await cli.daily(cli_settings, account.account_id, account.day, save_to=tmp_path)
    out, err = capsys.readouterr()
    assert status == 0
    assert out.startswith(f"Daily report {account.day.strftime('%a %d %b %Y')}")
    assert "sent to slack" in err
    assert len(slack_hook.payloads) == 1
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".eml", ".html", ".json", ".png"]
    assert_no_pii(out, *(p.read_bytes() for p in tmp_path.iterdir()))
    # An unknown account is an operator's mistake, said plainly.
    assert await cli.daily(cli_settings, "act_404", account.day, send=False) == 2
    assert "no ad account act_404" in capsys.readouterr().err
