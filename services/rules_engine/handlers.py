"""The rules engine's consumers, its scheduled evaluation and the hourly pruning of old skipped decisions: thin;
the work is in `worker.py`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.messages import (
    AlertRaisedMessage,
    CommandResultMessage,
    ConversionRequestedMessage,
    InsightsUpdatedMessage,
    RuleConsentChangedMessage,
    RuleDecisionReviewedMessage,
)
from shared.topology import consumer

if TYPE_CHECKING:
    from services.rules_engine.worker import Worker
    from shared.service import Service, Started

logger = logging.getLogger(__name__)

INSIGHTS_UPDATED = consumer("rules_engine", "insights_updated")
CRM_OUTCOMES = consumer("rules_engine", "crm_outcomes")
COMMAND_RESULTS = consumer("rules_engine", "command_results")
ALERTS = consumer("rules_engine", "alerts")
RULE_CONSENT = consumer("rules_engine", "rule_consent")
DECISION_REVIEWS = consumer("rules_engine", "decision_reviews")

# How often the rules engine deletes old skipped decisions (RULES_SKIPPED_RETENTION_DAYS).
PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass(frozen=True)
class Deps:
    """What the handlers and the scheduled evaluation use, built once the service started (`Service.on_started`)."""

    worker: Worker


def register(service: Service, deps: Started[Deps], *, interval_seconds: float) -> None:
    """Subscribe the handlers of the rules engine on `service` and, unless ``interval_seconds`` is 0, the
    scheduled evaluation of every account."""

    @service.subscribe(INSIGHTS_UPDATED)
    async def handle_insights_updated(message: InsightsUpdatedMessage) -> None:
        account = message.payload.account_id
        logger.info("insights updated for %s: evaluating", account,
                    extra={"message_id": str(message.message_id), "account_id": account})
        await deps().worker.run(trigger="insights_updated", accounts=[account], caused_by=message,
                                claim_as=INSIGHTS_UPDATED.queue_name)

    @service.subscribe(CRM_OUTCOMES)
    async def handle_crm_outcome(message: ConversionRequestedMessage) -> None:
        await deps().worker.record_crm_outcome(message, claim_as=CRM_OUTCOMES.queue_name)

    @service.subscribe(COMMAND_RESULTS)
    async def handle_command_result(message: CommandResultMessage) -> None:
        await deps().worker.record_command_result(message, claim_as=COMMAND_RESULTS.queue_name)

    service.guards.independent.add(ALERTS.queue_name)  # announces a database outage while it lasts

    @service.subscribe(ALERTS)
    async def handle_alert(message: AlertRaisedMessage) -> None:
        await deps().worker.deliver_alert(message)

    @service.subscribe(RULE_CONSENT)
    async def handle_rule_consent(message: RuleConsentChangedMessage) -> None:
        worker = deps().worker
        if await worker.change_consent(message, claim_as=RULE_CONSENT.queue_name) and message.payload.enabled:
            await worker.run(trigger="consent")  # an enabled rule acts now, not at the next scheduled run

    @service.subscribe(DECISION_REVIEWS)
    async def handle_decision_review(message: RuleDecisionReviewedMessage) -> None:
        await deps().worker.review_decision(message, claim_as=DECISION_REVIEWS.queue_name)

    async def scheduled_evaluation() -> None:
        await evaluate_periodically(deps, interval_seconds)

    if interval_seconds > 0:
        service.background("scheduled_evaluation", scheduled_evaluation)

    async def prune_decisions() -> None:
        await prune_periodically(deps, PRUNE_INTERVAL_SECONDS)

    service.background("prune_skipped_decisions", prune_decisions)


async def evaluate_periodically(deps: Started[Deps], interval_seconds: float) -> None:
    """The scheduled evaluation: every account, then sleep until the next interval or pause-for-today resume."""
    while True:
        worker = deps().worker
        await worker.run(trigger="schedule")
        await asyncio.sleep(await worker.next_wake(interval_seconds))


async def prune_periodically(deps: Started[Deps], interval_seconds: float) -> None:
    """Delete old skipped decisions now and every ``interval_seconds``; a failure (the database down) is logged and
    tried again at the next interval, never ending the job."""
    while True:
        try:
            await deps().worker.prune_decisions()
        except Exception:
            logger.exception("pruning skipped rule decisions failed; trying again in %.0f s", interval_seconds)
        await asyncio.sleep(interval_seconds)
