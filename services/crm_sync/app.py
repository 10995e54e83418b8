"""The crm_sync service: composition root. LeadCaptured → the lead's answers from `leads` → each CRM adapter."""

from __future__ import annotations

import logging

import aiohttp

from contracts.messages import AlertRaisedMessage, LeadCapturedMessage, LeadSyncedMessage
from services.crm_sync import logic
from services.crm_sync.adapters import Adapter, GoHighLevelAdapter, WebhookAdapter
from services.crm_sync.mapping import field_map
from services.crm_sync.settings import CrmSyncSettings
from shared.logging import register_secret
from shared.service import Service
from shared.settings import Settings
from shared.topology import H_ATTEMPT, Consumer, consumer

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, lead_consumer: Consumer | None = None) -> Service:
    """Build the service; `lead_consumer` swaps the LeadCaptured queue (tests use a private one)."""
    service = Service("crm_sync", settings)
    crm = service.settings.block(CrmSyncSettings)
    register_secret(crm.crm_webhook_secret.get_secret_value())
    register_secret(crm.ghl_api_token.get_secret_value())
    # Documented publishers (AsyncAPI); the messages themselves leave through the outbox.
    service.publisher(LeadSyncedMessage, "A lead was delivered to one CRM adapter.")
    service.publisher(AlertRaisedMessage, "A lead could not be delivered to a CRM (code crm_delivery_failed).")
    adapters: list[Adapter] = []
    http: list[aiohttp.ClientSession] = []

    @service.app.on_startup
    async def open_adapters() -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=crm.crm_timeout_seconds))
        http.append(session)
        adapters.clear()
        adapters.extend(build_adapters(crm, session))
        if not adapters:
            logger.warning("no CRM adapter configured (CRM_WEBHOOK_URL, GHL_API_TOKEN): leads are recorded as "
                           "skipped, not delivered")
        else:
            logger.info("CRM adapters: %s", ", ".join(a.name for a in adapters))

    @service.app.after_shutdown
    async def close_adapters() -> None:
        while http:
            await http.pop().close()

    sync = logic.LeadSync(lambda: service.db, adapters)

    @service.subscribe(lead_consumer or consumer("crm_sync", "lead_captured"), prefetch=crm.crm_prefetch)
    async def handle_lead_captured(message: LeadCapturedMessage) -> None:
        # The attempt header is read from the context here, not injected: an injected `Context(...)` argument is
        # resolved in a worker thread per message, and a second argument turns off the envelope decoder.
        headers = service.broker.context.get_local("message").headers or {}
        await sync(message, attempt=int(headers.get(H_ATTEMPT, 1)),
                   max_attempts=service.settings.broker.retry_attempts)

    service.relay_outbox()
    return service


def build_adapters(crm: CrmSyncSettings, session: aiohttp.ClientSession) -> list[Adapter]:
    adapters: list[Adapter] = []
    if crm.webhook_enabled:
        adapters.append(WebhookAdapter(session, crm.crm_webhook_url, crm.crm_webhook_secret.get_secret_value(),
                                       field_map(crm.crm_field_map)))
    if crm.gohighlevel_enabled:
        adapters.append(GoHighLevelAdapter(session, crm.ghl_base_url, crm.ghl_api_token.get_secret_value(),
                                           crm.ghl_location_id, crm.ghl_custom_field_map))
    return adapters
