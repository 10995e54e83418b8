"""Publishing with confirms, reliable consumption (retry with backoff, then park), idempotency.

A consumed message is acknowledged only after its effect is durable: either the handler returned (its database
transaction committed), or a retry copy / parked copy of it was confirmed by the broker. `settle_failure` decides
between retry and park for both consumption paths: FastStream's (`ReliableConsumer`, one message per handler call)
and the batch path (`shared.bulk_consumer`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import aio_pika
from aiormq.abc import DeliveredMessage
from faststream.middlewares import BaseMiddleware
from faststream.rabbit import Channel, RabbitBroker
from faststream.rabbit.publisher import RabbitPublisher
from pamqp.commands import Basic

from contracts.envelope import Envelope
from shared import metrics
from shared.logging import correlation_scope
from shared.poison import MalformedHeaderError, check_headers, describe, is_poison, parse_attempt, parse_not_before
from shared.retries import (
    DEFAULT_POLICY,
    CircuitBreaker,
    DependencyUnavailable,
    RetryPolicy,
    is_database_unavailable,
    is_transient,
)
from shared.topology import (
    CONSUMERS,
    DELAY_TIERS,
    EXCHANGE,
    H_ATTEMPT,
    H_FIRST_FAILURE,
    H_NOT_BEFORE,
    H_PARKED_AT,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    RETRY_EXCHANGE,
    Consumer,
    by_queue_name,
    delay_queue,
    delay_queue_name,
    delay_tier,
    has_consumer,
)

if TYPE_CHECKING:
    import asyncpg
    from faststream.message import StreamMessage

    from shared.settings import BrokerSettings

logger = logging.getLogger(__name__)



class RetryLater(Exception):
    """Retry this message after `delay` seconds (e.g. Meta throttled the scope until then).

    With `counts_attempt=False` the wait does not use up one of the bounded attempts: a throttle is not the
    message's fault, and Meta tells us when it ends.
    """

    def __init__(self, reason: str, delay: float, *, counts_attempt: bool = False) -> None:
        super().__init__(reason)
        self.delay = max(0.0, delay)
        self.counts_attempt = counts_attempt


class PermanentError(Exception):
    """Retrying cannot help (Meta says the lead does not exist, the event is too old): park at once."""


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for the retry after `attempt` failures (1-based), default policy."""
    return DEFAULT_POLICY.backoff(attempt)


def make_broker(settings: BrokerSettings, *, service: str, guards: Guards | None = None) -> RabbitBroker:
    """A broker with publisher confirms, our reliability middleware, and a bounded prefetch."""
    return RabbitBroker(
        settings.amqp_url.get_secret_value(),
        app_id=f"leadwire.{service}",
        graceful_timeout=settings.graceful_timeout_seconds,
        default_channel=Channel(prefetch_count=settings.prefetch_count, publisher_confirms=True),
        middlewares=[ReliableConsumer.factory(
            max_attempts=settings.retry_attempts,
            guards=guards if guards is not None else Guards(RetryPolicy.from_settings(settings)),
        )],
        logger=logging.getLogger(f"leadwire.{service}.broker"),
        log_level=logging.DEBUG,
    )


