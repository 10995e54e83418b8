"""How many messages wait in each parking queue, read from RabbitMQ (they are not in the database), at most every
CONSOLE_PARKED_REFRESH_SECONDS while someone looks at the Today page.

A passive declare answers a queue's message count without touching its messages (for quorum queues, a count a few
seconds old).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
from aiormq.exceptions import AMQPError

from shared.topology import CONSUMERS

logger = logging.getLogger(__name__)


@dataclass
class ParkedCounts:
    """The last reading: consumer (`service/queue`) -> parked messages; `read_at` None until a reading succeeded."""

    by_queue: dict[str, int] = field(default_factory=dict)
    read_at: datetime | None = None

    @property
    def total(self) -> int | None:
        return sum(self.by_queue.values()) if self.read_at is not None else None

    def nonzero(self) -> list[tuple[str, int]]:
        return sorted(((q, n) for q, n in self.by_queue.items() if n), key=lambda item: -item[1])


async def refresh(counts: ParkedCounts, amqp_url: str, max_age: float) -> ParkedCounts:
    """Read the counts again if the last reading is older than `max_age` seconds (within 3 s, else keep it)."""
    now = datetime.now(UTC)
    if counts.read_at is not None and (now - counts.read_at).total_seconds() < max_age:
        return counts
    try:
        counts.by_queue = await asyncio.wait_for(read_parked(amqp_url), timeout=3)
        counts.read_at = now
    except (OSError, TimeoutError, AMQPError, aio_pika.exceptions.AMQPException) as exc:
        logger.warning("console: cannot count parked messages: %s", type(exc).__name__)
    return counts


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
