"""The funnel's first stage: each captured lead sent to the Conversions API as the CRM event "Lead".

Meta's Conversion Leads integration wants every stage of the CRM funnel, starting from the lead itself
(docs/meta-api.md §8.7): `event_name` "Lead", `action_source` "system_generated", `custom_data.event_source`
"crm" and `lead_event_source` (CAPI_CRM_NAME, default leadwire), `user_data.lead_id`. capi_sender consumes
`LeadCaptured` on a queue of its own (CAPI_SEND_LEAD_STAGE, on by default) and sends it like any CRM stage: the
stored lead's identifiers added, batched per pixel, once per lead (event id `lead-<leadgen_id>`, message id derived
from the lead id, so the webhook and the backfill reading the same lead send it once). Organic leads and leads older
than Meta's 7-day window (a backfill of old leads) are acknowledged without sending: Meta would refuse them.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from contracts.conversions import ActionSource, ConversionRequested, ConversionUser
from contracts.messages import ConversionRequestedMessage, LeadCapturedMessage
from services.capi_sender.events import MAX_EVENT_AGE_SECONDS

if TYPE_CHECKING:
    from services.capi_sender.handlers import Deps
    from shared.service import Service, Started
    from shared.topology import Consumer

logger = logging.getLogger(__name__)

LEAD_STAGE_NAMESPACE = uuid.UUID("3c1b7e52-9a4d-4f0e-8b6a-5d2c9e7f1a30")
EVENT_NAME = "Lead"
# Leads this close to Meta's 7-day limit are not sent: they would be refused by the time their batch goes.
AGE_MARGIN_SECONDS = 3600
MAX_BATCH = 500


def lead_stage_event(message: LeadCapturedMessage, *, now: float) -> ConversionRequestedMessage | None:
    """The "Lead" stage of a captured lead, or None when Meta would not take it (organic, too old)."""
    lead = message.payload
    created = int(lead.created_time.timestamp())
    if lead.is_organic or now - created > MAX_EVENT_AGE_SECONDS - AGE_MARGIN_SECONDS:
        return None
    payload = ConversionRequested(
        event_name=EVENT_NAME,
        event_time=min(created, int(now)),
        event_id=f"lead-{lead.leadgen_id}",
        action_source=ActionSource.SYSTEM_GENERATED,
        user=ConversionUser(lead_id=lead.leadgen_id),
    )
    return ConversionRequestedMessage.new(
        payload, message_id=uuid.uuid5(LEAD_STAGE_NAMESPACE, lead.leadgen_id), caused_by=message
    )


def register(service: Service, deps: Started[Deps], source: Consumer) -> None:
    """Subscribe the LeadCaptured batch handler on `source`."""

    @service.subscribe_batch(source, max_batch=MAX_BATCH, linger=0.05, prefetch=2 * MAX_BATCH)
    async def handle_lead_captured(messages: list[LeadCapturedMessage]) -> list[BaseException | None]:
        now = time.time()
        events = [lead_stage_event(m, now=now) for m in messages]
        due = [e for e in events if e is not None]
        skipped = len(events) - len(due)
        if skipped:
            logger.info("%d captured leads not sent as the Lead stage (organic, or older than Meta's window)", skipped)
        results = iter(await deps().sender.process_many(due)) if due else iter(())
        return [None if e is None else _error(next(results)) for e in events]


def _error(result: object) -> BaseException | None:
    return result if isinstance(result, BaseException) else None
