"""Foundation messaging overhead: consume through a `Service` and confirmed publish, against bare aio-pika.

Run: `python -m tests.benchmarks.bench_messaging [--messages 5000] [--publishers 64] [--profile consume|publish]`.

Everything runs against the real RabbitMQ in a throwaway vhost (see `bench_ingress.bench_broker`; set
BENCH_AMQP_URL to use a broker of your own). Lines printed:

* consume: an empty handler subscribed with `Service.subscribe` (our `ReliableConsumer` middleware, manual ack,
  envelope validation), messages already queued; the same with `Service.subscribe_batch` (batches of 1,000,
  envelope validation, one ack per batch); and bare aio-pika consume + ack on a queue of the same kind
  (quorum, same prefetch), with and without validating the envelope in the callback.
* publish: `shared.messaging.publish` through `Service.publisher` (persistent, mandatory, confirmed, checked) from
  N concurrent publishers; and bare aio-pika confirmed persistent publishes from N concurrent publishers.

Figures: messages per second of wall time (best of `--rounds`; the machine's other load makes them noisy, and
the broker shares the CPUs), and CPU time of this process per message (lowest of the rounds), which is what our
Python costs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika

from contracts.leads import LeadgenReceived
from contracts.messages import LeadgenReceivedMessage
from shared.topology import EXCHANGE
from tests.benchmarks.bench_ingress import bench_broker

PREFETCH = 32

Result = tuple[float, float]  # messages per second of wall time, CPU microseconds of this process per message


class Clock:
    """Wall time and this process's CPU time (the Python cost, less noisy than wall time on a loaded box)."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()

    def result(self, count: int) -> Result:
        return count / (time.perf_counter() - self.wall), 1e6 * (time.process_time() - self.cpu) / count


def _message(i: int) -> LeadgenReceivedMessage:
    return LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=str(10**12 + i), page_id="222"))


def _settings(amqp_url: str) -> Any:
    from shared.settings import BrokerSettings, OpsSettings, Settings

    return Settings(broker=BrokerSettings(amqp_url=amqp_url, PREFETCH_COUNT=PREFETCH), ops=OpsSettings(ops_port=0))


async def _fill(channel: aio_pika.abc.AbstractChannel, routing_key: str, count: int) -> None:
    """Queue `count` envelopes on the leadwire exchange (confirmed, pipelined)."""
    exchange = await channel.get_exchange(EXCHANGE.name)
    bodies = [_message(i).model_dump_json().encode() for i in range(count)]
    for start in range(0, count, 500):
        await asyncio.gather(*(
            exchange.publish(aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                              content_type="application/json", message_id=str(uuid.uuid4()),
                                              correlation_id=str(uuid.uuid4())), routing_key=routing_key)
            for b in bodies[start:start + 500]
        ))


async def _profiled(enabled: bool, fn: Callable[[], Awaitable[Result]]) -> Result:
    if not enabled:
        return await fn()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return await fn()
    finally:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)


# ------------------------------------------------------------------------------------------- consume


async def consume_service(amqp_url: str, count: int, profile: bool, *, batch: bool = False) -> Result:
    """A `Service` consumer with an empty handler: one call per message (`subscribe`), or with `batch`
    `subscribe_batch`: batches of 1,000, prefetch 2,000, one ack per batch."""
    from shared.messaging import declare_topology
    from shared.service import Service
    from shared.topology import Consumer, register

    name = f"bench_{uuid.uuid4().hex[:8]}"
    consumer = register(Consumer(name, "work", (f"bench.{name}",)))
    await declare_topology(amqp_url, [consumer])
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await _fill(channel, consumer.routing_keys[0], count)

    service = Service(name, _settings(amqp_url), uses_database=False)
    done = asyncio.Event()
    seen = 0
    clock = Clock()

    def saw(n: int) -> None:
        nonlocal seen, clock
        if seen == 0:
            clock = Clock()
        seen += n
        if seen >= count:
            done.set()

    if batch:

        @service.subscribe_batch(consumer, max_batch=1000, linger=0.05, prefetch=2000)
        async def handle_batch(messages: list[LeadgenReceivedMessage]) -> None:
            saw(len(messages))

    else:

        @service.subscribe(consumer)
        async def handle(message: LeadgenReceivedMessage) -> None:
            saw(1)

    async def run() -> Result:
        await service.start()
        try:
            try:
                await asyncio.wait_for(done.wait(), timeout=120)
            except TimeoutError:
                raise RuntimeError(f"service consumer saw only {seen} of {count} messages") from None
            # The clock starts at the first handler call: with one message per call, that message is not timed.
            result = clock.result(count if batch else count - 1)
        finally:
            await service.stop()
        return result

    try:
        return await _profiled(profile, run)
    finally:
        for queue in (consumer.queue_name, consumer.parking_queue_name):
            await channel.queue_delete(queue)
        await connection.close()


