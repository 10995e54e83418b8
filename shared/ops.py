"""/healthz (alive), /readyz (broker and database reachable) and Prometheus /metrics for a service."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from shared.service import Service

SERVICE_KEY: web.AppKey[Service] = web.AppKey("service")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "service": request.app[SERVICE_KEY].name})


async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    checks = await service.ready()
    ok = all(checks.values())
    return web.json_response(
        {"status": "ready" if ok else "not ready", "service": service.name, "checks": checks},
        status=200 if ok else 503,
    )


async def metrics(_: web.Request) -> web.Response:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # one of several workers (INGRESS_WORKERS, CAPI_WORKERS): all count
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def add_routes(app: web.Application, service: Service) -> None:
    app[SERVICE_KEY] = service
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def serve(
    service: Service, host: str, port: int, app: web.Application | None = None, *, reuse_port: bool = False,
    header_timeout: float | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve the ops routes (on `app` if given, beside its own); port 0 picks a free one.

    With `reuse_port`, several processes may serve the same port (SO_REUSEPORT): the kernel spreads connections.
    `header_timeout`: a connection that has not sent a whole request head this long after connecting (or after
    its previous answer) is closed (aiohttp's keep-alive timeout, which also covers a half-sent head).
    """
    app = app if app is not None else web.Application()
    add_routes(app, service)
    if header_timeout is not None:
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
    else:
        runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
