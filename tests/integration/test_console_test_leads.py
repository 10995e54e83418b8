"""Organic leads and Meta's test leads are labelled apart from paid ones: on Today, in the Leads list and trail,
and on Performance (leads without an ad have a line of their own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from tests.fixtures.console import Console

TEST_ANSWERS = {"full_name": "<test lead: dummy data for full_name>", "email": "<test lead: dummy data for email>"}


async def insert(db: asyncpg.Pool, leadgen_id: str, created: datetime, *, campaign: str | None,
                 answers: dict[str, str]) -> None:
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
        "fields, raw, source, fetched_at) values ($1, '1111', '2222', $2, $2, $2, $3, $4, $5, '{}', 'webhook', $3)",
        leadgen_id, campaign, created, campaign is None, answers, )


async def test_paid_organic_and_test_leads_are_labelled_apart(console: Console, console_db: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    start = max(now - timedelta(minutes=30), now.replace(hour=0, minute=0, second=0, microsecond=0))
    await console_db.execute(
        "insert into ad_accounts (account_id, name, currency, currency_offset, timezone_name) "
        "values ('act_9', 'Firm', 'USD', 100, 'UTC')")
    await console_db.execute(
        "insert into insights_daily (ad_id, date, account_id, campaign_id, adset_id, campaign_name, currency, "
        "spend_minor, leads) values ('a1', $1, 'act_9', '77', 's1', 'Crash', 'USD', 10000, 2)", now.date())
    await insert(console_db, "930001", start, campaign="77", answers={"full_name": "Pat Doe"})
    await insert(console_db, "930002", start + timedelta(seconds=1), campaign=None, answers={"full_name": "Kim Roe"})
    await insert(console_db, "930003", start + timedelta(seconds=2), campaign=None, answers=TEST_ANSWERS)
    await console.login()

    _, today, _ = await console.get("/")
    assert "1 paid · 1 organic · 1 test · yesterday" in today

    _, leads, _ = await console.get("/leads?day=today")
    rows = {lead_id: leads.split(f'href="/leads/{lead_id}"')[1].split("</td>")[0]
            for lead_id in ("930001", "930002", "930003")}
    assert '<span class="tag">test</span>' in rows["930003"]
    assert '<span class="tag">organic</span>' in rows["930002"]
    assert "tag" not in rows["930001"]
    _, trail, _ = await console.get("/leads/930003")
    assert '<span class="tag">test lead</span>' in trail

    _, performance, _ = await console.get("/performance?days=7")
    unpaid = performance.split('data-testid="unpaid"')[1].split("</tr>")[0]
    assert '<span class="tag" data-testid="organic-leads">1 organic</span>' in unpaid
    assert '<span class="tag" data-testid="test-leads">1 test</span>' in unpaid
