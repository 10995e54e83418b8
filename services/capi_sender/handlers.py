"""The capi_sender's entry points: one batch handler, whose messages are acked once Meta accepted their batches, and
two background jobs (flush every batch on stop, prune the send log). Thin: the work is `worker.Worker`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.messages import ConversionRequestedMessage
from services.capi_sender import store
from services.capi_sender.logic import SendOutcome

if TYPE_CHECKING:
    import asyncpg

    from services.capi_sender.worker import Worker
    from shared.service import Service, Started
    from shared.topology import Consumer

logger = logging.getLogger(__name__)

# Messages per handler call: one full request's worth, so one consumer batch can fill one Meta request.
MAX_BATCH = 1000
# A consumer batch goes to the handler this long after its first message even if not full; the sender's own
# per-pixel batcher then waits up to CAPI_LINGER_MS for more events of the same pixel.
CONSUMER_LINGER_SECONDS = 0.05
# Unacknowledged messages in flight: four consumer batches, so requests can be in flight while more arrive.
PREFETCH = 4 * MAX_BATCH
# How often the capi_sender prunes its send log.
PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class Deps:
    """What the handler and jobs use, built once the service started (`Service.on_started`)."""

    sender: Worker
    pool: asyncpg.Pool


def register(service: Service, deps: Started[Deps], source: Consumer) -> None:
    """Subscribe the handler on `source` (the `conversion.requested` consumer; tests pass their own); add the jobs."""

    @service.subscribe_batch(source, max_batch=MAX_BATCH, linger=CONSUMER_LINGER_SECONDS, prefetch=PREFETCH)
    async def handle_conversion_requested(messages: list[ConversionRequestedMessage]) -> list[BaseException | None]:
        # Per message: PermanentError (parked with the reason), RetryLater or another error (retried), or an
        # outcome (acked once the batch it went in was accepted by Meta and recorded).
        results = await deps().sender.process_many(messages)
        duplicates = [m for m, r in zip(messages, results, strict=True) if r is SendOutcome.DUPLICATE]
        for message in duplicates:
            logger.info(
                "conversion already sent, not sent again",
                extra={"message_id": str(message.message_id), "event_name": message.payload.event_name},
            )
        return [r if isinstance(r, BaseException) else None for r in results]

    async def flush_on_stop() -> None:
        await deps().sender.flush_on_stop()

    async def prune_periodically() -> None:
        while True:
            await store.prune_send_log(deps().pool)
            await asyncio.sleep(PRUNE_INTERVAL_SECONDS)

    service.background("flush_on_stop", flush_on_stop)
    service.background("prune_send_log", prune_periodically)
