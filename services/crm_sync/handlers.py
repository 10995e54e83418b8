"""crm_sync's entry point: the LeadCaptured handler. Thin: the work is `worker.Worker` (one message)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from contracts.messages import LeadCapturedMessage
from shared.messaging import first_failure
from shared.poison import parse_attempt
from shared.topology import H_ATTEMPT

if TYPE_CHECKING:
    import aiohttp

    from services.crm_sync.worker import Worker
    from shared.service import Service, Started
    from shared.topology import Consumer


@dataclass(frozen=True)
class Deps:
    """What the handler uses, built once the service started (`Service.on_started`)."""

    sync: Worker
    http: aiohttp.ClientSession  # the CRM adapters' session (its own timeout), closed on stop


def register(service: Service, deps: Started[Deps], lead_consumer: Consumer, *, prefetch: int) -> None:
    """Subscribe the LeadCaptured handler on `lead_consumer`."""

    @service.subscribe(lead_consumer, prefetch=prefetch)
    async def handle_lead_captured(message: LeadCapturedMessage) -> None:
        # The attempt header is read from the context here, not injected: an injected `Context(...)` argument is
        # resolved in a worker thread per message, and a second argument turns off the envelope decoder.
        headers = service.broker.context.get_local("message").headers or {}
        await deps().sync(message, attempt=parse_attempt(headers.get(H_ATTEMPT, 1)),
                          max_attempts=service.settings.broker.retry_attempts,
                          expired=service.retry_policy.expired(first_failure(headers)))