async def declare_topology(amqp_url: str, consumers: Iterable[Consumer] = CONSUMERS) -> None:
    """Declare exchanges, delay tiers, consumer queues with their bindings, and parking queues. Idempotent.

    Runs on a short-lived connection of its own: declaring through the broker would hand every subscriber the
    queue object of the default channel (FastStream caches declarations), and with it that channel's prefetch.
    """
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True)
        retry_exchange = await channel.declare_exchange(
            RETRY_EXCHANGE.name, aio_pika.ExchangeType.HEADERS, durable=True
        )
        for tier in DELAY_TIERS:
            spec = delay_queue(tier)
            await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        for c in consumers:
            queue = await channel.declare_queue(c.queue_name, durable=True, arguments={"x-queue-type": "quorum"})
            for routing_key in c.routing_keys:
                await queue.bind(exchange, routing_key=routing_key)
            await queue.bind(retry_exchange, routing_key="", arguments={"x-match": "all", H_QUEUE: c.queue_name})
            await channel.declare_queue(c.parking_queue_name, durable=True, arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()


class NotConfirmed(Exception):
    """The broker did not take responsibility for a message: returned as unroutable, or nacked."""


def ensure_confirmed(frame: object, routing: str) -> None:
    """Raise unless the publish result is a broker ack.

    For a `mandatory` message no queue takes, the broker sends basic.return *and then* basic.ack, so an ack
    alone does not mean the message is anywhere: the driver hands back the returned message instead.
    """
    if isinstance(frame, DeliveredMessage):
        raise NotConfirmed(f"returned by the broker: no queue bound for {routing}")
    if isinstance(frame, Basic.Nack | Basic.Reject):
        raise NotConfirmed(f"nacked by the broker ({routing})")


async def publish(
    target: RabbitBroker | RabbitPublisher, message: Envelope[Any], *, confirm_within: float | None = None
) -> None:
    """Publish a persistent message on the `leadwire` exchange; return once the broker confirmed it.

    `target` is a declared publisher (preferred: it documents the channel) or the broker itself. A message some
    leadwire consumer needs is published `mandatory`, so `NotConfirmed` is raised when no queue took it; an event
    only outside systems may listen to (LeadSynced, ConversionSent) is not. Raises whatever the driver raises
    when the broker is unreachable; callers that answer someone (the ingress) turn that into a retryable error.

    The message goes straight to the broker's (robust) exchange object, not through FastStream's publish path:
    its middleware and message building cost about as much CPU as the publish itself (`bench_messaging`), and
    the ingress publishes once per lead while Meta waits for the answer.
    """
    routing_key = type(message).routing_key
    await publish_body(target, message.model_dump_json().encode(), routing_key, message_type=message.type,
                       message_id=message.message_id, correlation_id=message.correlation_id,
                       timestamp=message.occurred_at, confirm_within=confirm_within)
    metrics.published(message.type).inc()


async def publish_body(
    target: RabbitBroker | RabbitPublisher,
    body: bytes,
    routing_key: str,
    *,
    message_type: str,
    message_id: object,
    correlation_id: object | None,
    timestamp: datetime | None = None,
    confirm_within: float | None = None,
) -> None:
    """`publish` for a message already serialized (the outbox relay's rows): same exchange, flags and checks."""
    config = target.config if isinstance(target, RabbitBroker) else target._outer_config
    exchange = await config.declarer.declare_exchange(EXCHANGE, declare=False)  # cached by FastStream
    frame = await exchange.publish(
        aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=str(message_id),
            correlation_id=str(correlation_id) if correlation_id else None,
            type=message_type,
            timestamp=timestamp,
            app_id=config.app_id,
        ),
        routing_key,
        mandatory=has_consumer(routing_key),
        timeout=confirm_within,
    )
    ensure_confirmed(frame, routing_key)


async def claim(conn: asyncpg.Connection, consumer_name: str, message_id: object) -> bool:
    """Record that `consumer_name` handles `message_id`; False if it already did.

    Call inside the transaction that holds the handler's effect, so the claim and the effect commit together.
    """
    row = await conn.fetchval(
        "insert into processed_messages (consumer, message_id) values ($1, $2) "
        "on conflict do nothing returning true",
        consumer_name,
        str(message_id),
    )
    return bool(row)


@dataclass(frozen=True, slots=True)
class Consumed:
    """What the retry and park functions need of a consumed message, whichever path consumed it."""

    body: bytes
    headers: dict[str, Any]
    routing_key: str
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = None
    type: str | None = None
    timestamp: datetime | None = None

    @property
    def attempt(self) -> int:
        """1 for a first delivery; the attempt a retry copy carries otherwise (1 when that header is malformed)."""
        try:
            return parse_attempt(self.headers.get(H_ATTEMPT, 1))
        except MalformedHeaderError:
            return 1

    @property
    def first_failure(self) -> float | None:
        """When this message first failed (unix seconds); None on a first delivery (`first_failure`)."""
        return first_failure(self.headers)

    def wait_left(self) -> float:
        """Seconds this message still has to wait (a long delay hops tiers); 0 when it is due.

        Raises `MalformedHeaderError` for a not-before header that is not ours (`check_headers` finds it first).
        """
        not_before = parse_not_before(self.headers.get(H_NOT_BEFORE))
        left = not_before - time.time() if not_before else 0.0
        return left if left > 0.5 else 0.0


