"""The ingress service: composition root. Serves Meta's webhooks and the CRM events endpoint.

`GET/POST /webhooks/meta` and `POST /crm/events` on INGRESS_PORT, beside /healthz /readyz /metrics. A request is
answered 200/202 only after the broker confirmed every message it produced; otherwise 503, so the sender retries.
"""

from __future__ import annotations

import logging

from aiohttp import web

from contracts.messages import ConversionRequestedMessage, LeadgenReceivedMessage
from services.ingress import handlers
from services.ingress.errors import error_middleware
from services.ingress.keys import CONFIG, CONVERSION_PUBLISHER, LEADGEN_PUBLISHER, IngressConfig
from services.ingress.settings import IngressSettings
from shared.logging import register_secret
from shared.service import Port, Service
from shared.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Service:
    """The ingress, serving on INGRESS_PORT."""
    service = Service("ingress", settings, uses_database=False)
    ingress = service.settings.block(IngressSettings)
    register_secret(ingress.crm_events_secret.get_secret_value())
    service.web_host = ingress.ingress_host
    service.web_reuse_port = ingress.ingress_workers > 1
    service.port = Port(ingress.ingress_port, "INGRESS_PORT")  # webhooks and ops routes; OPS_PORT does not move it

    leadgen_publisher = service.publisher(LeadgenReceivedMessage, "A leadgen webhook change from Meta.")
    conversion_publisher = service.publisher(ConversionRequestedMessage, "A conversion event posted by a CRM.")
    config = _config(service.settings)
    if not config.app_secret:
        logger.warning("META_APP_SECRET is not set: POST /webhooks/meta answers 503 until it is")
    if not config.verify_token:
        logger.warning("META_WEBHOOK_VERIFY_TOKEN is not set: Meta's subscription handshake will be refused")

    def build_web_app() -> web.Application:
        app = web.Application(client_max_size=config.max_body_bytes, middlewares=[error_middleware])
        app[CONFIG] = config
        app[LEADGEN_PUBLISHER] = leadgen_publisher
        app[CONVERSION_PUBLISHER] = conversion_publisher
        app.router.add_get("/webhooks/meta", handlers.verify_meta_subscription, name="meta_verify")
        app.router.add_post("/webhooks/meta", handlers.receive_meta_webhook, name="meta_webhook")
        app.router.add_post("/crm/events", handlers.receive_crm_events, name="crm_events")
        return app

    service.web_app = build_web_app
    return service


def _config(settings: Settings) -> IngressConfig:
    ingress = settings.block(IngressSettings)
    return IngressConfig(
        app_secret=settings.meta.app_secret.get_secret_value(),
        verify_token=settings.meta.webhook_verify_token.get_secret_value(),
        crm_events_secret=ingress.crm_events_secret.get_secret_value(),
        max_body_bytes=ingress.ingress_max_body_bytes,
        publish_timeout=ingress.ingress_publish_timeout_seconds,
    )


def workers(settings: Settings) -> int:
    """Processes `leadwire run ingress` starts side by side on INGRESS_PORT (INGRESS_WORKERS)."""
    return settings.block(IngressSettings).ingress_workers
