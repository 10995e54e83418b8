"""The rules engine's consumers: thin; evaluation is in `engine.py`, SQL in `store.py`, delivery in `notify.py`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from contracts.alerts import AlertRaised
from contracts.messages import (
    AlertRaisedMessage,
    CommandResultMessage,
    ConversionRequestedMessage,
    InsightsUpdatedMessage,
)
from services.rules_engine import store
from services.rules_engine.engine import SERVICE, RulesEngine
from services.rules_engine.notify import CHANNELS, ChannelError, Notifier, raise_for
from shared.messaging import claim
from shared.outbox import enqueue
from shared.service import Service
from shared.topology import consumer

logger = logging.getLogger(__name__)

INSIGHTS_UPDATED = consumer("rules_engine", "insights_updated")
CRM_OUTCOMES = consumer("rules_engine", "crm_outcomes")
COMMAND_RESULTS = consumer("rules_engine", "command_results")
ALERTS = consumer("rules_engine", "alerts")


def register(service: Service, engine_of: Callable[[], RulesEngine], notifier: Notifier) -> None:
    """Subscribe the four handlers of the rules engine on `service` (`engine_of` builds the engine after start)."""

    @service.subscribe(INSIGHTS_UPDATED)
    async def handle_insights_updated(message: InsightsUpdatedMessage) -> None:
        account = message.payload.account_id
        logger.info("insights updated for %s: evaluating", account,
                    extra={"message_id": str(message.message_id), "account_id": account})
        await engine_of().run(trigger="insights_updated", accounts=[account], caused_by=message,
                         claim_as=INSIGHTS_UPDATED.queue_name)

    @service.subscribe(CRM_OUTCOMES)
    async def handle_crm_outcome(message: ConversionRequestedMessage) -> None:
        event = message.payload
        if not event.user.lead_id:
            return  # not attributable to an ad: nothing for the rules
        value = event.custom_data.value if event.custom_data else None
        currency = event.custom_data.currency if event.custom_data else None
        async with service.db.acquire() as conn, conn.transaction():
            if not await claim(conn, CRM_OUTCOMES.queue_name, message.message_id):
                return
            new = await store.record_crm_outcome(
                conn, lead_id=event.user.lead_id, event_name=event.event_name,
                event_time=datetime.fromtimestamp(event.event_time, UTC), value=value, currency=currency,
                message_id=message.message_id,
            )
        logger.info("CRM outcome %s %s", event.event_name, "recorded" if new else "already known",
                    extra={"message_id": str(message.message_id), "event_name": event.event_name})

    @service.subscribe(COMMAND_RESULTS)
    async def handle_command_result(message: CommandResultMessage) -> None:
        result = message.payload
        if result.status == "dry_run":
            return
        async with service.db.acquire() as conn, conn.transaction():
            if not await claim(conn, COMMAND_RESULTS.queue_name, message.message_id):
                return
            action = await store.action_for_command(conn, result.command_id)
            if action is None:
                return  # a command some other system sent
            await store.record_result(conn, result.command_id, result.status, result.detail, message.occurred_at)
            ok = result.status == "ok"
            detail = result.detail or (result.meta_error.message if result.meta_error else "") or result.status
            failures, opened = await store.update_breaker(
                conn, action["rule"], ok=ok, detail=f"{result.status}: {detail}",
                threshold=engine_of().engine_settings.circuit_breaker_failures,
            )
            if opened:
                await enqueue(conn, AlertRaisedMessage.new(AlertRaised(
                    severity="critical", code="rule_circuit_open", service=SERVICE, subject=f"rule {action['rule']}",
                    summary=(f"Rule '{action['rule']}' is suspended after {failures} consecutive failed commands; "
                             f"last: {result.status} ({result.guardrail or 'meta'})."),
                    fix=f"Check the rule and the executor's results, then run `leadwire rules reset {action['rule']}`.",
                ), caused_by=message))
        log = logger.info if ok else logger.warning
        log("command %s of rule %s: %s (%d consecutive failures)", result.command_id, action["rule"], result.status,
            failures, extra={"command_id": str(result.command_id), "rule": action["rule"]})

    @service.subscribe(ALERTS)
    async def handle_alert(message: AlertRaisedMessage) -> None:
        async with service.db.acquire() as conn:
            route = await store.notification_route(conn, message.message_id)
            done = await store.delivered_channels(conn, message.message_id)
        channels = list(route["channels"]) if route is not None else list(CHANNELS)
        email_to = list(route["email_to"]) if route is not None else []
        errors: list[ChannelError] = []
        for channel in notifier.configured(channels):
            if channel in done:
                continue
            try:
                await notifier.send(channel, message.payload, email_to=email_to)
            except ChannelError as exc:
                logger.warning("notification channel failed: %s", exc, extra={"message_id": str(message.message_id)})
                errors.append(exc)
                continue
            async with service.db.acquire() as conn:
                await store.mark_delivered(conn, message.message_id, channel)
        raise_for(errors)
