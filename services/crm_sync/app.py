"""The crm_sync service: composition root. LeadCaptured → the lead's answers from `leads` → each CRM adapter."""

from __future__ import annotations

import logging

import aiohttp

from contracts.messages import AlertRaisedMessage, LeadSyncedMessage, RedeliverLeadMessage
from services.crm_sync import handlers
from services.crm_sync.adapters import Adapter, ContactLedger, GoHighLevelAdapter, WebhookAdapter
from services.crm_sync.logic import BREAKER_FIX
from services.crm_sync.mapping import field_map
from services.crm_sync.settings import CrmSyncSettings
from services.crm_sync.worker import Worker
from shared.ghl import GhlClient
from shared.logging import register_secret
from shared.service import Service
from shared.settings import DatabaseSettings, Settings
from shared.topology import Consumer, consumer

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, lead_consumer: Consumer | None = None) -> Service:
    """Build the service; `lead_consumer` swaps the LeadCaptured queue (tests use a private one)."""
    service = Service("crm_sync", settings)
    crm = service.settings.block(CrmSyncSettings)
    register_secret(crm.crm_webhook_secret.get_secret_value())
    register_secret(crm.ghl_api_token.get_secret_value())
    # Documented publishers (AsyncAPI); the messages themselves leave through the outbox.
    service.publisher(LeadSyncedMessage, "A lead was delivered to one CRM adapter.")
    service.publisher(AlertRaisedMessage, "A CRM is down (its circuit breaker opened: one alert per incident, an "
                                          "hourly reminder with the leads waiting, one when it answers again), or "
                                          "leads were parked.")
    service.publisher(RedeliverLeadMessage, "Ask lead_fetcher for a lead's LeadCaptured again (`leadwire crm "
                                            "redeliver`).")

    def dependencies(started: Service) -> handlers.Deps:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=crm.crm_timeout_seconds))
        adapters = build_adapters(crm, session, started.settings.database)
        if not adapters:
            logger.warning("no CRM adapter configured (CRM_WEBHOOK_URL, GHL_API_TOKEN): leads are recorded as "
                           "skipped, not delivered")
        else:
            logger.info("CRM adapters: %s", ", ".join(a.name for a in adapters))
        breakers = {a.name: started.breaker(f"crm:{a.name}", label=f"the CRM ({a.name})", what="leads",
                                            fix=BREAKER_FIX.get(a.name, BREAKER_FIX["webhook"]))
                    for a in adapters}
        return handlers.Deps(sync=Worker(started.db, adapters, breakers=breakers), http=session)

    async def close(deps: handlers.Deps) -> None:
        for adapter in deps.sync.adapters:
            if isinstance(adapter, GoHighLevelAdapter):
                await adapter.close()
        await deps.http.close()

    handlers.register(service, service.on_started(dependencies, close=close),
                      lead_consumer or consumer("crm_sync", "lead_captured"), prefetch=crm.crm_prefetch)
    service.relay_outbox()
    return service


def build_adapters(crm: CrmSyncSettings, session: aiohttp.ClientSession, database: DatabaseSettings | None = None
                   ) -> list[Adapter]:
    """The configured adapters; GoHighLevel's needs the database (it records each contact id as soon as it has it,
    through connections of its own)."""
    adapters: list[Adapter] = []
    if crm.webhook_enabled:
        adapters.append(WebhookAdapter(session, crm.crm_webhook_url, crm.crm_webhook_secret.get_secret_value(),
                                       field_map(crm.crm_field_map)))
    if crm.gohighlevel_enabled:
        if database is None:
            raise ValueError("the GoHighLevel adapter needs the database")
        adapters.append(GoHighLevelAdapter(GhlClient.from_settings(session, crm), ContactLedger(database),
                                           crm.ghl_custom_field_map,
                                           create_fields=crm.ghl_create_custom_fields))
    return adapters
