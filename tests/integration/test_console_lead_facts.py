"""console_lead_facts (migration 0101) gives the same leads and values as console_leads for the columns it has."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from tests.fixtures.infra import unique

_FACTS = ("select leadgen_id, created_time, campaign_id, adset_id, ad_id, is_organic, is_test from console_lead_facts"
          " where leadgen_id like $1 order by 1")
_FULL = ("select leadgen_id, created_time, campaign_id, adset_id, ad_id, is_organic, is_test from console_leads"
         " where leadgen_id like $1 order by 1")


async def test_lead_facts_match_console_leads(db: asyncpg.Pool) -> None:
    prefix = unique("facts")
    at = datetime(2026, 1, 5, 12, tzinfo=UTC)
    leads = [  # (suffix, is_organic, fields): paid, organic, a Testing Tool lead, a paid lead with placeholder text
        ("paid", False, {"email": "a@example.com"}),
        ("organic", True, {"email": "b@example.com"}),
        ("test", True, {"email": "<test lead: dummy data for email>"}),
        ("paidtest", False, {"email": "<test lead: dummy data for email>"}),
        ("odd", True, ["not", "an", "object"]),
    ]
    for suffix, organic, fields in leads:
        await db.execute(
            "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic,"
            " fields, raw, source, fetched_at) values ($1, '1', '2', '3', '4', '5', $2, $3, $4::jsonb, '{}', 'webhook',"
            " $2)", f"{prefix}-{suffix}", at, organic, fields,
        )
    # A CRM delivery on one lead: console_leads' CRM join must not change its row there either.
    await db.execute("insert into crm_deliveries (leadgen_id, adapter, status, attempts) values ($1, 'webhook', "
                     "'failed', 2)", f"{prefix}-paid")
    facts = await db.fetch(_FACTS, f"{prefix}-%")
    full = await db.fetch(_FULL, f"{prefix}-%")
    assert len(facts) == len(leads)
    assert [dict(r) for r in facts] == [dict(r) for r in full]
    assert {r["leadgen_id"].rsplit("-", 1)[1] for r in facts if r["is_test"]} == {"test"}
