"""The insights_poller service: composition root.

Background jobs: the scheduled refresh of every ad account in META_AD_ACCOUNT_ID (objects + ad-level daily
insights into PostgreSQL, `InsightsUpdated` per refresh) and the outbox relay that publishes those messages and
`AlertRaised` after commit. On demand: `leadwire insights refresh` (services/insights_poller/cli.py).
"""

from __future__ import annotations

from contracts.messages import AlertRaisedMessage, InsightsUpdatedMessage
from services.insights_poller import handlers
from services.insights_poller.settings import InsightsSettings
from services.insights_poller.worker import Worker
from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("insights_poller", settings, uses_graph=True)
    config = service.settings.block(InsightsSettings)
    accounts = service.settings.meta.ad_account_id

    def dependencies(started: Service) -> Worker:
        return Worker(started.db, started.graph_client, config, accounts)

    handlers.register(service, service.on_started(dependencies), enabled=config.interval_seconds > 0)
    service.relay_outbox()
    # Publishers declared for the AsyncAPI document; messages themselves leave through the outbox relay.
    service.publisher(InsightsUpdatedMessage, "Stored insights of an ad account were replaced for a date window.")
    service.publisher(AlertRaisedMessage, "An ad account's insights refresh failed (insights_account_failed).")
    return service
