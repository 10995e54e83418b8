"""The rules_engine service: composition root.

Consumers: `InsightsUpdated` (evaluate that account), `ConversionRequested` (CRM outcomes read model),
`CommandResult` (announce the result, circuit breaker), `AlertRaised` (notifications: log, Slack, e-mail),
`RuleConsentChanged` (enable a rule or put it back in shadow mode) and `RuleDecisionReviewed` (approve or reject a
shadow decision). Background jobs: the scheduled
evaluation of every account (RULES_INTERVAL_SECONDS; also wakes for pause-for-today resumes), the outbox relay
that publishes the `CampaignCommand`s and notifications after their audit rows committed, and the hourly pruning of
skipped decisions older than RULES_SKIPPED_RETENTION_DAYS.
"""

from __future__ import annotations

from contracts.messages import AlertRaisedMessage, CampaignCommandMessage
from services.rules_engine import handlers
from services.rules_engine.model import EngineSettings
from services.rules_engine.notify import Notifier
from services.rules_engine.settings import NotifySettings, RulesSettings
from services.rules_engine.worker import Worker
from shared.service import Service
from shared.settings import BudgetGuardrailSettings, Settings


def create_app(settings: Settings | None = None, *, engine_settings: EngineSettings | None = None) -> Service:
    service = Service("rules_engine", settings)
    config = service.settings.block(RulesSettings)
    limits = service.settings.block(BudgetGuardrailSettings)
    notifier = Notifier(service.settings.block(NotifySettings))

    def dependencies(started: Service) -> handlers.Deps:  # runs in start(), once the pool is open
        meta = started.settings.meta
        return handlers.Deps(worker=Worker(
            started.db, config, limits, notifier, engine_settings=engine_settings,
            only_accounts=meta.ad_account_id, rules_dirs=meta.rules_dirs(), ceilings=meta.budget_ceilings(),
            reminder_seconds=started.settings.broker.alert_reminder_minutes * 60,
        ))

    handlers.register(service, service.on_started(dependencies), interval_seconds=config.interval_seconds)
    # Commands and notifications leave through the outbox (atomic with the audit rows); these document the channels.
    service.publisher(CampaignCommandMessage, "What a rule decided to change (pause, unpause, budget).")
    service.publisher(AlertRaisedMessage, "A rule's command was applied or failed (its one-sentence explanation), "
                                          "a rule in shadow mode would act, a rule was enabled or put in shadow "
                                          "mode, a rule file is broken, or a rule's circuit breaker opened.")
    service.relay_outbox()
    return service
