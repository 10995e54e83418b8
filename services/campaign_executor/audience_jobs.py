"""Audience syncs on demand (`leadwire audiences sync`) and on a schedule (EXECUTOR_AUDIENCES_SYNC_INTERVAL_SECONDS).

Both enqueue one `sync_audience` CampaignCommand per definition in the outbox (customer-file audiences first, then
lookalikes, so a seed is synced before its lookalike is tried); the executor's queue does the work with the same
audit, locks and results as every other command. The messages carry definition names only.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg

from contracts.commands import CampaignCommand, SyncAudienceCommand
from contracts.messages import CampaignCommandMessage
from services.campaign_executor.audience_defs import AudienceConfigError, AudienceDefinition, load
from shared.outbox import enqueue_many

logger = logging.getLogger(__name__)


def ordered(definitions: dict[str, AudienceDefinition], names: list[str] | None = None) -> list[str]:
    """Names to sync: customer-file audiences before lookalikes. Raises KeyError for an unknown name."""
    chosen = names or list(definitions)
    for name in chosen:
        if name not in definitions:
            raise KeyError(name)
    return sorted(chosen, key=lambda n: (definitions[n].is_lookalike, n))


def sync_messages(names: list[str], *, requested_by: str, dry_run: bool = False) -> list[CampaignCommandMessage]:
    return [CampaignCommandMessage.new(CampaignCommand(SyncAudienceCommand(
        command_id=uuid.uuid4(), audience=name, requested_by=requested_by, dry_run=dry_run,
        reason=f"keep audience {name} in sync with the CRM"))) for name in names]


async def enqueue_syncs(pool: asyncpg.Pool, messages: list[CampaignCommandMessage]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_many(conn, messages)


async def scheduled_syncs(pool: asyncpg.Pool, audiences_file: str, interval: float) -> None:
    """The executor's background job: every `interval` seconds, a sync of every defined audience."""
    while True:
        try:
            names = ordered(load(audiences_file))
        except AudienceConfigError as exc:
            logger.error("audience sync skipped: %s", exc)
            names = []
        if names:
            await enqueue_syncs(pool, sync_messages(names, requested_by="campaign_executor:schedule"))
            logger.info("audience sync scheduled for %s audiences", len(names))
        await asyncio.sleep(interval)
