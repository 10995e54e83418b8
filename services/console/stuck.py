"""The Stuck page: every parked message by queue and reason, and replay once the cause is fixed.

Parked messages live in RabbitMQ's parking queues, not in the database; `shared.parked` (the module behind
`leadwire parked`) reads them without losing or reordering any, and replays them to their consumer without the retry
headers. The page reads them through the console's `ParkedListing` (services/console/parked.py): a queue is swept
again only when its message count changed, its listing is older than CONSOLE_PARKED_REFRESH_SECONDS, or the console
replayed from it; each group shows its first SHOWN_PER_GROUP messages and says how many there are. Replay is
idempotent (consumers record the message ids they handled; a lead already delivered to a CRM is not delivered
again). Messages on the broker carry no lead personal data, and the page shows no message body.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aiohttp import web
from aiormq.exceptions import AMQPError

from services.console.handlers import _render, _zone
from services.console.keys import CONTEXT, SESSION
from services.console.security import audit
from shared.parked import Action, ParkedMessage, Selection, apply, resolve_queue
from shared.topology import Consumer, all_consumers

logger = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 20
SHOWN_PER_GROUP = 100
_BROKER_ERRORS = (OSError, TimeoutError, AMQPError, aio_pika.exceptions.AMQPException)


@dataclass(frozen=True)
class Group:
    """Parked messages of one queue with one reason."""

    queue: str
    reason: str
    messages: list[ParkedMessage]

    @property
    def shown(self) -> list[ParkedMessage]:
        return self.messages[:SHOWN_PER_GROUP]

    @property
    def first(self) -> datetime | None:
        times = [m.parked_at for m in self.messages if m.parked_at is not None]
        return min(times) if times else None

    @property
    def last(self) -> datetime | None:
        times = [m.parked_at for m in self.messages if m.parked_at is not None]
        return max(times) if times else None


def group(messages: list[ParkedMessage]) -> list[Group]:
    """By queue and reason, the largest groups first."""
    by: dict[tuple[str, str], list[ParkedMessage]] = defaultdict(list)
    for message in messages:
        by[(message.queue, message.reason)].append(message)
    return sorted((Group(q, r, ms) for (q, r), ms in by.items()), key=lambda g: (-len(g.messages), g.queue))


def _consumers(queue: str) -> list[Consumer]:
    if not queue:
        return list(all_consumers())
    try:
        return [resolve_queue(queue)]
    except ValueError:
        raise web.HTTPBadRequest(text="Unknown queue.") from None


async def stuck_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    queue = request.query.get("queue", "").strip()[:200]
    error = None
    messages: list[ParkedMessage] = []
    try:
        messages = await asyncio.wait_for(
            ctx.listing.read(ctx.amqp_url, _consumers(queue), ctx.settings.parked_refresh_seconds),
            READ_TIMEOUT_SECONDS)
    except _BROKER_ERRORS as exc:
        logger.warning("console: cannot read the parking queues: %s", type(exc).__name__)
        error = "RabbitMQ cannot be read right now; try again in a moment."
    context: dict[str, Any] = {
        "page": "stuck", "groups": group(messages), "total": len(messages), "queue": queue, "read_error": error,
        "zone": await _zone(ctx), "notice": request.query.get("notice", ""),
        "queues": sorted(f"{c.service}/{c.name}" for c in all_consumers()),
    }
    return await _render(request, "stuck.html", **context)


async def replay(request: web.Request) -> web.StreamResponse:
    """Replay the chosen parked messages (ids) or a whole group (queue and reason) to their consumer."""
    ctx = request.app[CONTEXT]
    form = await request.post()
    queue = str(form.get("queue", "")).strip()[:200]
    ids = frozenset(str(v)[:200] for v in form.getall("id", []) if str(v).strip())
    reason = str(form.get("reason", ""))[:2000] or None
    if not ids and not queue:
        raise web.HTTPBadRequest(text="Choose messages or a queue to replay.")
    consumers = _consumers(queue)
    try:
        done = await asyncio.wait_for(
            apply(ctx.amqp_url, consumers, Selection(ids=ids, reason=reason), Action.REPLAY), READ_TIMEOUT_SECONDS
        )
    except _BROKER_ERRORS as exc:
        logger.warning("console: replay failed: %s", type(exc).__name__)
        raise web.HTTPSeeOther("/stuck?notice=broker-error") from None
    finally:
        ctx.listing.forget(consumers)  # what was replayed (or may have been) is read again
    username = request[SESSION].username
    await audit(ctx.pool(), username, "parked_replay", f"{queue or 'selected'}: {len(done)} replayed")
    logger.info("console: %d parked messages replayed", len(done),
                extra={"operator": username, "queue": queue or None, "replayed": len(done)})
    raise web.HTTPSeeOther(f"/stuck?notice=replayed-{len(done)}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/stuck", stuck_page, name="stuck")
    app.router.add_post("/stuck/replay", replay, name="stuck_replay")
