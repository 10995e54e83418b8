"""Batch consumption: many messages per handler call, one acknowledgement per run of finished batches.

FastStream's per-message path (middleware, context, decoding, one ack each) costs more CPU per message than a
consumer that must handle thousands per second can pay (`tests/benchmarks/bench_messaging.py`). A `BulkConsumer`
reads its queue on a connection and channel of its own (aio-pika's robust ones: they come back after a broker
restart, and the consumer is registered again), with a large prefetch. It consumes on the channel's aiormq layer:
aio-pika's own consumer wraps every delivery in an `IncomingMessage` and one more task, which at thousands of
messages per second is a cost of its own. It collects deliveries into batches of up to `max_batch` (or whatever
arrived within `linger` seconds of a batch's first message), decodes each envelope itself, and hands the handler
the list of valid messages.

The guarantees are `ReliableConsumer`'s, per message:

* The handler returns one result per message: None (done) or the exception that message failed with; raising
  fails every message of the batch with that exception.
* A message whose headers or body cannot be decoded (`shared.poison`: invalid contract, a validator's
  OverflowError, NUL or non-finite values, a malformed attempt or not-before header) fails alone, before the
  handler; a batch the handler fails as a whole for bad data is split until the bad messages are alone.
* A failed message goes through `shared.messaging.settle_failure` (the same code the FastStream path uses): poison
  (`shared.poison.is_poison`) and `PermanentError` are parked with the reason, `RetryLater` and transient
  failures are retried until `RETRY_HORIZON_HOURS`, other failures back off and are parked after
  `RETRY_ATTEMPTS`. A retry copy that is not due yet hops tiers again (`H_NOT_BEFORE`). While the database's
  circuit breaker is open, batches wait in the delay queues without calling the handler.
* A batch counts as finished once the handler returned (its effects are durable) and every retry or parked copy
  was confirmed by the broker. Batches finish in any order, but acknowledgements go out in delivery order: one
  `basic.ack(multiple=True)` covers the longest finished prefix of the channel's deliveries, so a slow batch
  holds back the acknowledgement of later ones instead of being acknowledged with them.
* A copy the broker did not confirm: that message is rejected back to the queue (redelivered), not acked.
* After a reconnect, batches from the old channel finish their work but cannot be acknowledged there: the broker
  redelivers their messages, so handlers must be idempotent on the message (as every consumer is).
* `stop()` cancels the consumer, hands the messages already received to the handler, and waits up to
  `graceful_timeout` seconds for the batches in flight; whatever is unacknowledged then is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage

from contracts.envelope import Envelope
from shared import metrics
from shared.logging import correlation_scope
from shared.messaging import Consumed, Guards, ensure_confirmed, hop, settle_failure
from shared.poison import check_headers, decode, describe, is_poison
from shared.retries import DependencyUnavailable, is_database_unavailable
from shared.topology import Consumer

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=Envelope[Any])

# The handler: the batch's valid messages in delivery order -> one result per message (None = done, or the
# exception that message failed with), or None when all of them are done.
BatchHandler = Callable[[list[E]], Awaitable[Sequence[BaseException | None] | None]]


class _Batch:
    """Deliveries handed to the handler together, and whether their effect is durable yet."""

    __slots__ = ("channel", "done", "messages", "requeued")

    def __init__(self, messages: list[DeliveredMessage], channel: aiormq.abc.AbstractChannel | None) -> None:
        self.messages = messages
        self.channel = channel  # the channel that delivered them: acks go there, delivery tags are per channel
        self.done = False
        self.requeued: set[int] = set()  # delivery tags rejected back to the queue: no ack may name them

    def last_ackable(self) -> int | None:
        for message in reversed(self.messages):
            tag = _delivery_tag(message)
            if tag not in self.requeued:
                return tag
        return None


class BulkConsumer(Generic[E]):
    """Consume `consumer`'s queue in batches for `handler`, with `ReliableConsumer`'s guarantees (module doc).

    Args:
        consumer: the queue (declared by `declare_topology`), its parking queue and its retry binding.
        handler: see `BatchHandler`.
        message_cls: the envelope class each body is validated as.
        amqp_url: the broker.
        max_batch: most messages per handler call.
        linger: seconds a batch waits for more messages after its first one arrived.
        prefetch: unacknowledged messages in flight; at least `max_batch`, better two or more batches.
        max_attempts: RETRY_ATTEMPTS.
        guards: the service's retry policy, database breaker and parked-message hook (`shared.messaging.Guards`).
        graceful_timeout: seconds `stop()` waits for batches in flight.
    """

    def __init__(
        self,
        consumer: Consumer,
        handler: BatchHandler[E],
        message_cls: type[E],
        *,
        amqp_url: str,
        max_batch: int = 1000,
        linger: float = 0.05,
        prefetch: int = 2000,
        max_attempts: int = 5,
        graceful_timeout: float = 15.0,
        guards: Guards | None = None,
    ) -> None:
        if max_batch < 1 or prefetch < max_batch:
            raise ValueError("need 1 <= max_batch <= prefetch")
        self.consumer = consumer
        self.handler = handler
        self.message_cls = message_cls
        self.max_batch = max_batch
        self.linger = linger
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.guards = guards
        self.graceful_timeout = graceful_timeout
        self._amqp_url = amqp_url
        self._series = metrics.consumer_series(consumer.service, consumer.name)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._consuming_on: aiormq.abc.AbstractChannel | None = None
        self._tag: str | None = None
        self._buffer: list[DeliveredMessage] = []
        self._buffer_channel: aiormq.abc.AbstractChannel | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._order: deque[_Batch] = deque()
        self._ack_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    @property
    def consuming(self) -> bool:
        """Registered as a consumer on an open channel (False while stopped or reconnecting)."""
        return self._tag is not None and self._consuming_on is not None and not self._consuming_on.is_closed

    async def start(self) -> None:
        self._stopping = False
        self._connection = await aio_pika.connect_robust(self._amqp_url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)  # restored by the robust channel after a reconnect
        await channel.get_queue(self.consumer.queue_name)  # fails here if the topology was not declared
        channel.reopen_callbacks.add(self._on_reopen)
        await self._consume()
        logger.info("batch consumer started", extra={"queue": self.consumer.queue_name, "prefetch": self.prefetch})

    async def _consume(self) -> None:
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        ok = await underlay.basic_consume(self.consumer.queue_name, self._on_delivery)
        self._consuming_on, self._tag = underlay, ok.consumer_tag

    async def _on_reopen(self, _channel: object) -> None:
        if not self._stopping:
            logger.warning("broker channel reopened: consuming again", extra={"queue": self.consumer.queue_name})
            await self._consume()

    async def stop(self) -> None:
        """Stop taking messages, hand what was received to the handler, wait for batches up to the timeout."""
        self._stopping = True
        if self._consuming_on is not None and self._tag is not None:
            with contextlib.suppress(Exception):  # a closed channel has no consumer left to cancel
                await self._consuming_on.basic_cancel(self._tag)
        self._consuming_on = self._tag = None
        await asyncio.sleep(0)  # deliveries already read reach the buffer
        self._dispatch()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.graceful_timeout)
            if pending:
                logger.warning(
                    "%s batches still in flight after %.0f s; their messages will be redelivered",
                    len(pending), self.graceful_timeout, extra={"queue": self.consumer.queue_name},
                )
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = self._channel = None
        self._order.clear()

    # -- collecting --------------------------------------------------------------------------------------------

    async def _on_delivery(self, message: DeliveredMessage) -> None:
        if self._stopping:
            return  # not acked: redelivered once this connection closes
        if message.channel is not self._buffer_channel:  # reconnected: a batch never spans two channels
            self._dispatch()
            self._buffer_channel = message.channel
        self._buffer.append(message)
        if len(self._buffer) >= self.max_batch:
            self._dispatch()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._dispatch)

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        batch = _Batch(self._buffer, self._buffer_channel)
        self._buffer = []
        self._order.append(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch), name=f"batch:{self.consumer.queue_name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- handling ----------------------------------------------------------------------------------------------

    async def _run(self, batch: _Batch) -> None:
        try:
            await self._handle(batch)
        except Exception:
            # A bug of ours, not the handler's (its exceptions are results): nothing may be acked, and an unfinished
            # batch would hold back every later ack. Back to the queue with all of them.
            logger.exception("batch consumer failed on a batch; its messages are requeued",
                             extra={"queue": self.consumer.queue_name})
            for message in batch.messages:
                tag = _delivery_tag(message)
                if tag not in batch.requeued:
                    batch.requeued.add(tag)
                    with contextlib.suppress(Exception):
                        await message.channel.basic_reject(tag, requeue=True)
        batch.done = True
        await self._ack_finished()

    async def _handle(self, batch: _Batch) -> None:
        failures: list[tuple[DeliveredMessage, BaseException]] = []
        hops: list[DeliveredMessage] = []
        valid: list[DeliveredMessage] = []
        decoded: list[E] = []
        message_cls = self.message_cls
        for message in batch.messages:
            try:  # one message's malformed header or body fails that message only (`shared.poison`)
                if message.header.properties.headers:
                    consumed = _consumed(message)
                    check_headers(consumed.headers)
                    if consumed.wait_left():
                        hops.append(message)
                        continue
                decoded.append(decode(message_cls, message.body))
            except Exception as exc:
                failures.append((message, exc))
                continue
            valid.append(message)

        started = time.perf_counter()
        breaker = self.guards.database if self.guards is not None else None
        if decoded and breaker is not None and not breaker.allow():  # the database is down: the batch waits
            wait = breaker.wait_seconds()
            for message in valid:
                breaker.hold(message.header.properties.message_id)
                failures.append((message, DependencyUnavailable("the database", wait)))
            decoded, valid = [], []
        if decoded:
            results = await self.results(decoded)
            if self.guards is not None:
                errors = [r for r in results if isinstance(r, BaseException)]
                down = next((e for e in errors if is_database_unavailable(e)), None)
                self.guards.report(down)
            elapsed = time.perf_counter() - started
            succeeded = 0
            for message, result in zip(valid, results, strict=True):
                if isinstance(result, BaseException):
                    failures.append((message, result))
                else:
                    succeeded += 1
            if succeeded:
                self._series.consumed.inc(succeeded)
                for _ in range(succeeded):  # the batch's time is each of its messages' handling time
                    self._series.handler_seconds.observe(elapsed)

        if failures or hops:
            outcomes = await asyncio.gather(
                *(self._settle(message, exc) for message, exc in failures),
                *(self._hop(message) for message in hops),
                return_exceptions=True,
            )
            for message, outcome in zip([m for m, _ in failures] + hops, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    # Neither acked nor lost: back to the queue. Then the run of acks can pass over it.
                    logger.error("retry/park copy not confirmed (%s); message requeued", outcome,
                                 extra={"message_id": message.header.properties.message_id,
                                        "queue": self.consumer.queue_name})
                    tag = _delivery_tag(message)
                    batch.requeued.add(tag)
                    with contextlib.suppress(Exception):
                        await message.channel.basic_reject(tag, requeue=True)

    async def results(self, decoded: list[E]) -> Sequence[BaseException | None]:
        """The handler's result per message. A batch failing as a whole for bad data (`is_poison`: a database
        data error, a serialization error) is split in halves and each half handled again, until the poison
        messages are alone: they park, their neighbours go through (handlers are idempotent on the message).

        What the consumer settles each valid message by (None: acked; an exception: `settle_failure`); an
        in-memory test calls it with decoded messages, no broker involved (tests/memory/support.py `batch`)."""
        try:
            results = await self.handler(decoded)
        except Exception as exc:
            if is_poison(exc) and len(decoded) > 1:
                middle = len(decoded) // 2
                logger.warning("batch handler failed on bad data (%s) for %s messages; splitting the batch",
                               describe(exc), len(decoded), extra={"queue": self.consumer.queue_name})
                return [*await self.results(decoded[:middle]), *await self.results(decoded[middle:])]
            logger.exception("batch handler failed for %s messages", len(decoded),
                             extra={"queue": self.consumer.queue_name})
            return [exc] * len(decoded)
        if results is None:
            return [None] * len(decoded)
        if len(results) != len(decoded):
            error = RuntimeError(f"batch handler returned {len(results)} results for {len(decoded)} messages")
            return [error] * len(decoded)
        return results

    async def _settle(self, message: DeliveredMessage, exc: BaseException) -> None:
        with correlation_scope(message.header.properties.correlation_id):
            await settle_failure(self._republish, _consumed(message), self.consumer, exc,
                                 max_attempts=self.max_attempts, guards=self.guards)

    async def _hop(self, message: DeliveredMessage) -> None:
        with correlation_scope(message.header.properties.correlation_id):
            await hop(self._republish, _consumed(message), self.consumer)

    async def _republish(self, msg: Consumed, queue_name: str, headers: dict[str, Any]) -> None:
        if self._channel is None:
            raise RuntimeError("batch consumer stopped")
        frame = await self._channel.default_exchange.publish(
            aio_pika.Message(
                msg.body,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                content_type=msg.content_type,
                message_id=msg.message_id,
                correlation_id=msg.correlation_id,
                type=msg.type,
                timestamp=msg.timestamp,
            ),
            routing_key=queue_name,
            mandatory=True,
        )
        ensure_confirmed(frame, queue_name)

    async def _ack_finished(self) -> None:
        """Acknowledge the finished prefix of the deliveries, one `multiple` ack per channel, in order."""
        async with self._ack_lock:  # two acks overtaking each other would ack an unknown tag: channel error
            last: dict[int, tuple[aiormq.abc.AbstractChannel, int]] = {}
            while self._order and self._order[0].done:
                batch = self._order.popleft()
                tag = batch.last_ackable()
                if tag is not None and batch.channel is not None:
                    last[id(batch.channel)] = (batch.channel, tag)
            for channel, tag in last.values():
                try:
                    await channel.basic_ack(tag, multiple=True)
                except Exception as exc:  # the channel closed under us: the broker redelivers these
                    logger.warning("ack failed (%s): messages will be redelivered", type(exc).__name__,
                                   extra={"queue": self.consumer.queue_name})


def _consumed(message: DeliveredMessage) -> Consumed:
    properties = message.header.properties
    return Consumed(
        body=message.body,
        headers=dict(properties.headers) if properties.headers else {},
        routing_key=message.routing_key or "",
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        content_type=properties.content_type,
        type=properties.message_type,
        timestamp=properties.timestamp,
    )


def _delivery_tag(message: DeliveredMessage) -> int:
    """The broker's tag of a consumed message (a `Basic.Deliver` always carries one)."""
    tag = message.delivery_tag
    if tag is None:
        raise ValueError("a consumed message without a delivery tag")
    return tag
