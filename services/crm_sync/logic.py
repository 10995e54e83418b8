"""Deliver one captured lead to every configured CRM adapter, at most once per adapter.

Per (lead, adapter) a row of `crm_deliveries` is locked for the duration of the delivery (`for update skip
locked`), so two copies of the same lead handled at once cannot both create a contact; its state commits with the
LeadSynced (or AlertRaised) message through the outbox. A `delivered` row is never delivered again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from contracts.alerts import AlertRaised
from contracts.leads import LeadSynced
from contracts.messages import AlertRaisedMessage, LeadCapturedMessage, LeadSyncedMessage
from services.crm_sync import metrics
from services.crm_sync.adapters import Adapter, DeliveryFailure
from services.crm_sync.mapping import StoredLead
from shared.messaging import PermanentError, RetryLater
from shared.outbox import enqueue

logger = logging.getLogger(__name__)

NO_ADAPTER = "none"
BUSY_RETRY_SECONDS = 2.0
PARKED_FIX = (
    "Check the CRM (status page, credentials, field mapping), then replay the message from "
    "leadwire.crm_sync.lead_captured.parked; delivered adapters are not repeated."
)


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    ALREADY_DELIVERED = "already_delivered"
    BUSY = "busy"  # another worker holds the row right now
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    failure: DeliveryFailure | None = None


class CrmUnavailable(Exception):
    """A CRM failed in a way a retry may fix; the messaging middleware retries with backoff."""


class LeadNotStored(Exception):
    """LeadCaptured arrived but the lead's row is not (yet) readable."""


async def load_lead(pool: asyncpg.Pool, leadgen_id: str) -> StoredLead | None:
    row = await pool.fetchrow(
        "select leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, is_organic, platform, "
        "fields, raw from leads where leadgen_id = $1",
        leadgen_id,
    )
    return StoredLead.from_row(row) if row is not None else None


async def sync_lead(
    pool: asyncpg.Pool,
    adapters: Sequence[Adapter],
    message: LeadCapturedMessage,
    *,
    attempt: int,
    max_attempts: int,
) -> None:
    """Deliver the lead of `message` to each adapter not yet delivered.

    Raises:
        CrmUnavailable: a CRM failed transiently and attempts remain (retried with backoff).
        RetryLater: a CRM asked us to wait (429 Retry-After), or another worker is delivering this lead.
        PermanentError: an adapter failed for good (4xx, or attempts exhausted); an alert went out with it.
    """
    leadgen_id = message.payload.leadgen_id
    ids = {"leadgen_id": leadgen_id, "message_id": str(message.message_id), "attempt": attempt}
    lead = await load_lead(pool, leadgen_id)
    if lead is None:
        if attempt >= max_attempts:
            await _raise_alert(pool, message, "lead row not found in the database", adapter=None)
            raise PermanentError(f"lead {leadgen_id} not found in leads")
        raise LeadNotStored(f"lead {leadgen_id} not found in leads")
    if not adapters:
        await _mark_skipped(pool, leadgen_id)
        logger.info("no CRM adapter configured: lead recorded as skipped", extra=ids)
        return

    results = {a.name: await deliver_once(pool, a, lead, message, attempt=attempt, max_attempts=max_attempts)
               for a in adapters}
    retry = {name: r.failure for name, r in results.items() if r.outcome is Outcome.RETRY and r.failure}
    if retry:
        waits = [f.retry_after for f in retry.values() if f.retry_after is not None]
        reason = "; ".join(f"{name}: {f.reason}" for name, f in retry.items())
        if waits:
            raise RetryLater(f"CRM asked to wait ({reason})", delay=min(max(waits), 600.0), counts_attempt=True)
        raise CrmUnavailable(reason)
    if any(r.outcome is Outcome.BUSY for r in results.values()):
        raise RetryLater("another worker is delivering this lead", delay=BUSY_RETRY_SECONDS)
    failed = [name for name, r in results.items() if r.outcome is Outcome.FAILED]
    if failed:
        raise PermanentError(f"CRM delivery failed for good: {', '.join(failed)}")


