"""The lead_fetcher service: composition root.

Consumes `LeadgenReceived`, reads each lead from Meta with the Page token (concurrent reads share Graph batch
calls), stores it in `leads` and emits `LeadCaptured` through the outbox in the same transaction. Consumes
crm_sync's `RedeliverLead` commands: the stored lead's `LeadCaptured` again. Background jobs: the outbox relay,
and the periodic backfill that captures leads whose webhook never came.
"""

from __future__ import annotations

from contracts.messages import AlertRaisedMessage, LeadCapturedMessage
from services.lead_fetcher import handlers
from services.lead_fetcher.logic import page_token
from services.lead_fetcher.reader import LeadReader
from services.lead_fetcher.settings import LeadFetcherSettings
from services.lead_fetcher.worker import Worker
from shared.service import Service
from shared.settings import Settings
from shared.topology import Consumer, consumer


def create_app(settings: Settings | None = None, *, leadgen_consumer: Consumer | None = None,
               redeliver_consumer: Consumer | None = None) -> Service:
    """Build the service; `leadgen_consumer` and `redeliver_consumer` swap the LeadgenReceived and RedeliverLead
    queues (tests use private ones)."""
    service = Service("lead_fetcher", settings, uses_graph=True)
    config = service.settings.block(LeadFetcherSettings)
    token = page_token(service.settings.meta)

    def dependencies(started: Service) -> handlers.Deps:
        graph = started.graph_client
        reader = LeadReader(graph, token, window_seconds=config.fetch_batch_window_ms / 1000.0)
        breaker = started.breaker(
            "graph", label="Meta's Graph API", what="lead reads",
            fix="Check https://metastatus.com and `leadwire doctor`; lead reads wait and resume by themselves "
                "(retried for RETRY_HORIZON_HOURS). Any that gave up: `leadwire parked list --queue "
                "lead_fetcher/leadgen_received`.",
        )
        capture = Worker(started.db, reader, config, graph_breaker=breaker, incidents=started.incidents)
        return handlers.Deps(capture=capture, graph=graph, pool=started.db)

    handlers.register(service, service.on_started(dependencies), config, token=token,
                      leadgen_consumer=leadgen_consumer or consumer("lead_fetcher", "leadgen_received"),
                      redeliver_consumer=redeliver_consumer or consumer("lead_fetcher", "redeliver_lead"))
    service.relay_outbox()
    if service.settings.meta.health_check_seconds > 0:
        service.monitor_meta_health(service.settings.meta.health_check_seconds)
    # Publishers declared for the AsyncAPI document; messages themselves leave through the outbox relay.
    service.publisher(LeadCapturedMessage, "A lead was fetched and stored (sent through the outbox).")
    service.publisher(AlertRaisedMessage, "Lead reads refused for a Page (token or permission), once per period; "
                      "lead capture held back by Meta's quota (an incident: opened, reminders, resolved).")
    return service
