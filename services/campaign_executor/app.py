"""The campaign_executor service: composition root.

Consumes `CampaignCommand` (routing key `campaign.command`), applies it to Meta through the Graph client, records
it in `campaign_commands`, and publishes a `CommandResult` through the outbox.
"""

from __future__ import annotations

from contracts.messages import CommandResultMessage
from services.campaign_executor.executor import Executor
from services.campaign_executor.handlers import CONSUMER, register
from services.campaign_executor.logic import Guardrails
from services.campaign_executor.settings import ExecutorSettings
from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("campaign_executor", settings, uses_graph=True)
    config = service.settings.block(ExecutorSettings)
    guards = Guardrails(
        max_budget_step_pct=config.max_budget_step_pct,
        max_budget_changes_per_hour=config.max_budget_changes_per_hour,
        daily_budget_ceiling_minor=config.daily_budget_ceiling_minor,
    )
    # Results leave through the outbox (atomic with the audit row); this publisher documents the channel.
    service.publisher(CommandResultMessage)
    holder: dict[str, Executor] = {}

    def executor() -> Executor:
        if "executor" not in holder:
            if service.graph is None:
                raise RuntimeError("campaign_executor: Graph client used before start")
            holder["executor"] = Executor(service.db, service.graph, guards, consumer_name=CONSUMER.queue_name,
                                          max_wait=config.graph_max_wait_seconds)
        return holder["executor"]

    register(service, executor)

    service.relay_outbox()
    return service
