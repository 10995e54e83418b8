"""What every service process is made of: a FastStream app on RabbitMQ, its resources, its ops endpoints.

A service module builds one `Service` in its `create_app(settings)`, registers subscribers on `service.broker`
and background jobs with `service.background`, and returns it. `Service.start()` opens resources (database
pool, HTTP session, Graph client), declares the broker topology for its consumers, starts consuming, then starts
background jobs and the ops server. `Service.stop()` reverses that: background jobs are cancelled, the broker
drains in-flight messages (graceful timeout), connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import inspect
import logging
import socket
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import aio_pika
import aiohttp
import asyncpg
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.rabbit import Channel, QueueType, RabbitBroker, RabbitQueue
from faststream.rabbit.publisher import RabbitPublisher

from contracts.envelope import Envelope
from shared import ops
from shared.bulk_consumer import BulkConsumer
from shared.db.pool import create_pool
from shared.incidents import Incidents
from shared.logging import register_secret
from shared.messaging import Guards, declare_topology, make_broker
from shared.poison import decode
from shared.retries import CircuitBreaker, RetryPolicy
from shared.settings import OpsSettings, Settings
from shared.topology import CONSUMERS, EXCHANGE, Consumer, consumers_of

if TYPE_CHECKING:
    from aiohttp import web
    from faststream.message import StreamMessage

    from contracts.alerts import AlertRaised
    from shared.graph.client import GraphClient

logger = logging.getLogger(__name__)

DATABASE_FIX = ("Check PostgreSQL at DATABASE_URL (`leadwire migrate` connects to it and says why it cannot); messages "
                "wait and are retried for RETRY_HORIZON_HOURS, none is parked meanwhile.")


@dataclass(frozen=True)
class Port:
    """A port a service serves on, and the variable that chose it (named when the port is taken)."""

    number: int
    variable: str


class PortInUseError(OSError):
    """A service's port is taken by another process; the message names the port and the variable to change."""

    def __init__(self, host: str, port: Port, service: str) -> None:
        super().__init__(
            errno.EADDRINUSE,
            f"{service}: port {port.number} on {host} is already in use: free it or set {port.variable}",
        )

    def __str__(self) -> str:
        return str(self.strerror)


def ensure_free(host: str, port: Port, service: str) -> None:
    """Raise `PortInUseError` now if `port` is taken (a fixed port only; 0 picks a free one)."""
    if port.number == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port.number))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(host, port, service) from None
            raise


@dataclass(frozen=True)
class ServiceSpec:
    """What the `leadwire` command knows of a service. `services/registry.py` lists one per service.

    `ops_port_offset`: `leadwire run` serves the service's /healthz, /readyz and /metrics on OPS_PORT_BASE + offset
    (on OPS_PORT when that is set, for one service alone). None: the service serves on a port of its own setting
    (the ingress: INGRESS_PORT, its webhooks and ops routes together).
    `register_cli(subparsers)` adds the service's own subcommands; `workers(settings)` is how many processes
    `leadwire run <name>` alone starts side by side on one port.
    """

    name: str
    create_app: Callable[[Settings | None], Service]
    ops_port_offset: int | None = None
    register_cli: Callable[[Any], None] | None = None
    workers: Callable[[Settings], int] | None = None

    def ops_port(self, ops: OpsSettings) -> Port | None:
        """The port `leadwire run` gives this service, or None where the service chooses its own."""
        if self.ops_port_offset is None:
            return None
        if ops.ops_port is not None:
            return Port(ops.ops_port, "OPS_PORT")
        return Port(ops.ops_port_base + self.ops_port_offset, "OPS_PORT_BASE")


BackgroundJob = Callable[[], Awaitable[None]]

D = TypeVar("D")


