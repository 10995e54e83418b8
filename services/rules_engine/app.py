"""The rules_engine service: composition root.

Consumers: `InsightsUpdated` (evaluate that account), `ConversionRequested` (CRM outcomes read model),
`CommandResult` (circuit breaker), `AlertRaised` (notifications: log, Slack, e-mail). Background jobs: the scheduled
evaluation of every account (RULES_INTERVAL_SECONDS; also wakes for pause-for-today resumes) and the outbox relay
that publishes the `CampaignCommand`s and notifications after their audit rows committed.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from contracts.messages import AlertRaisedMessage, CampaignCommandMessage
from services.rules_engine import store
from services.rules_engine.engine import RulesEngine
from services.rules_engine.handlers import register
from services.rules_engine.model import EngineSettings
from services.rules_engine.notify import Notifier
from services.rules_engine.settings import NotifySettings, RulesSettings
from shared.service import Service
from shared.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, engine_settings: EngineSettings | None = None) -> Service:
    service = Service("rules_engine", settings)
    config = service.settings.block(RulesSettings)
    notifier = Notifier(service.settings.block(NotifySettings))
    holder: dict[str, RulesEngine] = {}

    def engine() -> RulesEngine:
        # The pool exists only after start; the engine is built on first use.
        if "engine" not in holder:
            holder["engine"] = RulesEngine(service.db, config, engine_settings=engine_settings,
                                           only_accounts=service.settings.meta.ad_account_id)
        return holder["engine"]

    register(service, engine, notifier)
    # Commands and notifications leave through the outbox (atomic with the audit rows); these document the channels.
    service.publisher(CampaignCommandMessage, "What a rule decided to change (pause, unpause, budget).")
    service.publisher(AlertRaisedMessage, "A rule acted (its one-sentence explanation), a rule file is broken, "
                                          "or a rule's circuit breaker opened.")

    async def evaluate_periodically() -> None:
        while True:
            await engine().run(trigger="schedule")
            wait = config.interval_seconds
            async with service.db.acquire() as conn:
                resume = await store.next_resume_at(conn, datetime.now(UTC))
            if resume is not None:
                # Pause-for-today ends at the account's midnight: wake up for it, not up to an interval later.
                wait = min(wait, max(1.0, (resume - datetime.now(UTC)).total_seconds() + 1.0))
            await asyncio.sleep(wait)

    service.relay_outbox()
    if config.interval_seconds > 0:
        service.background("scheduled_evaluation", evaluate_periodically)
    return service