def first_failure(headers: dict[str, Any]) -> float | None:
    """When a message first failed (unix seconds), from its header; None on a first delivery (or a header that is
    not a plain number: the horizon then counts from now)."""
    value = headers.get(H_FIRST_FAILURE)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and 0 < seconds < time.time() + 60 else None


# Publishes a copy of a consumed message to a queue (through the default exchange, `mandatory`) with the given
# headers and returns once the broker confirmed it; raises otherwise.
Republish = Callable[[Consumed, str, dict[str, Any]], Awaitable[None]]


async def settle_failure(
    republish: Republish, msg: Consumed, spec: Consumer, exc: BaseException, *, max_attempts: int,
    guards: Guards | None = None,
) -> None:
    """Retry (through a delay tier) or park a message whose handling raised `exc`; count it as failed.

    Returns once the retry or parked copy was confirmed by the broker: the caller may then ack the original.
    Poison (`shared.poison.is_poison`: an undecodable message, a malformed header, data no retry can fix) and
    `PermanentError`: parked at once. `RetryLater` and a transient failure (`shared.retries.is_transient`: a
    dependency down or throttling): redelivered after its delay (or exponential backoff with jitter, up to
    `RETRY_BACKOFF_MAX_SECONDS`) until `RETRY_HORIZON_HOURS` have passed since the message first failed, then
    parked. Anything else (a bug): backoff, parked after `max_attempts`.
    """
    policy = guards.policy if guards is not None else DEFAULT_POLICY
    attempt = msg.attempt
    now = time.time()
    first_failure = msg.first_failure or now
    series = metrics.consumer_series(spec.service, spec.name)
    if is_poison(exc):
        await park(republish, msg, spec, describe(exc), attempt, guards=guards, first_failure=first_failure)
    elif isinstance(exc, PermanentError):
        await park(republish, msg, spec, f"permanent: {exc}", attempt, guards=guards, first_failure=first_failure)
    elif isinstance(exc, RetryLater | NotConfirmed) or is_transient(exc):
        reason = str(exc) if isinstance(exc, RetryLater | DependencyUnavailable) else f"{type(exc).__name__}: {exc}"
        if policy.expired(first_failure, now=now):
            hours = (now - first_failure) / 3600
            await park(republish, msg, spec, f"gave up after {hours:.1f} h and {attempt} attempts: {reason}",
                       attempt, guards=guards, first_failure=first_failure)
        else:
            if isinstance(exc, RetryLater):
                delay, next_attempt = exc.delay, attempt + 1 if exc.counts_attempt else attempt
            elif isinstance(exc, DependencyUnavailable):  # waits for the breaker: not an attempt of its own
                delay, next_attempt = exc.delay, attempt
            else:
                delay, next_attempt = policy.backoff(attempt), attempt + 1
            level = logging.DEBUG if isinstance(exc, DependencyUnavailable) else logging.WARNING
            logger.log(level, "retry in %.1fs: %s", delay, reason, extra=_ids(msg, spec, attempt))
            series.retried.inc()
            await redeliver(republish, msg, spec, delay, next_attempt, first_failure=first_failure)
    else:
        reason = f"{type(exc).__name__}: {exc}"
        if attempt >= max_attempts:
            logger.error("handler failed, attempts exhausted", exc_info=exc, extra=_ids(msg, spec, attempt))
            await park(republish, msg, spec, f"gave up after {attempt} attempts: {reason}", attempt, guards=guards,
                       first_failure=first_failure)
        else:
            delay = policy.backoff(attempt)
            logger.warning("handler failed (%s), retry in %.1fs", reason, delay, extra=_ids(msg, spec, attempt))
            series.retried.inc()
            await redeliver(republish, msg, spec, delay, attempt + 1, first_failure=first_failure)
    series.failed.inc()


