"""The capi_sender's entry point: one handler, which waits until Meta accepted the batch its event went in."""

from __future__ import annotations

import logging

from contracts.messages import ConversionRequestedMessage
from services.capi_sender.logic import CapiSender, Outcome
from shared.service import Service
from shared.topology import Consumer

logger = logging.getLogger(__name__)

# Unacknowledged messages in flight: two full batches, so one can fill while the other is being sent.
PREFETCH = 2000


def register(service: Service, sender: CapiSender, source: Consumer) -> None:
    """Subscribe the handler on `source` (the `conversion.requested` consumer; tests pass their own)."""

    @service.subscribe(source, prefetch=PREFETCH)
    async def handle_conversion_requested(message: ConversionRequestedMessage) -> None:
        # Raises PermanentError (parked with the reason) or RetryLater / other errors (retried); returning acks.
        outcome = await sender.process(message)
        if outcome is Outcome.DUPLICATE:
            logger.info(
                "conversion already sent, not sent again",
                extra={"message_id": str(message.message_id), "event_name": message.payload.event_name},
            )