class Started(Generic[D]):
    """What a service built once started (its dependencies object), reached as `deps()` by handlers and jobs.

    `Service.on_started(build)` returns one; `build(service)` runs in `Service.start()` after the pool, HTTP
    session and Graph client opened and before any message is consumed, so a handler never sees it missing.
    Calling it before start (or after stop) raises instead of handing out None.
    """

    def __init__(self, service: str, build: Callable[[Service], D | Awaitable[D]],
                 close: Callable[[D], Awaitable[None]] | None) -> None:
        self._service = service
        self._build = build
        self._close = close
        self._value: D | None = None

    def __call__(self) -> D:
        if self._value is None:
            raise RuntimeError(f"{self._service}: dependencies used before start")
        return self._value

    @property
    def value(self) -> D | None:
        """The built object, or None before start."""
        return self._value

    async def open(self, service: Service) -> None:
        built = self._build(service)
        self._value = await built if inspect.isawaitable(built) else built

    async def aclose(self) -> None:
        value, self._value = self._value, None
        if value is not None and self._close is not None:
            await self._close(value)


class Service:
    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        uses_database: bool = True,
        uses_graph: bool = False,
    ) -> None:
        self.name = name
        self.settings = settings or Settings()
        self.uses_database = uses_database
        self.uses_graph = uses_graph
        broker_settings = self.settings.broker
        self.retry_policy = RetryPolicy.from_settings(broker_settings)
        # One incident, one alert: breakers opening and messages parked become incidents (`shared.incidents`).
        self.incidents = Incidents(name, reminder_seconds=broker_settings.alert_reminder_minutes * 60)
        self.guards = Guards(self.retry_policy, on_parked=self.incidents.parked)
        if uses_database:  # consumers wait while the database is down, one probe at a time
            self.guards.database = self.breaker("database", label="the database", what="messages", fix=DATABASE_FIX)
        self.broker: RabbitBroker = make_broker(broker_settings, service=name, guards=self.guards)
        self.app = FastStream(self.broker)
        self._background: list[tuple[str, BackgroundJob]] = []
        self._publishers: dict[type[Envelope[Any]], RabbitPublisher] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._bulk_consumers: list[BulkConsumer[Any]] = []
        self._started: list[Started[Any]] = []
        self._ops_runner: web.AppRunner | None = None
        # Where the ops routes (and a web app's own) are served: `leadwire run` sets it from the registry; a
        # service started on its own serves on OPS_PORT, or on a free port.
        self.port = Port(self.settings.ops.ops_port or 0, "OPS_PORT")
        self.ops_port: int | None = None  # the port actually bound, once started
        self.pool: asyncpg.Pool | None = None
        self.http: aiohttp.ClientSession | None = None
        self.graph: GraphClient | None = None
        # A service with a public HTTP API (the ingress) sets this; the ops routes are mounted on that app.
        self.web_app: Callable[[], web.Application] | None = None
        self.web_host = self.settings.ops.ops_host
        self.web_reuse_port = False  # worker processes share the port (INGRESS_WORKERS, CAPI_WORKERS)
        # Longest a connection may take to send a request's headers (from connect, or from the previous answer);
        # aiohttp's own default is an hour, which a slow-loris client uses to hold connections open.
        self.web_header_timeout: float | None = None
        for secret in (
            self.settings.meta.app_secret,
            self.settings.meta.access_token,
            self.settings.meta.page_access_token,
            self.settings.meta.webhook_verify_token,
        ):
            register_secret(secret.get_secret_value())

    def subscribe(self, consumer: Consumer, *, prefetch: int | None = None) -> Any:
        """Decorator registering a handler on a consumer's queue (declared by `declare_topology`).

        Acks are manual: `ReliableConsumer` acks after the handler returned, or after a retry or parked copy
        was confirmed. `prefetch` gives this consumer its own channel and limit (a batching consumer needs at
        least one batch of unacknowledged messages in flight); default `PREFETCH_COUNT`.
        """
        queue = RabbitQueue(
            consumer.queue_name,
            queue_type=QueueType.QUORUM,
            durable=True,
            declare=False,
            routing_key=consumer.routing_keys[0],
        )

        def register(handler: Callable[..., Any]) -> Any:
            return self.broker.subscriber(
                queue,
                EXCHANGE,
                channel=Channel(prefetch_count=prefetch) if prefetch is not None else None,
                ack_policy=AckPolicy.MANUAL,
                title=consumer.queue_name,
                no_reply=True,
                decoder=_envelope_decoder(handler),
            )(handler)

        return register

    def subscribe_batch(
        self, consumer: Consumer, *, max_batch: int = 1000, linger: float = 0.05, prefetch: int | None = None
    ) -> Any:
        """Decorator registering a batch handler on a consumer's queue (`shared.bulk_consumer`).

        The handler takes `list[<envelope class>]` (the batch's valid messages, in delivery order) and returns
        None (all done) or one result per message: None, or the exception that message failed with (retried or
        parked exactly as `subscribe`'s handlers' exceptions are). Messages are acknowledged once their batch's
        effect is durable. `prefetch` (default two batches) bounds the unacknowledged messages in flight.
        """

        def register(handler: Callable[..., Any]) -> Any:
            message_cls = _batch_message_class(handler)
            bulk_consumer: BulkConsumer[Any] = BulkConsumer(
                consumer,
                handler,
                message_cls,
                amqp_url=self.settings.broker.amqp_url.get_secret_value(),
                max_batch=max_batch,
                linger=linger,
                prefetch=prefetch if prefetch is not None else 2 * max_batch,
                max_attempts=self.settings.broker.retry_attempts,
                graceful_timeout=self.settings.broker.graceful_timeout_seconds,
                guards=self.guards,
            )
            self._bulk_consumers.append(bulk_consumer)
            self._document_subscriber(consumer, message_cls, handler)
            return handler

        return register

    def batch_consumer(self, consumer: Consumer) -> BulkConsumer[Any]:
        """The `BulkConsumer` that `subscribe_batch` registered on `consumer`'s queue."""
        found = [c for c in self._bulk_consumers if c.consumer.queue_name == consumer.queue_name]
        if not found:
            raise KeyError(f"no batch handler on {consumer.queue_name}")
        return found[0]

    def _document_subscriber(self, consumer: Consumer, message_cls: type[Any], handler: Callable[..., Any]) -> None:
        """Describe a batch consumer's channel in the AsyncAPI document as a FastStream subscriber would be.

        The subscriber is the document's only: it never starts, the `BulkConsumer` consumes the queue.
        """

        async def one(message: Any) -> None:  # pragma: no cover - never called
            raise RuntimeError("documentation-only subscriber")

        one.__annotations__ = {"message": message_cls, "return": None}
        one.__name__ = one.__qualname__ = getattr(handler, "__name__", "handle_batch")
        one.__doc__ = handler.__doc__
        subscriber = self.broker.subscriber(
            RabbitQueue(
                consumer.queue_name, queue_type=QueueType.QUORUM, durable=True, declare=False,
                routing_key=consumer.routing_keys[0],
            ),
            EXCHANGE,
            ack_policy=AckPolicy.MANUAL,
            title=consumer.queue_name,
            no_reply=True,
        )
        subscriber(one)

        async def never_start() -> None:
            return None

        subscriber.start = never_start  # type: ignore[method-assign]

    def publisher(self, message_cls: type[Envelope[Any]], description: str | None = None) -> RabbitPublisher:
        """The declared publisher for one message type (documented in the AsyncAPI file); one per type."""
        if message_cls in self._publishers:
            return self._publishers[message_cls]
        self._publishers[message_cls] = self.broker.publisher(
            exchange=EXCHANGE,
            routing_key=message_cls.routing_key,
            schema=message_cls,
            persist=True,
            title=f"{message_cls.routing_key}:{self.name}",
            description=description or (message_cls.__doc__ or "").strip() or None,
        )
        return self._publishers[message_cls]

    def monitor_meta_health(self, interval: float = 3600.0) -> None:
        """Check token, permissions and Page subscriptions every `interval` s; raise `AlertRaised` on trouble."""
        from contracts.messages import AlertRaisedMessage
        from shared.doctor import HealthMonitor
        from shared.messaging import publish

        alerts = self.publisher(AlertRaisedMessage, "Meta connection health: token, permissions, subscriptions.")

        async def raise_alert(alert: AlertRaised) -> None:
            await publish(alerts, AlertRaisedMessage.new(alert))

        async def job() -> None:
            if self.graph is None:
                raise RuntimeError("monitor_meta_health needs uses_graph=True")
            await HealthMonitor(self.graph, self.settings.meta, raise_alert, service=self.name, interval=interval).run()

        self.background("meta_health", job)

    def breaker(self, name: str, *, label: str, what: str, fix: str) -> CircuitBreaker:
        """A circuit breaker for one dependency of this service (`shared.retries`), whose opening and closing are
        an incident (`shared.incidents`): "<n> <what> waiting for <label> since 09:12 UTC", with `fix`."""
        incidents = self.incidents
        return self.retry_policy.breaker(
            name,
            on_open=lambda b: incidents.breaker_opened(b, label=label, what=what, fix=fix),
            on_close=lambda b: incidents.breaker_closed(b, label=label, what=what),
        )

    async def _send_incident_alerts(self) -> None:
        """Background job: the incidents' alerts, straight to the broker (the database may be what is down)."""
        from contracts.messages import AlertRaisedMessage
        from shared.messaging import publish
        from shared.parked import count_parked

        amqp_url = self.settings.broker.amqp_url.get_secret_value()

        async def send(alert: AlertRaised) -> None:
            await publish(self.broker, AlertRaisedMessage.new(alert), confirm_within=10)

        async def count(queue_name: str) -> int:
            connection = await aio_pika.connect(amqp_url, timeout=10)
            async with connection:
                return await count_parked(await connection.channel(publisher_confirms=False), queue_name)

        await self.incidents.run(send, count)

    def relay_outbox(self) -> None:
        """Publish what this service's transactions wrote to the outbox (a background job)."""
        from shared.outbox import OutboxRelay

        async def job() -> None:
            await OutboxRelay(self.db, self.broker).run()

        self.background("outbox_relay", job)

    def on_started(
        self, build: Callable[[Service], D | Awaitable[D]], *, close: Callable[[D], Awaitable[None]] | None = None
    ) -> Started[D]:
        """Declare the dependencies built once the service's resources are open; returns their typed accessor.

        `build(service)` (plain or async) runs in `start()` after the database pool, HTTP session and Graph
        client opened, before consuming starts; `close(deps)` runs in `stop()` after consuming stopped. Handlers
        and background jobs take the returned `Started` and call it: `deps().sender`. The one way to reach what
        exists only after start (no holder lists, lambdas or attributes patched onto the service).
        """
        started: Started[D] = Started(self.name, build, close)
        self._started.append(started)
        return started

    def dependencies(self, kind: type[D]) -> D:
        """The started dependencies object of type `kind` (for tests and tools holding only the `Service`)."""
        for started in self._started:
            if isinstance(started.value, kind):
                return started.value
        raise LookupError(f"{self.name}: no started dependencies of type {kind.__name__}")

    @property
    def graph_client(self) -> GraphClient:
        """The Graph client (a service built with `uses_graph=True`, once started)."""
        if self.graph is None:
            raise RuntimeError(f"{self.name}: Graph client used before start (or uses_graph=False)")
        return self.graph

    def background(self, name: str, job: BackgroundJob) -> None:
        """Run `job` (a coroutine function) once the broker consumes; it is cancelled on stop."""
        self._background.append((name, job))

    @property
    def db(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError(f"{self.name}: database pool used before start")
        return self.pool

    async def start(self) -> None:
        if self.uses_database:
            self.pool = await create_pool(self.settings.database)
        if self.uses_graph:
            from shared.graph.client import GraphClient

            timeout = aiohttp.ClientTimeout(total=self.settings.meta.request_timeout_seconds)
            self.http = aiohttp.ClientSession(timeout=timeout)
            self.graph = GraphClient(
                self.http, self.settings.meta, max_wait=self.settings.meta.graph_max_wait_seconds
            )
        for started in self._started:
            await started.open(self)
        await self.broker.connect()
        # Every consumer's queue, not only ours: a message published before its consumer ever ran must be
        # queued for it, not returned as unroutable.
        await declare_topology(
            self.settings.broker.amqp_url.get_secret_value(), dict.fromkeys((*CONSUMERS, *consumers_of(self.name)))
        )
        await self.app.start()
        for bulk_consumer in self._bulk_consumers:
            await bulk_consumer.start()
        self._tasks.append(asyncio.create_task(self._supervise("incidents", self._send_incident_alerts),
                                               name=f"{self.name}.incidents"))
        for job_name, job in self._background:
            self._tasks.append(asyncio.create_task(self._supervise(job_name, job), name=f"{self.name}.{job_name}"))
        app = self.web_app() if self.web_app is not None else None
        try:
            self._ops_runner, self.ops_port = await ops.serve(
                self, self.web_host, self.port.number, app, reuse_port=self.web_reuse_port,
                header_timeout=self.web_header_timeout,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(self.web_host, self.port, self.name) from None
            raise
        _tune_garbage_collector()
        logger.info("%s started", self.name, extra={"service": self.name, "ops_port": self.ops_port})

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for bulk_consumer in self._bulk_consumers:  # drains in-flight batches within the graceful timeout
            await bulk_consumer.stop()
        await self.app.stop()  # drains in-flight messages within the broker's graceful timeout
        if self._ops_runner is not None:
            await self._ops_runner.cleanup()
        for started in reversed(self._started):
            await started.aclose()
        if self.http is not None:
            await self.http.close()
        if self.pool is not None:
            await self.pool.close()
        logger.info("%s stopped", self.name, extra={"service": self.name})

    async def ready(self) -> dict[str, bool]:
        """What /readyz reports: each dependency reachable right now."""
        checks = {"broker": await _check(self.broker.ping(timeout=2.0))}
        if self._bulk_consumers:  # their own connections: consuming right now, not reconnecting
            checks["batch_consumers"] = all(bulk_consumer.consuming for bulk_consumer in self._bulk_consumers)
        if self.uses_database:
            checks["database"] = self.pool is not None and await _check(self.pool.fetchval("select 1"))
        return checks

    async def _supervise(self, name: str, job: BackgroundJob) -> None:
        """Keep a background job running: log and restart it (with a pause) if it crashes."""
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("background job %s crashed; restarting in 5 s", name)
                await asyncio.sleep(5)


def _envelope_decoder(handler: Callable[..., Any]) -> Callable[[StreamMessage[Any]], Awaitable[Any]] | None:
    """A decoder parsing the body straight into the handler's envelope class, if its one argument is one.

    FastStream's own decoder parses the JSON into a dict and lets fast_depends build the model from that: twice
    the work. The handler's argument is then already an instance of its annotation, which pydantic passes through
    without validating again. It decodes with `shared.poison.decode`: whatever fails (invalid JSON or contract, a
    validator's OverflowError, a NUL or non-finite number no store can hold) raises `PoisonError` inside the
    middleware's `call_next`, which parks the message at once.
    """
    try:
        hints = typing.get_type_hints(handler)
    except Exception:  # an annotation that does not resolve: leave decoding to FastStream
        return None
    hints.pop("return", None)
    params = list(inspect.signature(handler).parameters)
    if len(params) != 1 or params[0] not in hints:
        return None
    envelope_cls = hints[params[0]]
    if not (isinstance(envelope_cls, type) and issubclass(envelope_cls, Envelope)):
        return None
    async def decode_body(message: StreamMessage[Any]) -> Any:
        return decode(envelope_cls, message.body)

    return decode_body


# First-generation threshold of the cycle collector (CPython's default: 700 allocations).
GC_GEN0_THRESHOLD = 10_000


def _tune_garbage_collector() -> None:
    """Keep start-up objects out of the collector's full passes, and run it less often.

    Modules, settings and pools live as long as the process, yet every full collection walks them again, and a
    batch consumer holding thousands of messages in flight triggers many. In `bench_capi` (20,000 events) the
    collector took 2.1-2.4 s of the capi_sender's ~8 s of CPU; with start-up objects frozen and a larger first
    generation, 1.3-1.4 s. Safe to run once per service of a `leadwire run all` process.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(GC_GEN0_THRESHOLD, gen0), gen1, gen2)


def _batch_message_class(handler: Callable[..., Any]) -> type[Envelope[Any]]:
    """The envelope class of a batch handler's one argument, annotated `list[<envelope class>]`."""
    hints = typing.get_type_hints(handler)
    hints.pop("return", None)
    params = list(inspect.signature(handler).parameters)
    if len(params) == 1 and params[0] in hints:
        args = typing.get_args(hints[params[0]])
        if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], Envelope):
            return args[0]
    raise TypeError(f"{handler!r}: a batch handler takes one argument annotated list[<envelope class>]")


async def _check(probe: Awaitable[object]) -> bool:
    try:
        return bool(await asyncio.wait_for(probe, timeout=2.0))
    except Exception:
        return False


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    return urlsplit(url).password
