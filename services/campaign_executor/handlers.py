"""The campaign executor's one handler: thin; the work is in `worker.py`."""

from __future__ import annotations

import logging
from functools import cache

from contracts.messages import CampaignCommandMessage
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.meta_reads import MetaReads
from services.campaign_executor.worker import Worker
from shared.service import Service
from shared.settings import BudgetGuardrailSettings
from shared.topology import consumer

logger = logging.getLogger(__name__)

CONSUMER = consumer("campaign_executor", "campaign_command")


def register(
    service: Service, limits: BudgetGuardrailSettings, *, max_wait: float, audiences_file: str | None = None
) -> None:
    """Subscribe `handle_campaign_command` on the executor's queue (the worker is built after start)."""

    @cache
    def worker() -> Worker:
        # The pool and the Graph client exist only after start: the worker is built on first use.
        if service.graph is None:
            raise RuntimeError("campaign_executor: Graph client used before start")
        meta = service.settings.meta
        context = CommandContext(service.graph, MetaReads(service.graph, max_wait=max_wait), limits,
                                 audiences_file=audiences_file, ceilings=service.settings.meta.budget_ceilings(),
                                 page_token=meta.page_access_token if meta.page_access_token.get_secret_value()
                                 else None,
                                 page_ids=tuple(meta.page_ids))
        return Worker(service.db, context, consumer_name=CONSUMER.queue_name)

    @service.subscribe(CONSUMER)
    async def handle_campaign_command(message: CampaignCommandMessage) -> None:
        command = message.payload.root
        logger.info("received %s command %s", command.kind, command.command_id,
                    extra={"message_id": str(message.message_id), "command_id": str(command.command_id)})
        await worker().execute(message)
