"""What waits in the parking queues, read from RabbitMQ (parked messages are not in the database).

* `ParkedCounts`: how many messages wait in each parking queue, at most every CONSOLE_PARKED_REFRESH_SECONDS while
  someone looks at the Today page. The counts come from `shared.parked` (the module behind `leadwire parked` and the
  daily report's counts too): a passive declare answers a queue's message count without touching its messages.
* `ParkedListing`: the Stuck page's messages. A queue cannot be read without taking every message and putting a
  copy back (`shared.parked.sweep`: a broker round trip and a confirmed publish per message), so the listing of
  each queue is kept, without message bodies, and read again only when the queue's message count changed since,
  when it is older than CONSOLE_PARKED_REFRESH_SECONDS, or after the console replayed from that queue. Each view
  still asks RabbitMQ for every queue's count. One sweep at a time per console.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import aio_pika
from aiormq.exceptions import AMQPError

from shared.parked import ParkedMessage, list_parked, read_counts
from shared.topology import Consumer

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


def _key(consumer: Consumer) -> str:
    return f"{consumer.service}/{consumer.name}"


@dataclass
class _Read:
    count: int  # the queue's message count when it was read
    at: float  # time.monotonic() then
    messages: list[ParkedMessage]


@dataclass
class ParkedListing:
    """The last reading of each parking queue (`service/queue`), its messages without their bodies."""

    by_queue: dict[str, _Read] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def read(self, amqp_url: str, consumers: Sequence[Consumer], max_age: float) -> list[ParkedMessage]:
        """The parked messages of these consumers, in each queue's order: swept again where stale (module doc)."""
        async with self.lock:
            counts = await read_counts(amqp_url, consumers)
            now = time.monotonic()
            stale = [c for c in consumers if (kept := self.by_queue.get(_key(c))) is None
                     or kept.count != counts[_key(c)] or now - kept.at >= max_age]
            swept: dict[str, list[ParkedMessage]] = {_key(c): [] for c in stale}
            to_sweep = [c for c in stale if counts[_key(c)]]  # an empty queue has nothing to read
            if to_sweep:
                for message in await list_parked(amqp_url, to_sweep):
                    swept[message.queue].append(replace(message, body=b"", headers={}))
            for queue, messages in swept.items():
                self.by_queue[queue] = _Read(counts[queue], now, messages)
            return [m for c in consumers for m in self.by_queue[_key(c)].messages]

    def forget(self, consumers: Iterable[Consumer]) -> None:
        """Read these queues again next time (messages were replayed or dropped from them)."""
        for c in consumers:
            self.by_queue.pop(_key(c), None)
