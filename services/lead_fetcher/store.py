"""The lead fetcher's database work: leads with their LeadCaptured (outbox), access alerts, form watermarks.

The outbox is written through `shared.outbox` and read through its view `enqueued_messages` (migration 0150).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from contracts.alerts import AlertRaised
from contracts.envelope import Envelope
from contracts.leads import LeadCaptured, captured_message_id
from contracts.messages import AlertRaisedMessage, LeadCapturedMessage, RedeliverLeadMessage
from services.lead_fetcher.logic import Lead, redelivered_message_id
from shared.leads import lead_match_keys
from shared.outbox import enqueue, enqueue_many

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

# Leads inserted if new, one statement for a group, one row per array position. Answers go as JSON text (cast here)
# so the statement does not depend on how the pool codes jsonb arrays.
_INSERT_LEADS = """
insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform,
                   fields, custom_disclaimer_responses, raw, source, form_name, email_key, phone_key)
select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform,
       fields::jsonb, disclaimers::jsonb, raw::jsonb, source, form_name, email_key, phone_key
from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
            $8::boolean[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
            $15::text[], $16::text[])
     as l(leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform,
          fields, disclaimers, raw, source, form_name, email_key, phone_key)
on conflict (leadgen_id) do nothing
returning leadgen_id
"""

# Which of a group's leads are stored, and whether each one's LeadCaptured is in the outbox (published or not): the
# outbox is shared/'s, read through its view `enqueued_messages` (0150), which the planner inlines (same plan).
_LOOKUP = """
select l.leadgen_id, o.message_id is not null as emitted
from unnest($1::text[], $2::uuid[]) as u(leadgen_id, message_id)
join leads l on l.leadgen_id = u.leadgen_id
left join enqueued_messages o on o.message_id = u.message_id
"""


def captured_message(lead: Lead, caused_by: Envelope | None = None) -> LeadCapturedMessage:
    return LeadCapturedMessage.new(lead.captured(), caused_by=caused_by,
                                   message_id=captured_message_id(lead.leadgen_id))


async def store_leads(conn: asyncpg.Connection, leads: Sequence[tuple[Lead, Envelope | None]]) -> set[str]:
    """Insert the leads and, only for those that are new, their LeadCaptured into the outbox; one transaction.
    Returns the ids of the leads that were new: a lead stored before (duplicate webhook, backfill overlap, a
    concurrent copy) changes nothing and emits nothing.

    Each lead id counts once: a second copy in the same group is "stored before" like any duplicate.
    """
    first: dict[str, tuple[Lead, Envelope | None]] = {}
    for lead, caused_by in leads:
        first.setdefault(lead.leadgen_id, (lead, caused_by))
    rows = [lead for lead, _ in first.values()]
    keys = [lead_match_keys(r.fields) for r in rows]  # hashes of the normalized e-mail and phone, for matching
    async with conn.transaction():
        inserted = await conn.fetch(
            _INSERT_LEADS,
            [r.leadgen_id for r in rows], [r.page_id for r in rows], [r.form_id for r in rows],
            [r.ad_id for r in rows], [r.adset_id for r in rows], [r.campaign_id for r in rows],
            [r.created_time for r in rows], [r.is_organic for r in rows], [r.platform for r in rows],
            [json.dumps(r.fields) for r in rows], [json.dumps(r.custom_disclaimer_responses) for r in rows],
            [json.dumps(r.raw) for r in rows], [r.source for r in rows], [r.form_name for r in rows],
            [k[0] for k in keys], [k[1] for k in keys],
        )
        new = {r["leadgen_id"] for r in inserted}
        await enqueue_many(conn, [captured_message(lead, caused_by) for lead_id, (lead, caused_by) in first.items()
                                  if lead_id in new])
    return new


async def lookup(pool: asyncpg.Pool, leadgen_ids: Sequence[str]) -> dict[str, bool]:
    """For a group of lead ids, one query: stored ones map to whether their LeadCaptured exists already.

    Ids not stored are absent. A read without locks: a lead committed right after is caught by the insert's
    `on conflict`; a stored lead without its LeadCaptured goes through `ensure_captured`, which locks.
    """
    rows = await pool.fetch(_LOOKUP, list(leadgen_ids), [captured_message_id(i) for i in leadgen_ids])
    return {r["leadgen_id"]: r["emitted"] for r in rows}


async def ensure_captured(pool: asyncpg.Pool, leadgen_id: str, caused_by: Envelope | None = None) -> bool | None:
    """For a lead we already have: make sure its LeadCaptured is in the outbox (published or pending).

    Returns None when the lead is not stored, False when its LeadCaptured already exists, True when it had to
    be enqueued (a row written by other means, e.g. an import).
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
            "platform, source, "
            "exists(select 1 from enqueued_messages where message_id = $2) as emitted "
            "from leads where leadgen_id = $1 for share",
            leadgen_id, captured_message_id(leadgen_id),
        )
        if row is None:
            return None
        if row["emitted"]:
            return False
        lead = Lead(
            leadgen_id=row["leadgen_id"], page_id=row["page_id"], form_id=row["form_id"], ad_id=row["ad_id"],
            adset_id=row["adset_id"], campaign_id=row["campaign_id"], created_time=row["created_time"],
            is_organic=row["is_organic"], platform=row["platform"], fields={}, custom_disclaimer_responses=[],
            raw={}, source=row["source"],
        )
        # Concurrent duplicates may both get here: the outbox's unique message id keeps one, and the loser's
        # transaction fails and is retried, finding it emitted.
        await enqueue(conn, captured_message(lead, caused_by))
        return True


