"""Handling one LeadgenReceived: skip if stored, read from Meta (batched), store with its LeadCaptured."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from services.lead_fetcher import store
from services.lead_fetcher.logic import access_alert, access_alert_code, lead_is_expired, parse_lead, read_failure
from shared.graph import GraphError
from shared.messaging import PermanentError

if TYPE_CHECKING:
    import asyncpg

    from contracts.messages import LeadgenReceivedMessage
    from services.lead_fetcher.reader import LeadReader
    from services.lead_fetcher.settings import LeadFetcherSettings

logger = logging.getLogger(__name__)


@dataclass
class LeadCapture:
    """The handler's dependencies; `__call__` handles one message."""

    pool: asyncpg.Pool
    reader: LeadReader
    settings: LeadFetcherSettings

    async def __call__(self, message: LeadgenReceivedMessage) -> None:
        p = message.payload
        ids = {"leadgen_id": p.leadgen_id, "page_id": p.page_id, "message_id": str(message.message_id)}
        stored = await store.ensure_captured(self.pool, p.leadgen_id, caused_by=message)
        if stored is not None:  # duplicate webhook or a lead the backfill got first: no Graph call
            logger.info("lead already stored%s", "; LeadCaptured re-enqueued" if stored else "", extra=ids)
            return
        try:
            raw = await self.reader.read(p.leadgen_id, p.page_id)
        except GraphError as exc:
            await self._alert_if_access(exc, message)
            raise read_failure(exc, p.leadgen_id, access_retry_seconds=self.settings.access_retry_seconds,
                               expired=lead_is_expired(p.created_time, datetime.now(UTC))) from None
        try:
            lead = parse_lead(raw, page_id=p.page_id, source=p.source, leadgen_id=p.leadgen_id)
        except ValueError as exc:
            raise PermanentError(f"lead {p.leadgen_id}: Meta's answer is unusable: {exc}") from None
        async with self.pool.acquire() as conn:
            new = await store.store_lead(conn, lead, caused_by=message)
        logger.info("lead captured" if new else "lead already stored (concurrent copy)",
                    extra={**ids, "form_id": lead.form_id, "source": p.source})

    async def _alert_if_access(self, exc: GraphError, message: LeadgenReceivedMessage) -> None:
        code = access_alert_code(exc)
        if code is None:
            return
        page_id = message.payload.page_id
        await store.raise_alert_once(self.pool, access_alert(code, page_id, exc),
                                     repeat_seconds=self.settings.alert_repeat_seconds, caused_by=message)
