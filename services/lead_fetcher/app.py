"""The lead_fetcher service: composition root.

Consumes `LeadgenReceived`, reads each lead from Meta with the Page token (concurrent reads share Graph batch
calls), stores it in `leads` and emits `LeadCaptured` through the outbox in the same transaction. Background
jobs: the outbox relay, and the periodic backfill that captures leads whose webhook never came.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import SecretStr

from contracts.messages import AlertRaisedMessage, LeadCapturedMessage, LeadgenReceivedMessage
from services.lead_fetcher.backfill import run_backfill
from services.lead_fetcher.handlers import LeadCapture
from services.lead_fetcher.reader import LeadReader
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.graph import GraphClient
from shared.logging import correlation_scope
from shared.service import Service
from shared.settings import MetaSettings, Settings
from shared.topology import Consumer, consumer

logger = logging.getLogger(__name__)


def page_token(meta: MetaSettings) -> SecretStr:
    """Lead data needs a Page (or system-user) token: META_PAGE_ACCESS_TOKEN, else META_ACCESS_TOKEN."""
    return meta.page_access_token if meta.page_access_token.get_secret_value() else meta.access_token


def create_app(settings: Settings | None = None, *, leadgen_consumer: Consumer | None = None) -> Service:
    """Build the service; `leadgen_consumer` swaps the LeadgenReceived queue (tests use a private one)."""
    service = Service("lead_fetcher", settings, uses_graph=True)
    config = service.settings.block(LeadFetcherSettings)
    token = page_token(service.settings.meta)
    capture: list[LeadCapture] = []  # built on first use: the pool and Graph client exist only after start

    def graph() -> GraphClient:
        if service.graph is None:
            raise RuntimeError("lead_fetcher: Graph client used before start")
        return service.graph

    def lead_capture() -> LeadCapture:
        if not capture:
            reader = LeadReader(graph, token, window_seconds=config.fetch_batch_window_ms / 1000.0)
            capture.append(LeadCapture(service.db, reader, config))
        return capture[0]

    async def capture_one(message: LeadgenReceivedMessage) -> None:
        with correlation_scope(str(message.correlation_id)):
            await lead_capture()(message)

    # Batch consumption (shared/batch_consumer.py): no per-message FastStream path, one ack per run of finished
    # messages. Each message is still handled on its own (concurrently); they meet in the reader's Graph batch
    # calls and the store's group queries.
    @service.subscribe_batch(leadgen_consumer or consumer("lead_fetcher", "leadgen_received"),
                             max_batch=config.prefetch, linger=config.fetch_batch_window_ms / 1000.0,
                             prefetch=2 * config.prefetch)
    async def handle_leadgen_received(messages: list[LeadgenReceivedMessage]) -> list[BaseException | None]:
        # Per message: None (stored, or a duplicate), or its exception: RetryLater (throttled, access refused),
        # PermanentError (parked with Meta's error), anything else (retried with backoff).
        results = await asyncio.gather(*(capture_one(m) for m in messages), return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def backfill_periodically() -> None:
        pages = service.settings.meta.page_ids
        if not pages:
            logger.warning("META_PAGE_IDS is empty: no backfill, a lead whose webhook is lost stays lost")
            return
        while True:
            await run_backfill(service.db, graph(), page_ids=pages, token=token, settings=config)
            await asyncio.sleep(config.backfill_interval_seconds)

    service.relay_outbox()
    if service.settings.meta.health_check_seconds > 0:
        service.monitor_meta_health(service.settings.meta.health_check_seconds)
    if config.backfill_interval_seconds > 0:
        service.background("lead_backfill", backfill_periodically)
    # Publishers declared for the AsyncAPI document; messages themselves leave through the outbox relay.
    service.publisher(LeadCapturedMessage, "A lead was fetched and stored (sent through the outbox).")
    service.publisher(AlertRaisedMessage, "Lead reads refused for a Page (token or permission), once per period.")
    return service
