"""The campaign_executor service: composition root.

Consumes `CampaignCommand` (routing key `campaign.command`), applies it to Meta through the Graph client, records
it in `campaign_commands`, and publishes a `CommandResult` through the outbox.
"""

from __future__ import annotations

from contracts.messages import CommandResultMessage
from services.campaign_executor.handlers import register
from services.campaign_executor.settings import ExecutorSettings
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("campaign_executor", settings, uses_graph=True)
    config = service.settings.block(ExecutorSettings)
    # Results leave through the outbox (atomic with the audit row); this publisher documents the channel.
    service.publisher(CommandResultMessage)
    register(service, service.settings.block(BudgetGuardrailSettings), max_wait=config.graph_max_wait_seconds)
    service.relay_outbox()
    return service
