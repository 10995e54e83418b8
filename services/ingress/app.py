"""The ingress service: composition root. Serves Meta's webhooks and the CRM events endpoint."""

from __future__ import annotations

from aiohttp import web

from shared.service import Service
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Service:
    service = Service("ingress", settings, uses_database=False)
    service.web_host = service.settings.ingress.ingress_host
    if service.settings.ops.ops_port is None:
        ops = service.settings.ops.model_copy(update={"ops_port": service.settings.ingress.ingress_port})
        service.settings = service.settings.replace(ops)

    def build_web_app() -> web.Application:
        return web.Application(client_max_size=service.settings.ingress.ingress_max_body_bytes)

    service.web_app = build_web_app
    return service
