"""The capi_sender service: composition root."""

from __future__ import annotations

from typing import Any

from contracts.messages import ConversionSentMessage
from services.capi_sender import handlers, lead_stage
from services.capi_sender.events import RequestBatch
from services.capi_sender.settings import CapiSettings
from services.capi_sender.worker import Worker, guarded, post_events
from shared.service import Service
from shared.settings import Settings
from shared.topology import Consumer, consumer


def create_app(settings: Settings | None = None, *, source: Consumer | None = None,
               lead_source: Consumer | None = None) -> Service:
    """Build the service.

    Args:
        settings: process settings (read from the environment when None).
        source: the queue to consume; default `conversion.requested`'s consumer. Tests pass their own.
        lead_source: the LeadCaptured queue of the Lead stage (CAPI_SEND_LEAD_STAGE); default its own consumer,
            unless `source` is given (a test with its own queues consumes only the ones it names).
    """
    service = Service("capi_sender", settings, uses_graph=True)
    capi = service.settings.block(CapiSettings)
    service.web_reuse_port = capi.capi_workers > 1  # the workers share the ops port (/metrics counts them all)

    def dependencies(started: Service) -> handlers.Deps:
        graph = started.graph_client

        async def post(batch: RequestBatch) -> dict[str, Any]:
            return await post_events(graph, batch)

        breaker = started.breaker(
            "meta_capi", label="Meta's Conversions API", what="conversions",
            fix="Check https://metastatus.com and `leadwire doctor`; conversions wait and are sent by themselves "
                "(retried for RETRY_HORIZON_HOURS). Any that gave up: `leadwire parked list --queue "
                "capi_sender/conversion_requested`.",
        )
        meta = started.settings.meta
        sender = Worker(pool=started.db, post=guarded(post, breaker), settings=capi, default_pixel_id=meta.pixel_id,
                        pixels_by_page=meta.pixels_by_page())
        return handlers.Deps(sender=sender, pool=started.db)

    deps = service.on_started(dependencies)
    handlers.register(service, deps, source or consumer("capi_sender", "conversion_requested"))
    if capi.capi_send_lead_stage and (lead_source is not None or source is None):
        lead_stage.register(service, deps, lead_source or consumer("capi_sender", "lead_captured"))
    # Declared for the AsyncAPI document; messages go out through the transactional outbox.
    service.publisher(
        ConversionSentMessage, description="Meta accepted a Conversions API request: the events it carried."
    )
    service.relay_outbox()
    return service


def workers(settings: Settings) -> int:
    """Processes `leadwire run capi_sender` starts side by side (CAPI_WORKERS), sharing the ops port."""
    return settings.block(CapiSettings).capi_workers
