"""The campaign executor's one handler: thin; the work is in `executor.py`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from contracts.messages import CampaignCommandMessage
from services.campaign_executor.executor import Executor
from shared.service import Service
from shared.topology import consumer

logger = logging.getLogger(__name__)

CONSUMER = consumer("campaign_executor", "campaign_command")


def register(service: Service, executor_of: Callable[[], Executor]) -> None:
    """Subscribe `handle_campaign_command` on the executor's queue."""

    @service.subscribe(CONSUMER)
    async def handle_campaign_command(message: CampaignCommandMessage) -> None:
        executor: Executor = executor_of()
        command = message.payload.root
        logger.info("received %s command %s", command.kind, command.command_id,
                    extra={"message_id": str(message.message_id), "command_id": str(command.command_id)})
        await executor.execute(message)
