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
from services.ingress.settings import IngressPublishSettings
from shared.service import Service
from shared.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Service:
    service = Service("ingress", settings, uses_database=False)
    service.web_host = service.settings.ingress.ingress_host
    service.web_reuse_port = service.settings.ingress.ingress_workers > 1
    if service.settings.ops.ops_port is None:
        ops = service.settings.ops.model_copy(update={"ops_port": service.settings.ingress.ingress_port})
        service.settings = service.settings.replace(ops)

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
    return IngressConfig(
        app_secret=settings.meta.app_secret.get_secret_value(),
        verify_token=settings.meta.webhook_verify_token.get_secret_value(),
        crm_events_secret=settings.ingress.crm_events_secret.get_secret_value(),
        max_body_bytes=settings.ingress.ingress_max_body_bytes,
        publish_timeout=settings.block(IngressPublishSettings).ingress_publish_timeout_seconds,
    )
