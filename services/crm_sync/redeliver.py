"""Re-drive CRM deliveries: a lead's LeadCaptured enqueued again, through the outbox, for crm_sync to deliver.

For deliveries that ended `failed` (attempts ran out, or a 4xx fixed since) or for named leads. The lead goes through
the normal path: a new LeadCaptured in the outbox, relayed to the broker, handled by crm_sync like any other, so the
per-(lead, adapter) rows of `crm_deliveries` keep it at most once per adapter: an adapter already `delivered` is not
sent again. The failed rows are set back to `pending` in the same transaction, so running the command twice does
not enqueue a lead twice unless it failed again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from contracts.leads import LeadCaptured
from contracts.messages import LeadCapturedMessage
from shared.outbox import enqueue_many

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

_LEADS = (
    "select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform "
    "from leads where leadgen_id = any($1::text[])"
)


@dataclass
class RedeliveryReport:
    """What one run enqueued (ids only)."""

    enqueued: list[str] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)  # named ids with no row in `leads`


async def failed_leads(pool: asyncpg.Pool, *, since: datetime | None = None, adapter: str | None = None) -> list[str]:
    """Leads with a delivery that ended `failed` (last changed at or after `since`, for `adapter` if given)."""
    rows = await pool.fetch(
        "select distinct leadgen_id from crm_deliveries where status = 'failed' "
        "and ($1::timestamptz is null or updated_at >= $1) and ($2::text is null or adapter = $2) "
        "order by leadgen_id",
        since, adapter,
    )
    return [r["leadgen_id"] for r in rows]


async def redeliver(pool: asyncpg.Pool, leadgen_ids: Sequence[str]) -> RedeliveryReport:
    """Enqueue a LeadCaptured for each stored lead of `leadgen_ids` and reopen its failed deliveries; one
    transaction."""
    report = RedeliveryReport()
    wanted = list(dict.fromkeys(leadgen_ids))
    if not wanted:
        return report
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_LEADS, wanted)
        found = {r["leadgen_id"]: r for r in rows}
        report.not_stored = [i for i in wanted if i not in found]
        report.enqueued = [i for i in wanted if i in found]
        await conn.execute(
            "update crm_deliveries set status = 'pending', updated_at = now() "
            "where leadgen_id = any($1::text[]) and status = 'failed'",
            report.enqueued,
        )
        await enqueue_many(conn, [LeadCapturedMessage.new(LeadCaptured(
            leadgen_id=r["leadgen_id"], page_id=r["page_id"], form_id=r["form_id"], ad_id=r["ad_id"],
            adset_id=r["adset_id"], campaign_id=r["campaign_id"], created_time=r["created_time"],
            is_organic=r["is_organic"], platform=r["platform"],
        )) for r in (found[i] for i in report.enqueued)])
    logger.info("re-enqueued %s leads for CRM delivery", len(report.enqueued),
                extra={"leadgen_ids": ",".join(report.enqueued[:50]), "not_stored": len(report.not_stored)})
    return report
