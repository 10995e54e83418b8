"""The capi_sender's entry point: one batch handler, whose messages are acked once Meta accepted their batches."""

from __future__ import annotations

import logging

from contracts.messages import ConversionRequestedMessage
from services.capi_sender.logic import CapiSender, Outcome
from shared.service import Service
from shared.topology import Consumer

logger = logging.getLogger(__name__)

# Messages per handler call: one full request's worth, so one consumer batch can fill one Meta request.
MAX_BATCH = 1000
# A consumer batch goes to the handler this long after its first message even if not full; the sender's own
# per-pixel batcher then waits up to CAPI_LINGER_MS for more events of the same pixel.
CONSUMER_LINGER_SECONDS = 0.05
# Unacknowledged messages in flight: four consumer batches, so requests can be in flight while more arrive.
PREFETCH = 4 * MAX_BATCH


def register(service: Service, sender: CapiSender, source: Consumer) -> None:
    """Subscribe the handler on `source` (the `conversion.requested` consumer; tests pass their own)."""

    @service.subscribe_batch(source, max_batch=MAX_BATCH, linger=CONSUMER_LINGER_SECONDS, prefetch=PREFETCH)
    async def handle_conversion_requested(messages: list[ConversionRequestedMessage]) -> list[BaseException | None]:
        # Per message: PermanentError (parked with the reason), RetryLater or another error (retried), or an
        # outcome (acked once the batch it went in was accepted by Meta and recorded).
        results = await sender.process_many(messages)
        duplicates = [m for m, r in zip(messages, results, strict=True) if r is Outcome.DUPLICATE]
        for message in duplicates:
            logger.info(
                "conversion already sent, not sent again",
                extra={"message_id": str(message.message_id), "event_name": message.payload.event_name},
            )
        return [r if isinstance(r, BaseException) else None for r in results]
