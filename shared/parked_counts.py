"""How many messages wait in each consumer's parking queue, read from RabbitMQ (they are not in the database):
the console's Today page and the daily report show them.

A passive declare answers a queue's message count without touching its messages (for quorum queues, a count a few
seconds old).
"""

from __future__ import annotations

import aio_pika

from shared.topology import CONSUMERS


async def read_parked(amqp_url: str) -> dict[str, int]:
    """Messages in each consumer's parking queue (`service/queue` -> count). Every one of them exists: each service
    declares the whole topology when it starts."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=False)
        by_queue = {}
        for consumer in CONSUMERS:
            queue = await channel.declare_queue(consumer.parking_queue_name, passive=True)
            by_queue[f"{consumer.service}/{consumer.name}"] = int(queue.declaration_result.message_count or 0)
        return by_queue