async def redeliver_captured(pool: asyncpg.Pool, command: RedeliverLeadMessage) -> bool | None:
    """Enqueue a new LeadCaptured for a stored lead, as `command` asks (crm_sync redrives its delivery).

    Its message id derives from the command's: a redelivered command finds it enqueued and adds nothing. Returns
    None when the lead is not stored, False when this command's LeadCaptured already exists, True when enqueued.
    """
    leadgen_id = command.payload.leadgen_id
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, "
            "platform, exists(select 1 from enqueued_messages where message_id = $2) as emitted "
            "from leads where leadgen_id = $1",
            leadgen_id, redelivered_message_id(command.message_id),
        )
        if row is None:
            return None
        if row["emitted"]:
            return False
        await enqueue(conn, LeadCapturedMessage.new(LeadCaptured(
            leadgen_id=row["leadgen_id"], page_id=row["page_id"], form_id=row["form_id"], ad_id=row["ad_id"],
            adset_id=row["adset_id"], campaign_id=row["campaign_id"], created_time=row["created_time"],
            is_organic=row["is_organic"], platform=row["platform"],
        ), caused_by=command, message_id=redelivered_message_id(command.message_id)))
        return True


async def raise_alert_once(
    pool: asyncpg.Pool, alert: AlertRaised, *, repeat_seconds: float, caused_by: Envelope | None = None
) -> bool:
    """Enqueue `alert` unless the same (subject, code) was raised within `repeat_seconds`. True if raised."""
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            "insert into lead_alerts (page_id, code) values ($1, $2) "
            "on conflict (page_id, code) do update set raised_at = now() "
            "where lead_alerts.raised_at < now() - make_interval(secs => $3) "
            "returning true",
            alert.subject or "", alert.code, float(repeat_seconds),
        )
        if fresh:
            await enqueue(conn, AlertRaisedMessage.new(alert, caused_by=caused_by))
    if fresh:
        logger.error("alert raised: %s", alert.code, extra={"alert_code": alert.code, "page_id": alert.subject})
    return bool(fresh)


async def watermarks(pool: asyncpg.Pool, form_ids: Iterable[str]) -> dict[str, datetime]:
    rows = await pool.fetch(
        "select form_id, scanned_to from lead_form_watermarks where form_id = any($1::text[])", list(form_ids)
    )
    return {r["form_id"]: r["scanned_to"] for r in rows}


async def advance_watermark(pool: asyncpg.Pool, form_id: str, page_id: str, scanned_to: datetime) -> None:
    """Move a form's watermark forward (never back: a concurrent or older scan cannot undo progress)."""
    await pool.execute(
        "insert into lead_form_watermarks (form_id, page_id, scanned_to) values ($1, $2, $3) "
        "on conflict (form_id) do update set scanned_to = greatest(lead_form_watermarks.scanned_to, "
        "excluded.scanned_to), page_id = excluded.page_id, updated_at = now()",
        form_id, page_id, scanned_to,
    )


async def created_forms(pool: asyncpg.Pool, page_id: str) -> dict[str, str]:
    """The lead forms leadwire created on `page_id` (campaign_executor's view `created_lead_forms`): id -> name."""
    rows = await pool.fetch("select form_id, name from created_lead_forms where page_id = $1", page_id)
    return {r["form_id"]: r["name"] for r in rows}
