"""The insights_poller service: composition root.

Background jobs: the scheduled refresh of every ad account in META_AD_ACCOUNT_ID (objects + ad-level daily
insights into PostgreSQL, `InsightsUpdated` per refresh) and the outbox relay that publishes those messages and
`AlertRaised` after commit. On demand: `leadwire insights refresh` (services/insights_poller/cli.py).
"""

from __future__ import annotations

import logging

from contracts.messages import AlertRaisedMessage, InsightsUpdatedMessage
from services.insights_poller.poller import InsightsPoller
from services.insights_poller.settings import InsightsSettings
from shared.service import Service
from shared.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Service:
    service = Service("insights_poller", settings, uses_graph=True)
    config = service.settings.block(InsightsSettings)
    accounts = service.settings.meta.ad_account_id

    async def refresh_periodically() -> None:
        if not accounts:
            logger.warning("META_AD_ACCOUNT_ID is empty: no insights are refreshed")
            return
        assert service.graph is not None
        await InsightsPoller(service.db, service.graph, config, accounts).run_forever()

    service.relay_outbox()
    if config.interval_seconds > 0:
        service.background("insights_refresh", refresh_periodically)
    # Publishers declared for the AsyncAPI document; messages themselves leave through the outbox relay.
    service.publisher(InsightsUpdatedMessage, "Stored insights of an ad account were replaced for a date window.")
    service.publisher(AlertRaisedMessage, "An ad account's insights refresh failed (insights_account_failed).")
    return service
