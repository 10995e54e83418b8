"""The campaign_executor service: composition root.

Consumes `CampaignCommand` (routing key `campaign.command`), applies it to Meta through the Graph client, records
it in `campaign_commands`, and publishes a `CommandResult` through the outbox.
"""

from __future__ import annotations

from contracts.messages import CommandResultMessage
from services.campaign_executor.audience_jobs import scheduled_syncs
from services.campaign_executor.handlers import register
from services.campaign_executor.settings import ExecutorSettings
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("campaign_executor", settings, uses_graph=True)
    config = service.settings.block(ExecutorSettings)
    # Results leave through the outbox (atomic with the audit row); this publisher documents the channel.
    service.publisher(CommandResultMessage)
    register(service, service.settings.block(BudgetGuardrailSettings), max_wait=config.graph_max_wait_seconds,
             audiences_file=config.audiences_file or None)
    service.relay_outbox()
    if config.audiences_file and config.audiences_sync_interval_seconds > 0:

        async def audience_syncs() -> None:
            await scheduled_syncs(service.db, config.audiences_file, config.audiences_sync_interval_seconds)

        service.background("audience_syncs", audience_syncs)
    return service
