"""What the in-memory handler tests share: a service on FastStream's `TestRabbitBroker` (no RabbitMQ, no PostgreSQL),
its handlers' dependencies around a fake worker, and what the reliability middleware republished; the batch handlers
(`Service.subscribe_batch`) take decoded messages directly (`batch`).

A message is published as a service publishes it: to the exchange with its contract's routing key, so it reaches the
handler only through the consumer's binding (`shared.topology`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from faststream.rabbit.annotations import RabbitMessage

from contracts.envelope import Envelope
from shared.service import Service, Started
from shared.settings import BrokerSettings, Settings
from shared.topology import DELAY_TIERS, EXCHANGE, Consumer, delay_queue_name

D = TypeVar("D")

# Nothing listens here: the in-memory broker never connects.
NO_BROKER = "amqp://guest:guest@127.0.0.1:1/none"


def service(name: str, *, retry_attempts: int = 4, uses_database: bool = False) -> Service:
    """A bare service of that name (its handlers are registered by the test); `uses_database` gives it the
    database's circuit breaker (the pool itself never opens)."""
    settings = Settings(broker=BrokerSettings(amqp_url=NO_BROKER, retry_attempts=retry_attempts))
    return Service(name, settings, uses_database=uses_database)


async def started(service: Service, deps: D) -> Started[D]:
    """`deps` as the service's started dependencies (what `Service.on_started` builds at start)."""
    built: Started[D] = Started(service.name, lambda _: deps, None)
    await built.open(service)
    return built


class Copies:
    """What the middleware republished: to the parking queues of the watched consumers, and to a delay queue (a
    retry, or a message waiting for a dependency)."""

    def __init__(self) -> None:
        self.parked: list[RabbitMessage] = []
        self.parked_from: list[str] = []  # the queue of each parked copy's consumer
        self.retried: list[RabbitMessage] = []

    def parked_once(self, consumer: Consumer) -> RabbitMessage:
        """The one copy parked (by `consumer`), with no retry beside it."""
        assert self.parked_from == [consumer.queue_name]
        assert self.retried == []
        return self.parked[0]


def watch(service: Service, *consumers: Consumer) -> Copies:
    """Collect the parked and delayed copies of `consumers`' messages (subscribe before the broker starts)."""
    copies = Copies()
    subscriber: Callable[..., Any] = service.broker.subscriber

    def park_for(consumer: Consumer) -> None:
        @subscriber(consumer.parking_queue_name)
        async def parked(body: Any, message: RabbitMessage) -> None:
            copies.parked.append(message)
            copies.parked_from.append(consumer.queue_name)

    for consumer in consumers:
        park_for(consumer)

    for seconds in DELAY_TIERS:

        @subscriber(delay_queue_name(seconds))
        async def retried(body: Any, message: RabbitMessage) -> None:
            copies.retried.append(message)

    return copies


async def batch(service: Service, consumer: Consumer, messages: list[Any]) -> Sequence[BaseException | None]:
    """Hand decoded `messages` to the batch handler registered on `consumer` (`Service.subscribe_batch`), as its
    `BulkConsumer` does once it read and decoded them: one result per message, what each is settled by (None:
    acked; `PermanentError`: parked; `RetryLater` or another exception: retried). No broker: a batch handler reads
    its queue outside FastStream, so `TestRabbitBroker` cannot deliver to it."""
    return await service.batch_consumer(consumer).results(messages)


async def send(broker: Any, message: Envelope[Any] | bytes, *, routing_key: str | None = None, **headers: Any) -> None:
    """Publish `message` (an envelope, or raw bytes with `routing_key`) as a service would."""
    if isinstance(message, bytes):
        assert routing_key is not None
        body = message
    else:
        body, routing_key = message.model_dump_json().encode(), routing_key or message.routing_key
    await broker.publish(body, exchange=EXCHANGE, routing_key=routing_key, headers=headers)
