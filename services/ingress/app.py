"""The ingress service: composition root. Serves Meta's webhooks and the CRM events endpoint.

`GET/POST /webhooks/meta` and `POST /crm/events` on INGRESS_PORT, beside /healthz /readyz /metrics. A request is
answered 200/202 only after the broker confirmed every message it produced; otherwise 503, so the sender retries.
"""

from __future__ import annotations

import functools
import logging

from contracts.messages import ConversionRequestedMessage, LeadgenReceivedMessage
from services.ingress import handlers
from services.ingress.settings import GhlEventsSettings, IngressSettings, ingress_config
from shared.logging import register_secret
from shared.service import Port, Service
from shared.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Service:
    """The ingress, serving on INGRESS_PORT."""
    service = Service("ingress", settings, uses_database=False)
    ingress = service.settings.block(IngressSettings)
    register_secret(ingress.crm_events_secret.get_secret_value())
    ghl_events = service.settings.block(GhlEventsSettings)
    register_secret(ghl_events.ghl_events_secret.get_secret_value())
    service.web_host = ingress.ingress_host
    service.web_reuse_port = ingress.ingress_workers > 1
    service.web_header_timeout = ingress.ingress_header_timeout_seconds
    service.port = Port(ingress.ingress_port, "INGRESS_PORT")  # webhooks and ops routes; OPS_PORT does not move it

    config = ingress_config(service.settings)
    if not config.app_secret:
        logger.warning("META_APP_SECRET is not set: POST /webhooks/meta answers 503 until it is")
    if not config.verify_token:
        logger.warning("META_WEBHOOK_VERIFY_TOKEN is not set: Meta's subscription handshake will be refused")
    service.web_app = functools.partial(
        handlers.web_app,
        config,
        leadgen_publisher=service.publisher(LeadgenReceivedMessage, "A leadgen webhook change from Meta."),
        conversion_publisher=service.publisher(ConversionRequestedMessage, "A conversion event posted by a CRM."),
        ghl_config=ghl_events.config(),
    )
    return service


def workers(settings: Settings) -> int:
    """Processes `leadwire run ingress` starts side by side on INGRESS_PORT (INGRESS_WORKERS)."""
    return settings.block(IngressSettings).ingress_workers
