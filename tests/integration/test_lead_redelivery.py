"""lead_fetcher answers crm_sync's RedeliverLead command: the stored lead's LeadCaptured again, once per command.

Against the real broker and database: the command arrives on lead_fetcher's private queue, the LeadCaptured goes
to the outbox in the same transaction, and a lead that is not stored parks the command.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.leads import RedeliverLead
from contracts.messages import RedeliverLeadMessage
from services.lead_fetcher.app import create_app
from services.lead_fetcher.logic import redelivered_message_id
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.messaging import declare_topology, ensure_confirmed
from shared.service import Service
from shared.settings import MetaSettings, Settings
from shared.topology import EXCHANGE, H_REASON, Consumer, register
from tests.fixtures.infra import AMQP_URL, eventually, unique


def new_lead_id() -> str:
    return str(random.randint(10**15, 10**16 - 1))


@pytest.fixture
async def queue(amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[Consumer]:
    """A private RedeliverLead queue with its parking queue, bound to a routing key of its own."""
    name = unique("lead_redelivery_test_")
    private = register(Consumer(name, "redeliver_lead", (f"test.{name}",)))
    await declare_topology(AMQP_URL, [private])
    yield private
    for queue_name in (private.queue_name, private.parking_queue_name):
        await amqp.queue_delete(queue_name)


@pytest.fixture
async def lead_fetcher(settings: Settings, queue: Consumer) -> AsyncIterator[Service]:
    service = create_app(settings.replace(LeadFetcherSettings(backfill_interval_seconds=0),
                                          MetaSettings(health_check_seconds=0)), redeliver_consumer=queue)
    await service.start()
    yield service
    await service.stop()


async def send(broker: RabbitBroker, queue: Consumer, command: RedeliverLeadMessage) -> None:
    frame = await broker.publish(
        command.model_dump_json().encode(), exchange=EXCHANGE, routing_key=queue.routing_keys[0], persist=True,
        mandatory=True, content_type="application/json", message_id=str(command.message_id),
    )
    ensure_confirmed(frame, queue.queue_name)


async def insert_lead(db: asyncpg.Pool, leadgen_id: str) -> None:
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, created_time, fields, raw, source) "
        "values ($1, '1111', '2222', '3333', $2, '{}', '{}', 'webhook')",
        leadgen_id, datetime(2026, 11, 20, 15, 4, 5, tzinfo=UTC),
    )


async def emitted(db: asyncpg.Pool, leadgen_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "select message_id, body from outbox where message_type = 'LeadCaptured' "
        "and body->'payload'->>'leadgen_id' = $1", leadgen_id,
    )


async def test_a_redeliver_command_emits_the_stored_lead_captured_again_once(
    lead_fetcher: Service, broker: RabbitBroker, queue: Consumer, db: asyncpg.Pool,
) -> None:
    lid = new_lead_id()
    await insert_lead(db, lid)
    command = RedeliverLeadMessage.new(RedeliverLead(leadgen_id=lid, reason="test"))
    await send(broker, queue, command)
    [row] = await eventually(lambda: emitted(db, lid), what="LeadCaptured in the outbox")
    assert row["message_id"] == redelivered_message_id(command.message_id)
    body = row["body"]
    assert body["payload"]["page_id"] == "1111"
    assert body["payload"]["ad_id"] == "3333"
    assert body["causation_id"] == str(command.message_id)

    await send(broker, queue, command)  # the same command again (a redelivery): nothing more
    other = RedeliverLeadMessage.new(RedeliverLead(leadgen_id=lid))
    await send(broker, queue, other)  # a new command: a new LeadCaptured
    rows = await eventually(lambda: emitted_at_least(db, lid, 2), what="the second command's LeadCaptured")
    assert sorted(str(r["message_id"]) for r in rows) == sorted(
        str(redelivered_message_id(c.message_id)) for c in (command, other))


async def test_a_redeliver_command_for_a_lead_not_stored_is_parked(
    lead_fetcher: Service, broker: RabbitBroker, queue: Consumer, amqp: aio_pika.abc.AbstractChannel,
) -> None:
    lid = new_lead_id()
    await send(broker, queue, RedeliverLeadMessage.new(RedeliverLead(leadgen_id=lid)))
    parking = await amqp.get_queue(queue.parking_queue_name, ensure=False)
    parked = await eventually(lambda: parking.get(fail=False, no_ack=True), what="the parked command")
    assert json.loads(parked.body)["payload"]["leadgen_id"] == lid
    assert "not stored" in str(parked.headers[H_REASON])


async def emitted_at_least(db: asyncpg.Pool, leadgen_id: str, count: int) -> list[asyncpg.Record] | None:
    rows = await emitted(db, leadgen_id)
    return rows if len(rows) >= count else None