async def deliver_once(
    pool: asyncpg.Pool,
    adapter: Adapter,
    lead: StoredLead,
    message: LeadCapturedMessage,
    *,
    attempt: int,
    max_attempts: int,
) -> Result:
    ids = {"leadgen_id": lead.leadgen_id, "adapter": adapter.name, "attempt": attempt}
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "insert into crm_deliveries (leadgen_id, adapter) values ($1, $2) on conflict do nothing",
            lead.leadgen_id, adapter.name,
        )
        row = await conn.fetchrow(
            "select status from crm_deliveries where leadgen_id = $1 and adapter = $2 for update skip locked",
            lead.leadgen_id, adapter.name,
        )
        if row is None:
            return Result(Outcome.BUSY)
        if row["status"] == "delivered":
            logger.info("already delivered to %s: not repeated", adapter.name, extra=ids)
            metrics.DELIVERIES.labels(adapter.name, "duplicate").inc()
            return Result(Outcome.ALREADY_DELIVERED)
        if row["status"] == "failed" and attempt > 1:
            return Result(Outcome.FAILED)  # failed earlier in this message's retries; alerted then
        started = time.perf_counter()
        try:
            reference = await adapter.deliver(lead)
        except DeliveryFailure as failure:
            metrics.DELIVERY_SECONDS.labels(adapter.name).observe(time.perf_counter() - started)
            final = not failure.transient or attempt >= max_attempts
            await conn.execute(
                "update crm_deliveries set status = $3, attempts = attempts + 1, last_error = $4, "
                "updated_at = now() where leadgen_id = $1 and adapter = $2",
                lead.leadgen_id, adapter.name, "failed" if final else "retrying", failure.reason,
            )
            metrics.DELIVERIES.labels(adapter.name, "failed" if final else "retry").inc()
            if final:
                why = failure.reason if not failure.transient else f"{failure.reason} after {attempt} attempts"
                await enqueue(conn, _alert(message, why, adapter.name))
                logger.error("delivery to %s failed for good: %s", adapter.name, why, extra=ids)
                return Result(Outcome.FAILED, failure)
            logger.warning("delivery to %s failed, will retry: %s", adapter.name, failure.reason, extra=ids)
            return Result(Outcome.RETRY, failure)
        metrics.DELIVERY_SECONDS.labels(adapter.name).observe(time.perf_counter() - started)
        await conn.execute(
            "update crm_deliveries set status = 'delivered', attempts = attempts + 1, last_error = null, "
            "crm_reference = $3, delivered_at = now(), updated_at = now() where leadgen_id = $1 and adapter = $2",
            lead.leadgen_id, adapter.name, reference,
        )
        await enqueue(conn, LeadSyncedMessage.new(
            LeadSynced(leadgen_id=lead.leadgen_id, adapter=adapter.name, crm_reference=reference), caused_by=message
        ))
    metrics.DELIVERIES.labels(adapter.name, "delivered").inc()
    logger.info("delivered to %s", adapter.name, extra={**ids, "crm_reference": reference})
    return Result(Outcome.DELIVERED)


async def _mark_skipped(pool: asyncpg.Pool, leadgen_id: str) -> None:
    await pool.execute(
        "insert into crm_deliveries (leadgen_id, adapter, status) values ($1, $2, 'skipped') on conflict do nothing",
        leadgen_id, NO_ADAPTER,
    )
    metrics.DELIVERIES.labels(NO_ADAPTER, "skipped").inc()


def _alert(message: LeadCapturedMessage, reason: str, adapter: str | None) -> AlertRaisedMessage:
    target = adapter or "the CRM"
    return AlertRaisedMessage.new(
        AlertRaised(
            severity="critical",
            code="crm_delivery_failed",
            summary=f"Lead {message.payload.leadgen_id} was not delivered to {target}: {reason}.",
            service="crm_sync",
            subject=message.payload.leadgen_id,
            fix=PARKED_FIX,
        ),
        caused_by=message,
    )


async def _raise_alert(pool: asyncpg.Pool, message: LeadCapturedMessage, reason: str, adapter: str | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, _alert(message, reason, adapter))
