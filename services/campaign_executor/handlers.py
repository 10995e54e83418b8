"""The campaign executor's handler and background job: thin; the work is in `worker.py` and `audience_jobs.py`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.messages import CampaignCommandMessage
from services.campaign_executor.audience_jobs import scheduled_syncs
from shared.topology import consumer

if TYPE_CHECKING:
    import asyncpg

    from services.campaign_executor.worker import Worker
    from shared.service import Service, Started

logger = logging.getLogger(__name__)

CONSUMER = consumer("campaign_executor", "campaign_command")


@dataclass(frozen=True)
class Deps:
    """What the handler and the audience syncs use, built once the service started (`Service.on_started`)."""

    worker: Worker
    db: asyncpg.Pool  # the scheduled audience syncs enqueue their commands through it


def register(
    service: Service, deps: Started[Deps], *, audiences_file: str | None = None, audience_sync_interval: float = 0.0
) -> None:
    """Subscribe `handle_campaign_command` on the executor's queue and, with an audiences file and an interval,
    the scheduled audience syncs."""

    @service.subscribe(CONSUMER)
    async def handle_campaign_command(message: CampaignCommandMessage) -> None:
        command = message.payload.root
        logger.info("received %s command %s", command.kind, command.command_id,
                    extra={"message_id": str(message.message_id), "command_id": str(command.command_id)})
        await deps().worker.execute(message)

    if audiences_file and audience_sync_interval > 0:

        async def audience_syncs() -> None:
            await scheduled_syncs(deps().db, audiences_file, audience_sync_interval)

        service.background("audience_syncs", audience_syncs)
