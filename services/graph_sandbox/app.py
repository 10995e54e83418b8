"""aiohttp app factory for the Graph sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from . import control, routes, webhooks
from .batch import run_batch
from .config import SandboxConfig
from .core import VERSION_RE, GraphRequest, GraphResponse, Sandbox, execute
from .keys import SANDBOX

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024 * 1024


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without query strings: Graph calls carry `access_token` in the URL, and tokens never reach logs."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms",
            request.method,
            request.path,
            response.status,
            time * 1000,
            extra={"remote": request.remote},
        )


def _token(request: web.Request, params: dict[str, Any]) -> str | None:
    token = params.get("access_token")
    if token:
        return str(token)
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() in ("oauth", "bearer") and value.strip():
        return value.strip()
    return None


async def _params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if not request.can_read_body:
        return params
    ctype = request.content_type
    if ctype == "application/json":
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        files: list[tuple[str, bytes]] = []
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files.append((value.filename or key, value.file.read()))
            else:
                params[key] = value
        if files:
            params["__files__"] = files
    return params


def _respond(resp: GraphResponse) -> web.Response:
    return web.Response(
        status=resp.status,
        text=json.dumps(resp.body, separators=(",", ":")),
        content_type="application/json",
        charset="UTF-8",
        headers=resp.headers,
    )


async def graph_handler(request: web.Request) -> web.StreamResponse:
    sb = request.app[SANDBOX]
    segments = [s for s in request.path.split("/") if s]
    version = segments.pop(0) if segments and VERSION_RE.match(segments[0]) else None
    path = "/".join(segments)
    params = await _params(request)
    token = _token(request, params)
    base_url = sb.config.public_url or f"{request.scheme}://{request.host}"
    method = request.method.upper()
    override = str(params.get("method", "")).upper()
    if override in ("GET", "POST", "DELETE"):
        params.pop("method")
        method = override
    agent = request.headers.get("User-Agent", "")
    if not path and method == "POST" and "batch" in params:
        return _respond(await run_batch(sb, params, token, version, base_url, agent))
    resp = await execute(sb, GraphRequest(method, path, version, params, token, base_url, agent=agent))
    if resp.hang:
        # Fault: hang past the client's timeout, then drop the connection without an answer.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sb.release_hangs.wait(), timeout=sb.faults.hang_seconds)
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=504)
    return _respond(resp)


async def _release_hangs(app: web.Application) -> None:
    app[SANDBOX].release_hangs.set()


def create_app(config: SandboxConfig | None = None) -> web.Application:
    """Build the sandbox app: control API under `/_sandbox/`, everything else is Graph."""
    config = config or SandboxConfig()
    app = web.Application(client_max_size=MAX_BODY)
    sandbox = Sandbox(config)
    sandbox.resolve = routes.resolve
    app[SANDBOX] = sandbox
    control.setup(app)
    app.router.add_route("*", "/{tail:.*}", graph_handler)
    app.cleanup_ctx.append(webhooks.webhook_ctx)
    app.on_shutdown.append(_release_hangs)
    return app
