"""Reading lead_fetcher's leads through the `stored_leads` view (shared/leads.py), against the real database."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import asyncpg

from shared.leads import load_lead, load_leads


def new_lead_id() -> str:
    return str(random.randint(10**15, 10**16 - 1))


async def test_a_stored_lead_reads_back_with_its_answers_and_names_and_without_pii_in_repr(db: asyncpg.Pool) -> None:
    lid, bare, unknown = new_lead_id(), new_lead_id(), new_lead_id()
    created = datetime(2026, 11, 20, 15, 4, 5, tzinfo=UTC)
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
        "platform, fields, raw, source) values ($1, '1111', '2222', '3333', '4444', '5555', $2, true, 'ig', $3, $4, "
        "'webhook'), ($5, '1111', null, null, null, null, $2, false, null, '{}', $6, 'backfill')",
        lid, created, {"email": "jane.roe@example.com", "phone_number": ["", "+15555550123"], "empty": ""},
        {"id": lid, "campaign_name": "PI Leads Q4", "ad_name": "", "adset_name": None, "secret": "not exposed"},
        bare, [1, 2],
    )

    leads = await load_leads(db, [lid, bare, unknown])

    assert set(leads) == {lid, bare}
    lead = leads[lid]
    assert (lead.page_id, lead.form_id, lead.ad_id, lead.adset_id, lead.campaign_id) == (
        "1111", "2222", "3333", "4444", "5555")
    assert (lead.created_time, lead.is_organic, lead.platform) == (created, True, "ig")
    assert lead.answers == {"email": "jane.roe@example.com", "phone_number": "+15555550123"}
    assert lead.fields["phone_number"] == ["", "+15555550123"]  # as stored, for readers that need the lists
    assert lead.names == {"campaign_name": "PI Leads Q4"}  # empty names dropped; nothing else of `raw`
    assert lead.label("campaign") == "PI Leads Q4"
    assert lead.label("ad") == "3333"  # no name: the id
    assert "jane" not in repr(lead)
    assert "+1555" not in repr(lead)
    assert leads[bare].names == {}  # a `raw` that is not an object has no names
    assert await load_lead(db, unknown) is None
    assert (await load_lead(db, lid)) == lead
