"""The broker topology and reliable consumption, against the real RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.leads import LeadgenReceived
from contracts.messages import LeadgenReceivedMessage
from shared.messaging import PermanentError, RetryLater, claim, declare_topology
from shared.service import Service
from shared.settings import Settings
from shared.topology import EXCHANGE, H_ATTEMPT, H_REASON, Consumer, consumers_of, register
from tests.fixtures import rabbit_node
from tests.fixtures.infra import AMQP_URL, drain, eventually, unique


def _message(leadgen_id: str = "111") -> LeadgenReceivedMessage:
    return LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=leadgen_id, page_id="222"))


async def _send(broker: RabbitBroker, routing_key: str, body: bytes | dict[str, Any]) -> None:
    await broker.publish(body, exchange=EXCHANGE, routing_key=routing_key, persist=True)


async def _send_many(broker: RabbitBroker, routing_key: str, bodies: list[Any]) -> None:
    for body in bodies:
        await _send(broker, routing_key, body)


@pytest.fixture
async def test_service(settings: Settings, amqp: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start a throwaway service whose one consumer runs `handler`; returns (service, consumer)."""
    started: list[Service] = []

    async def start(
        handler: Callable[[LeadgenReceivedMessage], Any], prefetch: int | None = None
    ) -> tuple[Service, Consumer]:
        name = unique("svc_")
        consumer = register(Consumer(name, "work", (f"test.{name}",)))
        service = Service(name, settings, uses_database=False)

        @service.subscribe(consumer, prefetch=prefetch)
        async def handle(message: LeadgenReceivedMessage) -> None:
            await handler(message)

        await service.start()
        started.append(service)
        return service, consumer

    yield start
    for service in started:
        await service.stop()
        for consumer in consumers_of(service.name):  # throwaway queues: leave the broker as we found it
            await amqp.queue_delete(consumer.queue_name)
            await amqp.queue_delete(consumer.parking_queue_name)


@pytest.fixture
async def batch_service(settings: Settings, amqp: Any) -> AsyncIterator[Callable[..., Any]]:
    """Start a throwaway service whose one consumer is a batch consumer running `handler`."""
    started: list[Service] = []

    async def start(
        handler: Callable[[list[LeadgenReceivedMessage]], Any], *, max_batch: int = 50, linger: float = 0.05
    ) -> tuple[Service, Consumer]:
        name = unique("bsvc_")
        consumer = register(Consumer(name, "work", (f"test.{name}",)))
        service = Service(name, settings, uses_database=False)

        @service.subscribe_batch(consumer, max_batch=max_batch, linger=linger)
        async def handle(messages: list[LeadgenReceivedMessage]) -> Any:
            return await handler(messages)

        await declare_topology(AMQP_URL, [consumer])
        started.append(service)
        return service, consumer

    yield start
    for service in started:
        await service.stop()
        for consumer in consumers_of(service.name):
            await amqp.queue_delete(consumer.queue_name)
            await amqp.queue_delete(consumer.parking_queue_name)


async def test_topology_declaration_is_idempotent(broker: RabbitBroker, amqp: Any) -> None:
    consumer = register(Consumer(unique("svc_"), "work", (f"test.{unique()}",)))
    await declare_topology(AMQP_URL, [consumer])
    await declare_topology(AMQP_URL, [consumer])  # same arguments again: no error, no change

    await _send(broker, consumer.routing_keys[0], _message().model_dump(mode="json"))
    queue = await amqp.declare_queue(consumer.queue_name, passive=True)
    await eventually(lambda: _count(amqp, consumer.queue_name, 1), what="message routed to the consumer queue")
    assert queue.name == consumer.queue_name
    await amqp.declare_queue(consumer.parking_queue_name, passive=True)  # parking queue exists too


async def _count(amqp: Any, name: str, expected: int) -> bool:
    queue = await amqp.declare_queue(name, passive=True)
    return queue.declaration_result.message_count == expected