async def redeliver(republish: Republish, msg: Consumed, spec: Consumer, delay: float, attempt: int, *,
                    first_failure: float | None = None) -> None:
    """Send a copy through the delay tier for `delay` (the rest of a longer wait is served by further hops)."""
    tier = delay_tier(delay)
    new_headers = {
        **_clean(msg.headers),
        H_QUEUE: spec.queue_name,
        H_ATTEMPT: attempt,
        H_NOT_BEFORE: f"{time.time() + delay:.3f}",
        H_ROUTING_KEY: msg.headers.get(H_ROUTING_KEY) or msg.routing_key or "",
    }
    if first_failure is not None:
        new_headers[H_FIRST_FAILURE] = f"{first_failure:.3f}"
    await republish(msg, delay_queue_name(tier), new_headers)


async def hop(republish: Republish, msg: Consumed, spec: Consumer) -> None:
    """A message still waiting out a long delay no single tier covers: through the tiers again, same attempt."""
    await redeliver(republish, msg, spec, msg.wait_left(), msg.attempt, first_failure=msg.first_failure)


async def park(republish: Republish, msg: Consumed, spec: Consumer, reason: str, attempt: int, *,
               guards: Guards | None = None, first_failure: float | None = None) -> None:
    """Copy the message to the consumer's parking queue with the reason (which never holds message values), when
    it first failed and when it was parked; then tell the service's incidents (one alert per incident)."""
    logger.error("parked: %s", reason, extra=_ids(msg, spec, attempt))
    metrics.consumer_series(spec.service, spec.name).parked.inc()
    now = datetime.now(UTC)
    new_headers = {
        **_clean(msg.headers),
        H_REASON: reason[:2000],
        H_ATTEMPT: attempt,
        H_PARKED_AT: now.isoformat(),
        H_FIRST_FAILURE: f"{first_failure if first_failure is not None else now.timestamp():.3f}",
        H_ROUTING_KEY: msg.headers.get(H_ROUTING_KEY) or msg.routing_key or "",
    }
    await republish(msg, spec.parking_queue_name, new_headers)
    if guards is not None and guards.on_parked is not None:
        try:
            guards.on_parked(spec, reason)
        except Exception:  # an alert must never fail the parking
            logger.exception("recording the parked message's incident failed")


@dataclass
class Guards:
    """What the retry machinery of one service uses: the retry policy, the database's circuit breaker (consumers
    wait while it is open), and who hears about parked messages (`shared.incidents`)."""

    policy: RetryPolicy = DEFAULT_POLICY
    database: CircuitBreaker | None = None
    on_parked: Callable[[Consumer, str], None] | None = None
    # Queues whose handler copes with the database down (the alerts consumer: an outage must be announced while
    # it lasts): never held by the database's breaker.
    independent: set[str] = field(default_factory=set)

    def gate(self, msg: Consumed, spec: Consumer | None = None) -> DependencyUnavailable | None:
        """None: handle the message now. Otherwise the database's breaker is open and the message waits."""
        breaker = self.database
        if breaker is None or (spec is not None and spec.queue_name in self.independent) or breaker.allow():
            return None
        breaker.hold(msg.message_id)
        return DependencyUnavailable("the database", breaker.wait_seconds())

    def report(self, exc: BaseException | None, spec: Consumer | None = None) -> None:
        """Tell the database's breaker how a handler call went (None: it succeeded)."""
        breaker = self.database
        if breaker is None or (spec is not None and spec.queue_name in self.independent):
            return
        if exc is not None and is_database_unavailable(exc):
            breaker.failed(describe(exc))
        else:
            breaker.succeeded()


