"""Typed keys of the ingress's aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from faststream.rabbit.publisher import RabbitPublisher


@dataclass(frozen=True)
class IngressConfig:
    """What the request handlers need to know; secrets as plain strings, never logged."""

    app_secret: str
    verify_token: str
    crm_events_secret: str
    max_body_bytes: int
    publish_timeout: float
    body_timeout: float = 30.0
    default_country: str = "US"  # DEFAULT_COUNTRY: for national phone numbers before they are hashed


CONFIG: web.AppKey[IngressConfig] = web.AppKey("ingress_config", IngressConfig)
LEADGEN_PUBLISHER: web.AppKey[RabbitPublisher] = web.AppKey("leadgen_publisher", RabbitPublisher)
CONVERSION_PUBLISHER: web.AppKey[RabbitPublisher] = web.AppKey("conversion_publisher", RabbitPublisher)
