"""The lead fetcher's entry points: the LeadgenReceived batch handler, the RedeliverLead command handler and the
periodic backfill. Thin: the work is in `worker.py` (one message) and `backfill.run_backfill`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.messages import LeadgenReceivedMessage, RedeliverLeadMessage
from services.lead_fetcher import worker
from shared.logging import correlation_scope
from shared.page_tokens import configured_forms_token

if TYPE_CHECKING:
    import asyncpg
    from pydantic import SecretStr

    from services.lead_fetcher.settings import LeadFetcherSettings
    from services.lead_fetcher.worker import Worker
    from shared.graph import GraphClient
    from shared.service import Service, Started
    from shared.topology import Consumer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    """What the handlers use, built once the service started (`Service.on_started`)."""

    capture: Worker
    graph: GraphClient
    pool: asyncpg.Pool


def register(service: Service, deps: Started[Deps], config: LeadFetcherSettings, *, token: SecretStr,
             leadgen_consumer: Consumer, redeliver_consumer: Consumer) -> None:
    """Subscribe the LeadgenReceived and RedeliverLead handlers; add the backfill job (when configured)."""

    async def capture_one(message: LeadgenReceivedMessage) -> None:
        with correlation_scope(str(message.correlation_id)):
            await deps().capture(message)

    # Batch consumption (shared/bulk_consumer.py): no per-message FastStream path, one ack per run of finished
    # messages. Each message is still handled on its own (concurrently); they meet in the reader's Graph batch
    # calls and the store's group queries.
    @service.subscribe_batch(leadgen_consumer, max_batch=config.prefetch,
                             linger=config.fetch_batch_window_ms / 1000.0, prefetch=2 * config.prefetch)
    async def handle_leadgen_received(messages: list[LeadgenReceivedMessage]) -> list[BaseException | None]:
        # Per message: None (stored, or a duplicate), or its exception: RetryLater (throttled, access refused),
        # PermanentError (parked with Meta's error), anything else (retried with backoff).
        results = await asyncio.gather(*(capture_one(m) for m in messages), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    @service.subscribe(redeliver_consumer)
    async def handle_redeliver_lead(message: RedeliverLeadMessage) -> None:
        with correlation_scope(str(message.correlation_id)):
            await worker.redeliver(deps().pool, message)

    async def backfill_periodically() -> None:
        from services.lead_fetcher.backfill import run_backfill

        pages = service.settings.meta.page_ids
        if not pages:
            logger.warning("no Page configured (META_PAGE_IDS, or the accounts' page_ids): no backfill, a lead "
                           "whose webhook is lost stays lost")
            return
        while True:
            await run_backfill(service.db, deps().graph, page_ids=pages, token=token,
                               forms_token=configured_forms_token(service.settings.meta), settings=config)
            await asyncio.sleep(config.backfill_interval_seconds)

    if config.backfill_interval_seconds > 0:
        service.background("lead_backfill", backfill_periodically)

    async def watch_held_capture() -> None:
        interval = min(30.0, config.held_alert_seconds / 5)
        while True:
            await asyncio.sleep(interval)
            deps().capture.check_held()

    service.background("lead_capture_held", watch_held_capture)