class ReliableConsumer(BaseMiddleware):
    """Ack on success; on failure republish to a delay queue (bounded attempts) or park; then ack.

    Set on the broker, so every subscriber gets it; subscribers use `AckPolicy.MANUAL` so that FastStream's own
    acknowledgement logic stays out of the way. The retry and park decisions are `settle_failure`'s, shared with
    the batch path (`shared.bulk_consumer`).
    """

    max_attempts = 5
    guards: Guards | None = None

    @classmethod
    def factory(cls, *, max_attempts: int, guards: Guards | None = None) -> type[ReliableConsumer]:
        return type("ReliableConsumer", (cls,), {"max_attempts": max_attempts, "guards": guards})

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        subscriber = self.context.get_local("handler_")
        spec = by_queue_name(subscriber.queue.name) if subscriber is not None else None
        if spec is None:  # a subscriber outside our topology (tests, tooling): plain behaviour
            return await call_next(msg)
        raw = msg.raw_message
        consumed = Consumed(
            body=msg.body,
            headers=dict(msg.headers) if msg.headers else {},
            routing_key=raw.routing_key or "",
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            content_type=raw.content_type,
            type=raw.type,
            timestamp=raw.timestamp,
        )
        with correlation_scope(msg.correlation_id):
            try:
                check_headers(consumed.headers)
            except MalformedHeaderError as exc:  # parked at once, never looped on
                await self._settle(msg, spec, settle_failure(self._republish, consumed, spec, exc,
                                                             max_attempts=self.max_attempts, guards=self.guards))
                return None
            if consumed.wait_left():
                await self._settle(msg, spec, hop(self._republish, consumed, spec))
                return None
            guards = self.guards
            held = guards.gate(consumed, spec) if guards is not None else None
            if held is not None:  # the database is down: wait in a delay queue, do not call the handler
                await self._settle(msg, spec, settle_failure(self._republish, consumed, spec, held,
                                                             max_attempts=self.max_attempts, guards=guards))
                return None
            started = time.perf_counter()
            try:
                result = await call_next(msg)  # decodes with `shared.poison.decode` (`Service.subscribe`)
            except Exception as exc:
                if guards is not None:
                    guards.report(exc, spec)
                await self._settle(msg, spec, settle_failure(self._republish, consumed, spec, exc,
                                                             max_attempts=self.max_attempts, guards=guards))
                return None
            if guards is not None:
                guards.report(None, spec)
            await msg.ack()
            series = metrics.consumer_series(spec.service, spec.name)
            series.consumed.inc()
            series.handler_seconds.observe(time.perf_counter() - started)
            return result

    async def _settle(self, msg: StreamMessage[Any], spec: Consumer, copied: Awaitable[None]) -> None:
        """Ack once the retry, hop or parked copy is confirmed; if it is not, back to the queue (never left unacked)."""
        try:
            await copied
        except Exception as exc:
            logger.error("retry/park copy not confirmed (%s); message requeued", describe(exc),
                         extra={"message_id": msg.message_id, "queue": spec.queue_name})
            await msg.nack()  # RabbitMessage: requeue=True
            return
        await msg.ack()

    async def _republish(self, msg: Consumed, queue_name: str, headers: dict[str, Any]) -> None:
        broker: RabbitBroker = self.context.get("broker")
        frame = await broker.publish(
            msg.body,
            queue=queue_name,
            headers=headers,
            persist=True,
            mandatory=True,
            content_type=msg.content_type,
            message_id=msg.message_id,
            correlation_id=msg.correlation_id,
            message_type=msg.type,
            timestamp=msg.timestamp,
        )
        ensure_confirmed(frame, queue_name)


def _clean(headers: dict[str, Any]) -> dict[str, Any]:
    # x-death grows with every dead-lettering hop; our own headers carry what matters.
    return {k: v for k, v in headers.items() if k not in {"x-death", "x-first-death-exchange",
                                                          "x-first-death-queue", "x-first-death-reason",
                                                          H_NOT_BEFORE, H_QUEUE}}


def _ids(msg: Consumed, spec: Consumer, attempt: int) -> dict[str, Any]:
    return {"message_id": msg.message_id, "queue": spec.queue_name, "attempt": attempt}