async def test_failing_message_is_parked_after_attempts_and_consumer_goes_on(
    test_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    handled: list[str] = []

    async def handler(message: LeadgenReceivedMessage) -> None:
        if message.payload.leadgen_id == "666":
            raise RuntimeError("CRM said no")
        handled.append(message.payload.leadgen_id)

    _, consumer = await test_service(handler)
    await _send(broker, consumer.routing_keys[0], _message("666").model_dump(mode="json"))
    await _send(broker, consumer.routing_keys[0], _message("777").model_dump(mode="json"))

    await eventually(lambda: _async(handled == ["777"]), what="the next message handled")
    parked = await eventually(lambda: drain(amqp, consumer.parking_queue_name), timeout=20, what="parked message")
    assert len(parked) == 1
    headers = parked[0].headers
    assert headers[H_ATTEMPT] == 3  # RETRY_ATTEMPTS in the test settings
    assert "RuntimeError: CRM said no" in headers[H_REASON]
    assert LeadgenReceivedMessage.model_validate_json(parked[0].body).payload.leadgen_id == "666"


async def test_retries_return_only_to_the_consumer_that_failed(
    test_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    bystander_calls: list[str] = []

    async def failing(message: LeadgenReceivedMessage) -> None:
        raise RuntimeError("always")

    async def bystander(message: LeadgenReceivedMessage) -> None:
        bystander_calls.append(message.payload.leadgen_id)

    _, failing_consumer = await test_service(failing)
    _, bystander_consumer = await test_service(bystander)
    await _send(broker, failing_consumer.routing_keys[0], _message("555").model_dump(mode="json"))

    parked = await eventually(lambda: drain(amqp, failing_consumer.parking_queue_name), timeout=20, what="parked")
    assert parked[0].headers[H_ATTEMPT] == 3
    assert bystander_calls == [], "a retry of another consumer's message reached this one"
    assert await drain(amqp, bystander_consumer.parking_queue_name) == []


async def test_a_consumer_gets_its_own_prefetch(
    test_service: Callable[..., Any], broker: RabbitBroker, settings: Settings
) -> None:
    in_flight: list[str] = []
    release = asyncio.Event()

    async def handler(message: LeadgenReceivedMessage) -> None:
        in_flight.append(message.payload.leadgen_id)
        await release.wait()

    assert settings.broker.prefetch_count < 50
    _, consumer = await test_service(handler, prefetch=50)
    for i in range(60):
        await _send(broker, consumer.routing_keys[0], _message(str(i)).model_dump(mode="json"))
    await eventually(lambda: _async(len(in_flight) == 50), what="50 messages in flight at once")
    release.set()
    await eventually(lambda: _async(len(in_flight) == 60), what="all handled")


async def test_invalid_payload_is_parked_at_once_without_its_values(
    test_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    calls: list[Any] = []

    async def handler(message: LeadgenReceivedMessage) -> None:
        calls.append(message)

    _, consumer = await test_service(handler)
    await _send_many(broker, consumer.routing_keys[0], _invalid_bodies())
    await _parked_at_once_without_values(amqp, consumer)
    assert calls == []


def _invalid_bodies() -> list[Any]:
    """Three messages no handler may see: a payload that fails validation (with PII where an id should be), an
    unknown schema version, and a body that is not JSON."""
    bad = _message().model_dump(mode="json")
    bad["payload"]["leadgen_id"] = "jane.doe@example.com"  # not an id; PII must not reach the reason
    unknown_version = {**_message().model_dump(mode="json"), "schema_version": 99}
    return [bad, unknown_version, b"{not json"]


async def _parked_at_once_without_values(amqp: Any, consumer: Consumer) -> None:
    """The three `_invalid_bodies` parked on their first attempt, their reasons naming the field, not its value."""
    parked = await eventually(
        lambda: _collect(amqp, consumer.parking_queue_name, 3), timeout=10, what="three parked messages"
    )
    reasons = [m.headers[H_REASON] for m in parked]
    assert all(m.headers[H_ATTEMPT] == 1 for m in parked), "invalid messages are not retried"
    assert any("payload.leadgen_id" in r for r in reasons)
    assert any("schema_version" in r for r in reasons)
    assert not any("jane.doe" in r for r in reasons)


async def test_retry_later_redelivers_without_using_attempts(
    test_service: Callable[..., Any], broker: RabbitBroker
) -> None:
    seen: list[float] = []

    async def handler(message: LeadgenReceivedMessage) -> None:
        seen.append(asyncio.get_running_loop().time())
        if len(seen) < 5:  # more deferrals than RETRY_ATTEMPTS: throttles must not exhaust attempts
            raise RetryLater("scope throttled", delay=1)

    _, consumer = await test_service(handler)
    await _send(broker, consumer.routing_keys[0], _message().model_dump(mode="json"))
    await eventually(lambda: _async(len(seen) == 5), timeout=30, what="five deliveries")
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.9, f"redelivered before the delay: {gaps}"


async def test_permanent_error_is_parked_without_retry(
    test_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    calls: list[str] = []

    async def handler(message: LeadgenReceivedMessage) -> None:
        calls.append(message.payload.leadgen_id)
        raise PermanentError("lead does not exist at Meta")

    _, consumer = await test_service(handler)
    await _send(broker, consumer.routing_keys[0], _message().model_dump(mode="json"))
    parked = await eventually(lambda: drain(amqp, consumer.parking_queue_name), what="parked message")
    assert parked[0].headers[H_REASON] == "permanent: lead does not exist at Meta"
    assert calls == ["111"]


async def test_claim_is_idempotent_per_consumer(db: Any) -> None:
    message_id = unique()
    async with db.acquire() as conn:
        assert await claim(conn, "a", message_id) is True
        assert await claim(conn, "a", message_id) is False
        assert await claim(conn, "b", message_id) is True


@pytest.mark.slow
@pytest.mark.skipif(not rabbit_node.available(), reason="needs RabbitMQ installed here, to run a node of its own")
async def test_confirmed_message_survives_broker_restart() -> None:
    # On a node of its own: the machine's broker is shared with other runs and is never restarted.
    async with rabbit_node.private_rabbitmq() as node:
        consumer = register(Consumer(unique("svc_"), "work", (f"test.{unique()}",)))
        await declare_topology(node.amqp_url, [consumer])
        publisher = RabbitBroker(node.amqp_url, logger=None)
        await publisher.connect()
        try:
            await _send(publisher, consumer.routing_keys[0], _message("424242").model_dump(mode="json"))
        finally:
            await publisher.stop()

        await node.restart()

        import aio_pika

        connection = await eventually(lambda: _connect(aio_pika, node.amqp_url), timeout=60, what="broker back")
        try:
            channel = await connection.channel()
            messages = await eventually(lambda: drain(channel, consumer.queue_name), timeout=30, what="message back")
            assert LeadgenReceivedMessage.model_validate_json(messages[0].body).payload.leadgen_id == "424242"
        finally:
            await connection.close()


async def _connect(aio_pika: Any, url: str) -> Any:
    try:
        return await aio_pika.connect(url)
    except Exception:
        return None


async def _collect(amqp: Any, queue_name: str, n: int, _store: dict[str, list[Any]] = {}) -> list[Any] | None:  # noqa: B006
    got = _store.setdefault(queue_name, [])
    got.extend(await drain(amqp, queue_name))
    return got if len(got) >= n else None


async def _async(value: Any) -> Any:
    return value


# -- the batch path (Service.subscribe_batch) -------------------------------------------------------------------


async def _started_with(
    batch_service: Callable[..., Any], broker: RabbitBroker, handler: Callable[..., Any], ids: Iterable[str],
    **options: Any,
) -> tuple[Service, Consumer]:
    """A batch service running `handler`, started once its queue holds a LeadgenReceived for each of `ids` (in
    that order)."""
    service, consumer = await batch_service(handler, **options)
    await _send_many(broker, consumer.routing_keys[0], [_message(i).model_dump(mode="json") for i in ids])
    await service.start()
    return service, consumer


async def test_batch_handler_gets_batches_and_its_messages_are_acked(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    batches: list[list[str]] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        batches.append([m.payload.leadgen_id for m in messages])

    ids = [str(1000 + i) for i in range(120)]
    # 120 queued: batches of at most 50, in delivery order
    service, consumer = await _started_with(batch_service, broker, handler, ids, max_batch=50)
    assert (await service.ready())["batch_consumers"] is True
    await eventually(lambda: _async(sum(map(len, batches)) == 120), what="all 120 handled")
    assert [i for batch in batches for i in batch] == ids
    assert max(map(len, batches)) == 50
    assert len(batches) < 120 / 2, "messages were not batched"
    await service.stop()  # unacked messages would go back to the queue now
    assert await _count(amqp, consumer.queue_name, 0), "handled messages were not acked"
    assert service._bulk_consumers[0].consuming is False
    assert await drain(amqp, consumer.parking_queue_name) == []


async def test_batch_invalid_messages_are_parked_and_the_rest_handled(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    handled: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        handled.extend(m.payload.leadgen_id for m in messages)

    service, consumer = await batch_service(handler)
    first, last = _message("1").model_dump(mode="json"), _message("2").model_dump(mode="json")
    await _send_many(broker, consumer.routing_keys[0], [first, *_invalid_bodies(), last])
    await service.start()

    await _parked_at_once_without_values(amqp, consumer)
    await eventually(lambda: _async(sorted(handled) == ["1", "2"]), what="the valid messages handled")
    await service.stop()
    assert await _count(amqp, consumer.queue_name, 0)


async def test_batch_one_failure_does_not_fail_the_others(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    calls: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> list[BaseException | None]:
        calls.extend(m.payload.leadgen_id for m in messages)
        return [PermanentError("lead does not exist at Meta") if m.payload.leadgen_id == "13" else None
                for m in messages]

    service, consumer = await _started_with(batch_service, broker, handler, map(str, range(20)))
    parked = await eventually(lambda: drain(amqp, consumer.parking_queue_name), what="the failed message parked")
    assert [LeadgenReceivedMessage.model_validate_json(m.body).payload.leadgen_id for m in parked] == ["13"]
    assert parked[0].headers[H_REASON] == "permanent: lead does not exist at Meta"
    await eventually(lambda: _async(len(calls) == 20), what="all handled")
    await service.stop()
    assert sorted(calls, key=int) == [str(i) for i in range(20)], "a message was handled twice or not at all"
    assert await _count(amqp, consumer.queue_name, 0)


async def test_batch_failure_is_retried_then_succeeds(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    calls: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> list[BaseException | None]:
        calls.extend(m.payload.leadgen_id for m in messages)
        return [RuntimeError("CRM timed out") if m.payload.leadgen_id == "7" and calls.count("7") == 1 else None
                for m in messages]

    service, consumer = await _started_with(batch_service, broker, handler, map(str, range(10)))
    await eventually(lambda: _async(calls.count("7") == 2), timeout=20, what="the failed message retried")
    await service.stop()
    assert sorted(set(calls), key=int) == [str(i) for i in range(10)]
    assert len(calls) == 11, "only the failed message comes back"
    assert await drain(amqp, consumer.parking_queue_name) == []
    assert await _count(amqp, consumer.queue_name, 0)


async def test_batch_retries_exhausted_then_parked_and_whole_batch_exception_fails_each(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    calls: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        calls.extend(m.payload.leadgen_id for m in messages)
        raise RuntimeError("database down")

    _, consumer = await _started_with(batch_service, broker, handler, ["1", "2"])
    parked = await eventually(
        lambda: _collect(amqp, consumer.parking_queue_name, 2), timeout=30, what="both messages parked"
    )
    assert sorted(LeadgenReceivedMessage.model_validate_json(m.body).payload.leadgen_id for m in parked) == ["1", "2"]
    assert all(m.headers[H_ATTEMPT] == 3 for m in parked)  # RETRY_ATTEMPTS in the test settings
    assert all("RuntimeError: database down" in m.headers[H_REASON] for m in parked)
    assert sorted(calls) == ["1", "1", "1", "2", "2", "2"]


async def test_batch_retry_later_does_not_use_attempts(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    seen: list[float] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> list[BaseException | None]:
        seen.append(asyncio.get_running_loop().time())
        return [RetryLater("scope throttled", delay=1) if len(seen) < 5 else None for _ in messages]

    service, consumer = await batch_service(handler)
    await _send(broker, consumer.routing_keys[0], _message().model_dump(mode="json"))
    await service.start()
    await eventually(lambda: _async(len(seen) == 5), timeout=30, what="five deliveries")
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert min(gaps) >= 0.9, f"redelivered before the delay: {gaps}"
    await service.stop()
    assert await drain(amqp, consumer.parking_queue_name) == []
    assert await _count(amqp, consumer.queue_name, 0)


async def test_batch_stop_waits_for_the_batch_in_flight(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    entered = asyncio.Event()
    finished: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        entered.set()
        await asyncio.sleep(0.5)  # work in progress when the stop begins
        finished.extend(m.payload.leadgen_id for m in messages)

    service, consumer = await _started_with(batch_service, broker, handler, map(str, range(5)))
    await asyncio.wait_for(entered.wait(), timeout=10)
    await service.stop()
    assert sorted(finished) == [str(i) for i in range(5)], "stop did not let the batch finish"
    assert await _count(amqp, consumer.queue_name, 0), "the finished batch was not acked before the stop"


async def test_batch_consumer_consumes_again_after_the_broker_closed_its_channel(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    handled: list[str] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        handled.extend(m.payload.leadgen_id for m in messages)

    service, consumer = await batch_service(handler)
    await service.start()
    await _send(broker, consumer.routing_keys[0], _message("1").model_dump(mode="json"))
    await eventually(lambda: _async(handled == ["1"]), what="the first message handled")

    # A channel error (here: acking a tag the broker never sent) makes the broker close the channel, as a
    # connection loss would; the robust channel reopens and the consumer must be registered on it again.
    bulk_consumer = service._bulk_consumers[0]
    underlay = await bulk_consumer._channel.get_underlay_channel()
    await underlay.basic_ack(999_999)
    await eventually(lambda: _async(underlay.is_closed), what="the broker closing the channel")

    await _send(broker, consumer.routing_keys[0], _message("2").model_dump(mode="json"))
    await eventually(lambda: _async("2" in handled), timeout=20, what="a message handled after the reopen")
    assert (await service.ready())["batch_consumers"] is True
    await service.stop()
    assert await _count(amqp, consumer.queue_name, 0)


async def test_batch_failing_as_a_whole_on_bad_data_is_split_until_the_bad_message_is_alone(
    batch_service: Callable[..., Any], broker: RabbitBroker, amqp: Any
) -> None:
    handled: list[str] = []
    calls: list[int] = []

    async def handler(messages: list[LeadgenReceivedMessage]) -> None:
        calls.append(len(messages))
        if any(m.payload.leadgen_id == "666" for m in messages):  # as a storage flush refusing one row fails
            raise asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')
        handled.extend(m.payload.leadgen_id for m in messages)

    ids = [str(2000 + i) for i in range(40)]
    service, consumer = await _started_with(batch_service, broker, handler, [*ids[:17], "666", *ids[17:]],
                                            max_batch=50, linger=0.5)

    parked = await eventually(lambda: drain(amqp, consumer.parking_queue_name), timeout=20, what="parked message")
    await eventually(lambda: _async(sorted(handled) == ids), what="the 40 others handled")
    assert [json.loads(m.body)["payload"]["leadgen_id"] for m in parked] == ["666"]
    assert "CharacterNotInRepertoireError" in str(parked[0].headers[H_REASON])
    assert len(calls) <= 2 * 6 + 2  # halves down to the one message, not one call per message
    await service.stop()
    assert await _count(amqp, consumer.queue_name, 0)
