"""Re-drive CRM deliveries: ask lead_fetcher, through the outbox, to emit a lead's LeadCaptured again.

For deliveries that ended `failed` (attempts ran out, or a 4xx fixed since) or for named leads. crm_sync does not
write lead_fetcher's messages: it sends lead_fetcher a `RedeliverLead` command per stored lead, and lead_fetcher,
which owns `leads`, emits a new LeadCaptured that crm_sync handles like any other, so the per-(lead, adapter) rows of
`crm_deliveries` keep it at most once per adapter: an adapter already `delivered` is not sent again. The failed rows
are set back to `pending` in the same transaction, so running the command twice does not enqueue a lead twice
unless it failed again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from contracts.leads import RedeliverLead
from contracts.messages import RedeliverLeadMessage
from services.crm_sync import store
from shared.leads import load_leads
from shared.outbox import enqueue_many

if TYPE_CHECKING:
    import asyncpg

logger = logging.getLogger(__name__)

@dataclass
class RedeliveryReport:
    """What one run enqueued (ids only)."""

    enqueued: list[str] = field(default_factory=list)
    not_stored: list[str] = field(default_factory=list)  # named ids with no stored lead


async def redeliver(pool: asyncpg.Pool, leadgen_ids: Sequence[str]) -> RedeliveryReport:
    """Enqueue a RedeliverLead for each stored lead of `leadgen_ids` and reopen its failed deliveries; one
    transaction."""
    report = RedeliveryReport()
    wanted = list(dict.fromkeys(leadgen_ids))
    if not wanted:
        return report
    async with pool.acquire() as conn, conn.transaction():
        stored = await load_leads(conn, wanted)
        report.not_stored = [i for i in wanted if i not in stored]
        report.enqueued = [i for i in wanted if i in stored]
        await store.reopen_failed(conn, report.enqueued)
        await enqueue_many(conn, [
            RedeliverLeadMessage.new(RedeliverLead(leadgen_id=i, reason="crm redeliver")) for i in report.enqueued
        ])
    logger.info("asked lead_fetcher to emit %s leads again for CRM delivery", len(report.enqueued),
                extra={"leadgen_ids": ",".join(report.enqueued[:50]), "not_stored": len(report.not_stored)})
    return report
