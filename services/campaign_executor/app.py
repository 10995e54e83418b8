"""The campaign_executor service: composition root.

Consumes `CampaignCommand` (routing key `campaign.command`), applies it to Meta through the Graph client, records
it in `campaign_commands`, and publishes a `CommandResult` through the outbox.
"""

from __future__ import annotations

from contracts.messages import CommandResultMessage
from services.campaign_executor import handlers
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.meta_reads import MetaReads
from services.campaign_executor.settings import ExecutorSettings
from services.campaign_executor.worker import Worker
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("campaign_executor", settings, uses_graph=True)
    config = service.settings.block(ExecutorSettings)
    limits = service.settings.block(BudgetGuardrailSettings)
    audiences_file = config.audiences_file or None

    def dependencies(started: Service) -> handlers.Deps:  # runs in start(): the pool and the Graph client are open
        graph, meta = started.graph_client, started.settings.meta
        page_token = meta.page_access_token if meta.page_access_token.get_secret_value() else None
        context = CommandContext(graph, MetaReads(graph, max_wait=config.graph_max_wait_seconds), limits,
                                 audiences_file=audiences_file, ceilings=meta.budget_ceilings(),
                                 page_token=page_token, page_ids=tuple(meta.page_ids))
        worker = Worker(started.db, context, consumer_name=handlers.CONSUMER.queue_name)
        return handlers.Deps(worker=worker, db=started.db)

    # Results leave through the outbox (atomic with the audit row); this publisher documents the channel.
    service.publisher(CommandResultMessage)
    handlers.register(service, service.on_started(dependencies), audiences_file=audiences_file,
                      audience_sync_interval=config.audiences_sync_interval_seconds)
    service.relay_outbox()
    return service
