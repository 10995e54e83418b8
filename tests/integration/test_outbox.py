"""The transactional outbox against the real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.leads import LeadCaptured
from contracts.messages import LeadCapturedMessage
from shared.messaging import declare_topology
from shared.outbox import OutboxRelay, enqueue
from shared.topology import Consumer, register
from tests.fixtures.infra import AMQP_URL, drain, eventually, unique


@pytest.fixture
async def clean_outbox(db: asyncpg.Pool) -> None:
    # Rows other tests left unpublished would be relayed here too; this test wants only its own.
    await db.execute("update outbox set published_at = now() where published_at is null")


async def test_a_bad_row_does_not_hold_back_the_others(
    db: asyncpg.Pool, broker: RabbitBroker, amqp: Any, clean_outbox: None
) -> None:
    tap = register(Consumer(unique("outbox_"), "tap", (LeadCapturedMessage.routing_key,)))
    await declare_topology(AMQP_URL, [tap])
    try:
        await _relay_around_a_bad_row(db, broker, amqp, tap)
    finally:  # a durable queue bound to lead.captured would collect every later test's messages
        for name in (tap.queue_name, tap.parking_queue_name):
            await amqp.queue_delete(name)


async def _relay_around_a_bad_row(db: asyncpg.Pool, broker: RabbitBroker, amqp: Any, tap: Consumer) -> None:
    good = LeadCapturedMessage.new(LeadCaptured(leadgen_id="42", page_id="7", created_time="2026-11-22T10:00:00Z"))
    async with db.acquire() as conn, conn.transaction():
        # A row that cannot be published (its body is not an envelope), a row whose body is JSON text (as an
        # older version stored it), and a good one.
        poison = uuid.uuid4()
        await conn.execute(
            "insert into outbox (message_id, routing_key, message_type, body) values ($1, $2, 'X', $3)",
            poison, LeadCapturedMessage.routing_key, json.dumps("not an envelope"),
        )
        await conn.execute(
            "insert into outbox (message_id, routing_key, message_type, body) values ($1, $2, $3, $4)",
            uuid.uuid4(), LeadCapturedMessage.routing_key, "LeadCaptured", good.model_dump_json(),
        )
        await enqueue(conn, good)
    relay = OutboxRelay(db, broker)

    assert await relay.relay_once() == 2  # the JSON-text row and the good row
    received = await eventually(lambda: drain(amqp, tap.queue_name), what="relayed messages")
    assert {json.loads(m.body)["payload"]["leadgen_id"] for m in received} == {"42"}
    assert len(received) == 2
    pending = await db.fetch("select message_id from outbox where published_at is null")
    await db.execute("delete from outbox where message_id = $1", poison)  # no later test should meet it
    assert [r["message_id"] for r in pending] == [poison]  # kept for a later round, not marked published
