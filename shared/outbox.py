"""Transactional outbox: write a message in the same transaction as the state change, publish it after commit.

`enqueue` inserts into `outbox` (a trigger notifies the relays); `OutboxRelay.run` publishes unpublished rows in order
with broker confirms and marks them published. A crash between publish and mark republishes the message with the
same message_id, which consumers already treat as a duplicate.

The `outbox` table is shared/'s: services write it only through `enqueue`/`enqueue_many`, and a service that must
know whether it enqueued a message already (in the same query as its own rows) reads the view `enqueued_messages`
(migration 0150: `message_id`, `published_at`), never the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
from faststream.rabbit import RabbitBroker

from shared.messaging import make_broker, publish_body
from shared.settings import BrokerSettings

logger = logging.getLogger(__name__)

CHANNEL = "leadwire_outbox"


async def enqueue(conn: asyncpg.Connection, message: Any) -> None:
    """Add an envelope to the outbox inside the caller's transaction."""
    await enqueue_many(conn, [message])


async def enqueue_many(conn: asyncpg.Connection, messages: Sequence[Any]) -> None:
    """Add envelopes to the outbox inside the caller's transaction, in one statement."""
    if not messages:
        return
    await conn.executemany(
        "insert into outbox (message_id, routing_key, message_type, body) values ($1, $2, $3, $4)",
        [(m.message_id, type(m).routing_key, m.type, m.model_dump(mode="json")) for m in messages],
    )  # the insert trigger (migration 0010) notifies the relays on commit


async def relay_pending(pool: asyncpg.Pool, broker: BrokerSettings, *, service: str) -> Exception | None:
    """Publish every pending outbox message now, through a broker connection of its own (a command-line tool
    that enqueued messages and wants them to leave before it exits). Returns None when all left, else what stopped
    it: the messages stay safe in the outbox and any running service's relay publishes them."""
    connection = make_broker(broker, service=service)
    try:
        await connection.connect()
        relay = OutboxRelay(pool, connection)
        while await relay.relay_once() >= relay.batch_size:
            pass
    except Exception as exc:
        return exc
    finally:
        await connection.stop()
    return None


class OutboxRelay:
    def __init__(self, pool: asyncpg.Pool, broker: RabbitBroker, *, batch_size: int = 200,
                 poll_seconds: float = 1.0) -> None:
        self.pool = pool
        self.broker = broker
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    async def run(self) -> None:
        listener = await self.pool.acquire()
        try:
            await listener.add_listener(CHANNEL, self._notified)
            while True:
                published = await self.relay_once()
                if published < self.batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                    self._wake.clear()
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(CHANNEL, self._notified)
            await self.pool.release(listener)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch of pending messages; returns how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            # skip locked: several relays (one per process) share the work without publishing a row twice.
            rows = await conn.fetch(
                "select id, message_id, routing_key, message_type, body from outbox "
                "where published_at is null order by id limit $1 for update skip locked",
                self.batch_size,
            )
            if not rows:
                return 0
            # Each row on its own: one that cannot be published (unroutable, unreadable) is retried on a later
            # round and must not hold back the others.
            results = await asyncio.gather(*(self._publish(row) for row in rows), return_exceptions=True)
            published = []
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    logger.error("outbox message %s (%s) not published, retried later: %s: %s", row["message_id"],
                                 row["message_type"], type(result).__name__, result)
                else:
                    published.append(row["id"])
            if published:
                await conn.execute("update outbox set published_at = now() where id = any($1::bigint[])", published)
        return len(published)

    async def _publish(self, row: asyncpg.Record) -> None:
        body = row["body"] if isinstance(row["body"], dict) else json.loads(row["body"])  # older rows: JSON text
        # Unroutable: raises, the row stays in the outbox and is retried.
        await publish_body(self.broker, json.dumps(body, separators=(",", ":")).encode(), row["routing_key"],
                           message_type=row["message_type"], message_id=row["message_id"],
                           correlation_id=body.get("correlation_id"))
