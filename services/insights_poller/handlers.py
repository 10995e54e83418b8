"""The insights poller's entry point: the scheduled refresh (a background job). Thin: the work is
`worker.Worker`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.insights_poller.worker import Worker
    from shared.service import Service, Started

logger = logging.getLogger(__name__)


def register(service: Service, poller: Started[Worker], *, enabled: bool) -> None:
    """Add the scheduled refresh of every configured ad account (when `enabled`: INSIGHTS_INTERVAL_SECONDS > 0)."""

    async def refresh_periodically() -> None:
        if not poller().accounts:
            logger.warning("META_AD_ACCOUNT_ID is empty: no insights are refreshed")
            return
        await poller().run_forever()

    if enabled:
        service.background("insights_refresh", refresh_periodically)
