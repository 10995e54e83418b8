"""The ingress's entry points, HTTP handlers: read raw bytes, verify, parse, publish with confirms, then answer.

No slow work here. `web_app` is their route table; what they use (config, publishers) is in the app's typed keys
(`keys.py`), aiohttp's own typed way to reach resources.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from contracts.messages import ConversionRequestedMessage, LeadgenReceivedMessage
from services.ingress import ghl, logic, metrics
from services.ingress.errors import (
    BodyTimeout,
    ClientGone,
    Forbidden,
    NotConfigured,
    PayloadTooLarge,
    error_middleware,
)
from services.ingress.keys import CONFIG, CONVERSION_PUBLISHER, LEADGEN_PUBLISHER, IngressConfig
from services.ingress.publishing import publish_all

if TYPE_CHECKING:
    from faststream.rabbit.publisher import RabbitPublisher

logger = logging.getLogger(__name__)


def web_app(config: IngressConfig, *, leadgen_publisher: RabbitPublisher,
            conversion_publisher: RabbitPublisher, ghl_config: ghl.GhlEventsConfig | None = None) -> web.Application:
    """The ingress's aiohttp application: its routes and what their handlers use."""
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[error_middleware])
    app[CONFIG] = config
    app[LEADGEN_PUBLISHER] = leadgen_publisher
    app[CONVERSION_PUBLISHER] = conversion_publisher
    app.router.add_get("/webhooks/meta", verify_meta_subscription, name="meta_verify")
    app.router.add_post("/webhooks/meta", receive_meta_webhook, name="meta_webhook")
    app.router.add_post("/crm/events", receive_crm_events, name="crm_events")
    if ghl_config is not None:  # GoHighLevel's outcomes: services/ingress/ghl.py
        app[ghl.GHL_CONFIG] = ghl_config
        app.router.add_post("/crm/events/ghl", ghl.receive_ghl_events, name="crm_events_ghl")
    return app


async def read_body(request: web.Request) -> bytes:
    """The whole body, within the size and time limits.

    Raises:
        PayloadTooLarge: past INGRESS_MAX_BODY_BYTES (declared, or as it streams in).
        BodyTimeout: not all there within INGRESS_BODY_TIMEOUT_SECONDS.
        ClientGone: the client disconnected mid-body (logged at info: a client's doing, not a fault here).
    """
    config = request.app[CONFIG]
    limit = config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    try:
        # raises HTTPRequestEntityTooLarge past client_max_size (chunked bodies)
        return await asyncio.wait_for(request.read(), timeout=config.body_timeout)
    except TimeoutError:
        raise BodyTimeout(f"body not received within {config.body_timeout:g} s") from None
    except (ConnectionError, aiohttp.ClientPayloadError) as exc:
        raise ClientGone(f"client disconnected before its body was read ({type(exc).__name__})") from None


async def verify_meta_subscription(request: web.Request) -> web.Response:
    """Meta's subscription handshake (docs/meta-api.md §6.1): echo the challenge if the token matches."""
    query = request.query
    config = request.app[CONFIG]
    challenge = query.get("hub.challenge", "")
    if (
        query.get("hub.mode") != "subscribe"
        or not challenge
        or not logic.token_matches(config.verify_token, query.get("hub.verify_token"))
    ):
        raise Forbidden("verification failed")
    logger.info("meta webhook subscription verified")
    return web.Response(text=challenge, content_type="text/plain")


async def receive_meta_webhook(request: web.Request) -> web.Response:
    """Every leadgen change of the delivery is queued (confirmed) before Meta gets its 200."""
    config = request.app[CONFIG]
    if not config.app_secret:
        raise NotConfigured("META_APP_SECRET is not set")
    raw = await read_body(request)
    logic.verify_meta_signature(config.app_secret, raw, request.headers.get("X-Hub-Signature-256"))
    delivery = logic.parse_meta_delivery(raw)
    messages = []
    for lead in delivery.leadgens:
        message_id = logic.leadgen_message_id(lead.leadgen_id)  # the lead's story starts here: it correlates too
        messages.append(LeadgenReceivedMessage.new(lead, message_id=message_id, correlation_id=message_id))
    await publish_all(request.app[LEADGEN_PUBLISHER], messages, confirm_within=config.publish_timeout, endpoint="meta")
    metrics.LEADGENS_PUBLISHED.inc(len(messages))
    for (obj, field), count in delivery.ignored.items():
        metrics.CHANGES_IGNORED.labels(obj, field).inc(count)
    logger.info(
        "meta delivery: %d leadgen published, %d other changes", len(messages), sum(delivery.ignored.values()),
        extra={"object": delivery.object, "body_bytes": len(raw),
               "leadgen_ids": [m.payload.leadgen_id for m in messages[:50]]},
    )
    return web.json_response({"received": len(messages)})


async def receive_crm_events(request: web.Request) -> web.Response:
    """Conversion events from CRMs that can only call webhooks (GoHighLevel workflows, Zapier)."""
    config = request.app[CONFIG]
    if not config.crm_events_secret:
        raise NotConfigured("CRM_EVENTS_SECRET is not set: endpoint disabled")
    raw = await read_body(request)
    logic.authenticate_crm(
        config.crm_events_secret, raw, request.headers.get("X-Leadwire-Signature"), request.headers.get("Authorization")
    )
    events = [logic.without_clear_identifiers(e, default_country=config.default_country)
              for e in logic.parse_crm_events(raw)]
    messages = [ConversionRequestedMessage.new(e, message_id=logic.conversion_message_id(e)) for e in events]
    await publish_all(
        request.app[CONVERSION_PUBLISHER], messages, confirm_within=config.publish_timeout, endpoint="crm_events"
    )
    metrics.CONVERSIONS_PUBLISHED.inc(len(messages))
    logger.info("crm events: %d published", len(messages),
                extra={"message_ids": [str(m.message_id) for m in messages[:50]]})
    return web.json_response(
        {"accepted": len(messages), "message_ids": [str(m.message_id) for m in messages]}, status=202
    )