async def consume_bare(amqp_url: str, count: int, validate: bool) -> Result:
    connection = await aio_pika.connect(amqp_url)
    try:
        setup = await connection.channel()
        queue_name = f"bench.bare.{uuid.uuid4().hex[:8]}"
        queue = await setup.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})
        exchange = await setup.get_exchange(EXCHANGE.name)
        await queue.bind(exchange, routing_key=queue_name)
        await _fill(setup, queue_name, count)

        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        consuming = await channel.get_queue(queue_name)
        done = asyncio.Event()
        seen = 0
        clock = Clock()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen, clock
            if seen == 0:
                clock = Clock()
            if validate:
                LeadgenReceivedMessage.model_validate_json(message.body)
            await message.ack()
            seen += 1
            if seen == count:
                done.set()

        tag = await consuming.consume(on_message)
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        except TimeoutError:
            raise RuntimeError(f"bare consumer saw only {seen} of {count} messages") from None
        result = clock.result(count - 1)
        await consuming.cancel(tag)
        await setup.queue_delete(queue_name)
        return result
    finally:
        await connection.close()


# ------------------------------------------------------------------------------------------- publish


async def _spread(publishers: int, count: int, publish_one: Callable[[int], Awaitable[None]]) -> Result:
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await publish_one(i)

    clock = Clock()
    await asyncio.gather(*(worker() for _ in range(publishers)))
    return clock.result(count)


async def publish_service(amqp_url: str, count: int, publishers: int, profile: bool) -> Result:
    from shared.messaging import publish
    from shared.service import Service
    from shared.topology import consumer as consumer_spec

    service = Service(f"bench_pub_{uuid.uuid4().hex[:6]}", _settings(amqp_url), uses_database=False)
    publisher = service.publisher(LeadgenReceivedMessage)
    messages = [_message(i) for i in range(count)]
    await service.start()
    try:
        await _spread(publishers, min(200, count), lambda i: publish(publisher, messages[i]))  # warm-up
        return await _profiled(profile, lambda: _spread(publishers, count, lambda i: publish(publisher, messages[i])))
    finally:
        await service.stop()
        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel()
        await (await channel.get_queue(consumer_spec("lead_fetcher", "leadgen_received").queue_name)).purge()
        await connection.close()


async def publish_bare(amqp_url: str, count: int, publishers: int) -> Result:
    from shared.topology import consumer as consumer_spec

    messages = [_message(i) for i in range(count)]
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE.name)

        async def publish_one(i: int) -> None:
            m = messages[i]
            await exchange.publish(
                aio_pika.Message(m.model_dump_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type="application/json", message_id=str(m.message_id),
                                 correlation_id=str(m.correlation_id), type=m.type, timestamp=m.occurred_at),
                routing_key=m.routing_key, mandatory=True,
            )

        rate = await _spread(publishers, count, publish_one)
        await (await channel.get_queue(consumer_spec("lead_fetcher", "leadgen_received").queue_name)).purge()
        return rate
    finally:
        await connection.close()


# ------------------------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> None:
    from shared.logging import configure_logging
    from shared.messaging import declare_topology

    configure_logging("INFO")  # as the services run: INFO, our handler on the root logger
    logging.getLogger("shared.service").setLevel(logging.WARNING)  # no "started/stopped" lines in the output
    rows: list[tuple[str, Result]] = []

    async def best(label: str, fn: Callable[[], Awaitable[Result]]) -> None:
        results = [await fn() for _ in range(args.rounds)]
        rows.append((label, (max(r[0] for r in results), min(r[1] for r in results))))

    async with bench_broker() as amqp_url:
        await declare_topology(amqp_url)
        n, p = args.messages, args.publishers
        if args.profile == "consume":
            await consume_service(amqp_url, n, True)
            return
        if args.profile == "consume_batch":
            await consume_service(amqp_url, n, True, batch=True)
            return
        if args.profile == "publish":
            await publish_service(amqp_url, n, p, True)
            return
        await best("consume: Service, empty handler", lambda: consume_service(amqp_url, n, False))
        await best("consume: Service.subscribe_batch, empty handler",
                   lambda: consume_service(amqp_url, n, False, batch=True))
        await best("consume: bare aio-pika, ack only", lambda: consume_bare(amqp_url, n, False))
        await best("consume: bare aio-pika, validate + ack", lambda: consume_bare(amqp_url, n, True))
        await best(f"publish: shared.messaging, {p} concurrent", lambda: publish_service(amqp_url, n, p, False))
        await best("publish: shared.messaging, 1 at a time", lambda: publish_service(amqp_url, n // 5, 1, False))
        await best(f"publish: bare aio-pika, {p} concurrent", lambda: publish_bare(amqp_url, n, p))
        await best("publish: bare aio-pika, 1 at a time", lambda: publish_bare(amqp_url, n // 5, 1))
    out = sys.stdout
    out.write(f"\nmessaging: {n} messages, prefetch {PREFETCH}, best of {args.rounds}, {os.cpu_count()} CPUs\n")
    out.write(f"{'':<48} {'msg/s':>9} {'cpu us/msg':>11}\n")
    for label, (rate, cpu) in rows:
        out.write(f"{label:<48} {rate:>9.0f} {cpu:>11.0f}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--publishers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--profile", choices=("consume", "consume_batch", "publish"), help="cProfile one run to stderr instead"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
