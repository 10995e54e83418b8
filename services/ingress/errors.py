"""What can go wrong in a request, and the one middleware that turns it into a status and a small JSON body."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from services.ingress import metrics

logger = logging.getLogger(__name__)


class IngressError(Exception):
    """Base of the errors a handler raises on purpose; `outcome` labels the metric; `log_level` overrides the
    default (error for 5xx, warning otherwise)."""

    status = 500
    outcome = "error"
    log_level: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class BadRequest(IngressError):
    status, outcome = 400, "malformed"


class Unauthorized(IngressError):
    status, outcome = 401, "unauthorized"


class Forbidden(IngressError):
    status, outcome = 403, "forbidden"


class PayloadTooLarge(IngressError):
    status, outcome = 413, "too_large"


class BodyTimeout(IngressError):
    """The body did not arrive within INGRESS_BODY_TIMEOUT_SECONDS (a slow or stalled client)."""

    status, outcome = 408, "body_timeout"


class ClientGone(IngressError):
    """The client closed the connection before its body was read: nothing to answer, nothing went wrong here."""

    status, outcome, log_level = 400, "client_disconnected", logging.INFO


class Unprocessable(IngressError):
    """Invalid content: field paths and messages, never the values (they may be PII)."""

    status, outcome = 422, "invalid"

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__(f"{len(problems)} invalid field(s)")
        self.problems = problems

    def body(self) -> dict[str, Any]:
        return {"error": "invalid events", "errors": self.problems}


class NotConfigured(IngressError):
    """The endpoint's secret is not set: closed, never open."""

    status, outcome = 503, "not_configured"


class BrokerUnavailable(IngressError):
    """The broker did not confirm every message: the sender must retry (Meta does, for 36 h)."""

    status, outcome = 503, "broker_unavailable"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    endpoint = request.match_info.route.name or "other"
    try:
        response = await handler(request)
    except IngressError as exc:
        metrics.REQUESTS.labels(endpoint, exc.outcome).inc()
        level = exc.log_level or (logging.ERROR if exc.status >= 500 else logging.WARNING)
        logger.log(level, "%s %s: %s %s", request.method, request.path, exc.status, exc.message,
                   extra={"endpoint": endpoint, "status": exc.status, "body_bytes": request.content_length})
        return web.json_response(exc.body(), status=exc.status)
    except web.HTTPRequestEntityTooLarge:
        # raised by request.read() beyond client_max_size
        metrics.REQUESTS.labels(endpoint, PayloadTooLarge.outcome).inc()
        logger.warning("%s %s: 413 body too large", request.method, request.path,
                       extra={"endpoint": endpoint, "body_bytes": request.content_length})
        return web.json_response({"error": "body too large"}, status=413)
    except web.HTTPException as exc:  # 404, 405 from the router
        if exc.status >= 400:
            metrics.REQUESTS.labels(endpoint, f"http_{exc.status}").inc()
            return web.json_response({"error": exc.reason}, status=exc.status, headers=_allow(exc))
        raise
    except Exception:
        metrics.REQUESTS.labels(endpoint, "error").inc()
        logger.exception("%s %s: unexpected error", request.method, request.path, extra={"endpoint": endpoint})
        return web.json_response({"error": "internal error"}, status=500)
    if endpoint != "other":
        metrics.REQUESTS.labels(endpoint, "ok").inc()
    return response


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
