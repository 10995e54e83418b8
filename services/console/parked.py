"""How many messages wait in each parking queue, read from RabbitMQ (they are not in the database), at most every
CONSOLE_PARKED_REFRESH_SECONDS while someone looks at the Today page.

The counts come from `shared.parked` (the module behind `leadwire parked` and the daily report's counts too): a
passive declare answers a queue's message count without touching its messages.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aio_pika
from aiormq.exceptions import AMQPError

from shared.parked import read_counts

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
        counts.by_queue = await asyncio.wait_for(read_counts(amqp_url), timeout=3)
        counts.read_at = now
    except (OSError, TimeoutError, AMQPError, aio_pika.exceptions.AMQPException) as exc:
        logger.warning("console: cannot count parked messages: %s", type(exc).__name__)
    return counts
