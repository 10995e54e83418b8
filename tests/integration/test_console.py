"""The operator's console over plain HTTP against the real PostgreSQL: login, CSRF, pages and their numbers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aio_pika
import asyncpg
import pytest

from services.console.security import SECURITY_HEADERS, SESSION_COOKIE
from shared.settings import BrokerSettings, Settings
from shared.topology import consumer
from tests.fixtures.console import OPERATOR, PASSWORD, Console, csrf_of, running_console
from tests.fixtures.infra import eventually

EMAIL = "jane.roe.console@example.com"
PHONE = "+15555550123"
NAME = "Jane Quincy Roe"


async def insert_lead(db: asyncpg.Pool, leadgen_id: str, created: datetime, *, organic: bool = False) -> None:
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
        "fields, raw, source, fetched_at) values ($1, '1111', '2222', '3333', '4444', '5555', $2, $3, $4, $5, "
        "'webhook', $2::timestamptz + interval '2 seconds')",
        leadgen_id, created, organic,
        {"full_name": NAME, "email": EMAIL, "phone_number": PHONE, "were_you_injured": "yes"},
        {"id": leadgen_id, "campaign_name": "PI Leads Q4", "adset_name": "Phoenix 25-54", "ad_name": "Crash video"},
    )


async def deliver(db: asyncpg.Pool, leadgen_id: str, status: str, *, after: timedelta | None = None,
                  error: str | None = None, attempts: int = 1) -> None:
    await db.execute(
        "insert into crm_deliveries (leadgen_id, adapter, status, attempts, last_error, delivered_at) "
        "select $1, 'webhook', $2, $3, $4, case when $2 = 'delivered' then created_time + $5::interval end "
        "from leads where leadgen_id = $1",
        leadgen_id, status, attempts, error, after or timedelta(seconds=0),
    )


# --------------------------------------------------------------------------------------------- login and CSRF


async def test_every_page_needs_a_login(console: Console) -> None:
    for path in ("/", "/leads", "/leads/123", "/today/tiles"):
        status, _, resp = await console.get(path)
        assert status == 303, path
        assert resp.headers["Location"].startswith("/login")
    status, _, resp = await console.get("/today/tiles", headers={"HX-Request": "true"})
    assert (status, resp.headers.get("HX-Redirect")) == (401, "/login")
    status, _, _ = await console.post("/leads/123/reveal", {"csrf_token": "x"})
    assert status == 401
    status, _, _ = await console.get("/healthz")
    assert status == 200


async def test_login_sets_a_strict_http_only_session_cookie_and_logout_ends_it(console: Console) -> None:
    status, _ = await console.login()
    assert status == 303
    assert console.session_cookie()
    status, page, resp = await console.get("/")
    assert status == 200
    assert "Leads today" in page
    for header, value in SECURITY_HEADERS.items():
        assert resp.headers[header] == value
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert "<script>" not in page
    assert " style=" not in page

    status, _, _ = await console.post("/logout", {"csrf_token": csrf_of(page)})
    assert status == 303
    status, _, _ = await console.get("/")
    assert status == 303


@pytest.mark.parametrize(("proto", "secure"), [("http", False), ("https", True)])
async def test_cookie_flags(settings: Settings, console_dsn: str, console_db: asyncpg.Pool, proto: str,
                            secure: bool) -> None:
    async with running_console(settings, console_dsn, trust_proxy=True) as console:
        _, form, _ = await console.get("/login")
        async with console.http.post(
            f"{console.url}/login", allow_redirects=False, headers={"X-Forwarded-Proto": proto},
            data={"csrf_token": csrf_of(form), "username": OPERATOR, "password": PASSWORD},
        ) as resp:
            assert resp.status == 303
            cookie = resp.cookies[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert bool(cookie["secure"]) is secure


async def test_login_form_without_its_csrf_token_is_refused(console: Console) -> None:
    await console.get("/login")
    status, _, _ = await console.post("/login", {"username": OPERATOR, "password": "correct horse battery staple"})
    assert status == 403
    assert console.session_cookie() is None


async def test_failed_logins_are_rate_limited(console: Console, console_db: asyncpg.Pool) -> None:
    for _ in range(5):
        status, page = await console.login(password="wrong password")
        assert status == 401
        assert "Wrong user name or password" in page
    status, page = await console.login()  # the right password, too late
    assert status == 429
    assert "Too many failed attempts" in page
    assert console.session_cookie() is None
    status, _ = await console.login(username="nobody", password="whatever")
    assert status == 429  # the same address is blocked for every name


async def test_posts_without_the_session_csrf_token_are_refused(console: Console, console_db: asyncpg.Pool) -> None:
    await insert_lead(console_db, "900001", datetime.now(UTC))
    await console.login()
    for data in ({}, {"csrf_token": "forged"}):
        status, _, _ = await console.post("/leads/900001/reveal", data)
        assert status == 403
        status, _, _ = await console.post("/logout", data)
        assert status == 403
    assert await console_db.fetchval("select count(*) from console_audit where action = 'reveal_lead'") == 0


async def test_unknown_operators_and_removed_users_cannot_log_in(console: Console) -> None:
    status, _ = await console.login(username="mallory")
    assert status == 401


# --------------------------------------------------------------------------------------------- pages


async def test_today_counts_leads_by_status_and_latency(console: Console, console_db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    # Minutes before now, yet still today in UTC (the console's zone here) whenever the test runs.
    start = max(now - timedelta(minutes=30), now.replace(hour=0, minute=0, second=0, microsecond=0))
    for i, (status, seconds) in enumerate(
        [("delivered", 10), ("delivered", 20), ("delivered", 30), ("delivered", 40), ("failed", 0), ("retrying", 0)]
    ):
        await insert_lead(console_db, f"91000{i}", start + timedelta(seconds=i), organic=i == 0)
        await deliver(console_db, f"91000{i}", status, after=timedelta(seconds=seconds))
    await insert_lead(console_db, "910009", start)  # stored, not yet at crm_sync
    await insert_lead(console_db, "910010", now - timedelta(days=1, hours=1))  # yesterday or before
    await console.login()

    status, page, _ = await console.get("/")

    assert status == 200
    assert 'data-testid="leads-today">7<' in page
    assert "6 paid · 1 organic" in page
    assert 'data-testid="delivered-today">4<' in page
    assert 'data-testid="waiting-today">2<' in page
    assert 'data-testid="failed-today">1<' in page
    assert 'data-testid="latency-p50">25 s<' in page  # median of 10, 20, 30, 40 s
    assert "slowest 5%: 38 s" in page  # p95, interpolated: 30 + 0.85 * 10 = 38.5 s
    _, tiles, _ = await console.get("/today/tiles", headers={"HX-Request": "true"})
    assert tiles.startswith('<div id="today-tiles"')
    assert "<html" not in tiles


async def test_today_costs_from_insights_and_cohorts(console: Console, console_db: asyncpg.Pool) -> None:
    account = "act_777"
    await console_db.execute(
        "insert into ad_accounts (account_id, name, currency, currency_offset, timezone_name, last_refresh_at) "
        "values ($1, 'Firm', 'USD', 100, 'UTC', now())", account)
    today = datetime.now(UTC).date()
    # (days ago, spend in cents, Meta leads): 7-day window = days 0..6, 30-day = days 0..29.
    for days_ago, spend, leads in ((0, 12_000, 3), (3, 8_000, 1), (10, 50_000, 6), (40, 99_999, 9)):
        await console_db.execute(
            "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, currency, spend_minor, "
            "leads) values ('a1', $1, $2, 'c1', 's1', 'USD', $3, $4)",
            today - timedelta(days=days_ago), account, spend, leads)
    now = datetime.now(UTC)
    for i, outcome in enumerate(("QualifiedLead", "QualifiedLead", "SignedCase")):
        await insert_lead(console_db, f"92000{i}", now - timedelta(minutes=5 + i))
        await console_db.execute(
            "insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
            "values ($1, $2, now(), gen_random_uuid())", f"92000{i}", outcome)
    await console.login()

    _, page, _ = await console.get("/")

    assert 'data-testid="spend-today">120.00 USD<' in page
    assert 'data-testid="cpl-7d">50.00 USD<' in page  # 200.00 / 4
    assert 'data-testid="cpl-30d">70.00 USD<' in page  # 700.00 / 10
    assert 'data-testid="cpql-7d">100.00 USD</span> <small>(2 qualified)' in page  # 200.00 / 2
    assert 'data-testid="cpsc-7d">200.00 USD</span> <small>(1 signed)' in page
    assert 'data-testid="cpsc-30d">700.00 USD</span> <small>(1 signed)' in page
    assert "Ad numbers refreshed</strong> just now" in page


async def test_leads_list_searches_and_filters(console: Console, console_db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    await insert_lead(console_db, "930001", now - timedelta(minutes=2))
    await deliver(console_db, "930001", "delivered")
    await insert_lead(console_db, "930002", now - timedelta(minutes=1))
    await deliver(console_db, "930002", "failed", error="http_422")
    await console.login()

    _, page, _ = await console.get("/leads")
    assert page.index("/leads/930002") < page.index("/leads/930001")  # newest first
    assert "PI Leads Q4" in page
    assert "Phoenix 25-54" in page
    assert "Crash video" in page
    _, page, _ = await console.get("/leads?status=failed")
    assert "/leads/930002" in page
    assert "/leads/930001" not in page
    _, page, _ = await console.get("/leads?q=phoenix")
    assert "/leads/930002" in page
    assert "/leads/930001" in page
    _, page, _ = await console.get("/leads?q=nothing%25like_this")
    assert "No leads match" in page
    _, rows, _ = await console.get("/leads?q=930001", headers={"HX-Request": "true", "HX-Target": "lead-rows"})
    assert rows.startswith('<div id="lead-rows">')
    assert "/leads/930001" in rows
    assert "/leads/930002" not in rows
    for pii in (EMAIL, PHONE, NAME):
        assert pii not in page


async def test_trail_masks_personal_data_until_revealed_and_records_who(
    console: Console, console_db: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await insert_lead(console_db, "940001", datetime.now(UTC) - timedelta(minutes=3))
    await deliver(console_db, "940001", "delivered", after=timedelta(seconds=4), attempts=2)
    await console_db.execute(
        "insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
        "values ('940001', 'SignedCase', now(), gen_random_uuid())")
    await console_db.execute(
        "insert into capi_events (dedupe_key, pixel_id, event_name, event_id, event_time, lead_id, status, batch_id, "
        "sent_at, events_received, fbtrace_id) values ('k940001', '555', 'SignedCase', 'e1', now(), '940001', "
        "'sent', gen_random_uuid(), now(), 1, 'AbCdTrace')")
    await console.login()

    _, page, _ = await console.get("/leads/940001")

    assert "In the CRM" in page
    assert "CRM “webhook”: delivered" in page
    assert "2 attempts" in page
    assert "4.0 s after the form" in page
    assert "CRM reported “SignedCase”" in page
    assert "Told Meta “SignedCase”: accepted by Meta" in page
    assert "trace AbCdTrace" in page
    for pii in (EMAIL, PHONE, NAME):
        assert pii not in page
    assert "j•••@example.com" in page
    assert "•••• 23" in page
    assert "J. Q. R." in page

    status, revealed, _ = await console.post("/leads/940001/reveal", {"csrf_token": csrf_of(page)})

    assert status == 200
    for pii in (EMAIL, PHONE, NAME):
        assert pii in revealed
    audit = await console_db.fetch("select username, action, subject from console_audit where action = 'reveal_lead'")
    assert [tuple(r) for r in audit] == [(OPERATOR, "reveal_lead", "940001")]
    _, page, _ = await console.get("/leads/940001")
    assert EMAIL not in page
    assert "Shown before: alice" in page
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for pii in (EMAIL, PHONE, NAME):
        assert pii not in logged


async def test_unknown_lead_is_404(console: Console) -> None:
    await console.login()
    status, page, _ = await console.get("/leads/424242")
    assert status == 404
    assert "no lead with that id" in page


async def test_performance_per_campaign_with_targets_and_ad_set_drill_down(
    settings: Settings, console_dsn: str, console_db: asyncpg.Pool
) -> None:
    await console_db.execute(
        "insert into ad_accounts (account_id, currency, currency_offset, timezone_name) "
        "values ('act_1', 'USD', 100, 'UTC')")
    await console_db.execute("insert into campaigns (campaign_id, account_id, name) values ('55', 'act_1', 'Crash')")
    await console_db.execute(
        "insert into adsets (adset_id, account_id, campaign_id, name) values ('61', 'act_1', '55', 'Phoenix'), "
        "('62', 'act_1', '55', 'Tucson')")
    today = datetime.now(UTC).date()
    # (ad set, days ago, spend in cents, Meta leads)
    for adset, days_ago, spend, leads in (("61", 0, 10_000, 2), ("61", 5, 20_000, 4), ("62", 1, 30_000, 3),
                                          ("62", 20, 99_000, 1)):
        await console_db.execute(
            "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, currency, spend_minor, "
            "impressions, leads) values ($1, $2, 'act_1', '55', $3, 'USD', $4, 1000, $5)",
            f"ad{adset}", today - timedelta(days=days_ago), adset, spend, leads)
    await console_db.execute(
        "insert into leads (leadgen_id, page_id, campaign_id, adset_id, created_time, raw, source) values "
        "('950001', '1', '55', '61', now() - interval '1 hour', '{}', 'webhook'), "
        "('950002', '1', '55', '62', now() - interval '1 hour', '{}', 'webhook')")
    await console_db.execute(
        "insert into rule_crm_outcomes (lead_id, event_name, event_time, message_id) "
        "values ('950001', 'SignedCase', now(), gen_random_uuid())")

    async with running_console(settings, console_dsn, target_cpl=Decimal(60), target_cost_per_signed=400) as console:
        await console.login()
        _, page, _ = await console.get("/performance?days=7")
        # 7 days: 600.00 spent, 9 Meta leads: CPL 66.67 is within 25% over the 60 target (amber).
        assert '<td class="num target warn" data-testid="cpl" title="target $60">66.67 USD</td>' in page
        assert "600.00 USD" in page
        # One signed case: over 400 by > 25%.
        assert '<td class="num target bad" data-testid="cpsc" title="target $400">600.00 USD</td>' in page
        assert 'id="chart-data"' in page
        _, page, _ = await console.get("/performance?days=7&campaign=55")
        assert "Performance: Crash" in page
        # Phoenix: 300.00 / 6; Tucson: 300.00 / 3. One account: the heads name its target.
        assert '<td class="num target ok" data-testid="cpl" title="target $60">50.00 USD</td>' in page
        assert '<td class="num target bad" data-testid="cpl" title="target $60">100.00 USD</td>' in page
        assert '<small data-testid="target-cpl">target $60</small>' in page
        _, page, _ = await console.get("/performance?days=30")
        assert "1,590.00 USD" in page  # the 20-days-ago row counts in 30 days


async def test_parked_messages_are_counted_per_consumer(
    settings: Settings, console_dsn: str, console_db: asyncpg.Pool, vhost_url: str
) -> None:
    """On a vhost of its own: the parking queues hold exactly what this test parks."""
    parking = consumer("crm_sync", "lead_captured").parking_queue_name
    with_vhost = settings.replace(BrokerSettings(amqp_url=vhost_url))
    async with running_console(with_vhost, console_dsn) as console:
        await console.login()
        await eventually(lambda: tile(console, "0"), what="no parked message")
        connection = await aio_pika.connect(vhost_url)
        async with connection:
            channel = await connection.channel()
            for _ in range(2):
                await channel.default_exchange.publish(aio_pika.Message(b"{}"), routing_key=parking)
        # A quorum queue's declare-ok count follows its messages by a few seconds.
        page = await eventually(lambda: tile(console, "2"), what="two parked messages", timeout=30)
        assert "crm_sync/lead_captured: 2" in page
        assert '<div class="tile bad">' in page


async def tile(console: Console, parked: str) -> str | None:
    _, page, _ = await console.get("/today/tiles")
    return page if f'data-testid="parked">{parked}<' in page else None
