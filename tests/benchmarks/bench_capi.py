"""Benchmark: ConversionRequested messages from the broker, normalized, hashed, batched and sent to the sandbox.

Run: ``python -m tests.benchmarks.bench_capi [--events 20000] [--solo-events 5000] [--baseline-events 2000]``.
Needs RabbitMQ and PostgreSQL (as for the tests; it uses the `leadwire_bench` database). Starts the Graph sandbox in
a subprocess.

Prints:
* end to end: events per second from the moment the capi_sender starts on a queue holding `--events` messages
  until all are recorded as sent in `capi_events` (goal >= 5,000/s), and requests per 1,000 events (goal 1);
  with the CPU the sender's process and the sandbox's process spent per event meanwhile (the machine's other
  load makes events/s noisy; CPU per event much less so);
* the sender without the broker (`CapiSender.process_many` called directly, 1,000 messages a call, as the batch
  handler does): the cost of our own part;
* for comparison, the approach of Meta's guide / SDK examples: a loop posting one event per request
  (same normalization and hashing, no broker, no database), on `--baseline-events` events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import asyncpg
from prometheus_client import REGISTRY

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage
from services.capi_sender.app import create_app
from services.capi_sender.events import PreparedEvent, prepare_event
from services.capi_sender.settings import CapiSettings
from shared.cli import run_event_loop
from shared.db.migrate import ensure_database, migrate
from shared.db.pool import _init_connection
from shared.logging import configure_logging
from shared.messaging import declare_topology
from shared.settings import BrokerSettings, DatabaseSettings, MetaSettings, OpsSettings, Settings
from shared.topology import EXCHANGE, Consumer, register
from tests.fixtures.infra import AMQP_URL, BENCH_DSN, unique

APP_SECRET = "bench-app-secret"
TOKEN = "bench-token"
VERSION = "v26.0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of another process (Linux /proc; 0 where that is not available)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (backends, WAL writer, checkpointer, autovacuum)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/comm") as comm:
                if comm.read().strip() == "postgres":
                    total += process_cpu_seconds(int(entry.name))
    return total


def events_sent() -> float:
    return REGISTRY.get_sample_value("leadwire_capi_events_sent_total") or 0.0


SANDBOX_PID: list[int] = []


@contextlib.asynccontextmanager
async def sandbox_process() -> AsyncIterator[tuple[str, str]]:
    """The Graph sandbox in its own process (so its CPU is not the sender's); yields (url, pixel_id)."""
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.graph_sandbox", "--port", str(port), "--app-secret", APP_SECRET,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    SANDBOX_PID[:] = [process.pid]
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/_sandbox/state") as resp:
                        if resp.status == 200:
                            state = await resp.json()
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("the sandbox did not start")
        yield url, state["pixel_id"]
    finally:
        process.terminate()
        await process.wait()


def make_requests(count: int, *, seed: str, start: int = 0) -> list[ConversionRequested]:
    """CRM events with clear PII (e-mail, phone, names, city, ZIP) so normalization and hashing are exercised."""
    now = int(time.time()) - 120
    return [
        ConversionRequested(
            event_name="QualifiedLead",
            event_time=now,
            event_id=f"{seed}-{index}",
            user={
                "lead_id": str(10**15 + index),
                "email": f"Person.{index}@Example.com",
                "phone": f"(312) 555-{index % 10000:04d}",
                "first_name": "Mary",
                "last_name": f"O'Brien{index % 97}",
                "city": "Chicago",
                "zip": "60601-1234",
            },
            crm_name="Litify",
        )
        for index in range(start, start + count)
    ]


async def bench_pipeline(url: str, pixel_id: str, events: int, linger_ms: int) -> dict[str, float]:
    settings = Settings(
        database=DatabaseSettings(database_url=BENCH_DSN, db_pool_min=2, db_pool_max=10),
        broker=BrokerSettings(amqp_url=AMQP_URL, RETRY_ATTEMPTS=3),
        ops=OpsSettings(ops_port=0),
        meta=MetaSettings(pixel_id=pixel_id, graph_url=url, access_token=TOKEN, app_secret=APP_SECRET),
        capi=CapiSettings(capi_linger_ms=linger_ms),
    )
    source = register(Consumer(unique("capibench_"), "conversion_requested", (f"bench.{unique('capi')}",)))
    seed = unique("bench")

    connection = await aio_pika.connect_robust(AMQP_URL)
    service = create_app(settings, source=source)
    pool = await asyncpg.create_pool(BENCH_DSN, min_size=1, max_size=2)
    # Every run starts from an empty send log and outbox (the database is the benchmark's own): rows left by earlier
    # runs would make the figures drift from run to run.
    await pool.execute("truncate capi_events, outbox")
    try:
        await service.broker.connect()
        await declare_topology(service.settings.broker.amqp_url.get_secret_value(), [source])
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE.name)
        started = time.perf_counter()
        # Built a thousand at a time and dropped once published: the producer is not part of the sender's process,
        # and 20,000 live envelopes here would make every full garbage collection of the sender's process slower.
        for start in range(0, events, 1000):
            chunk = [ConversionRequestedMessage.new(r) for r in make_requests(min(1000, events - start), seed=seed,
                                                                              start=start)]
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(m.model_dump_json().encode(), content_type="application/json",
                                     message_id=str(m.message_id), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=source.routing_keys[0],
                )
                for m in chunk
            ))
        del chunk
        published = time.perf_counter() - started

        started = time.perf_counter()
        cpu_started = time.process_time()
        sandbox_cpu_started = process_cpu_seconds(SANDBOX_PID[0])
        database_cpu_started = database_cpu_seconds()
        await service.start()
        # Progress from the sender's own counter, bumped once a batch's 'sent' rows are committed: polling the
        # table instead would put the benchmark's own queries on the database it measures.
        sent_before = events_sent()
        while events_sent() - sent_before < events:
            await asyncio.sleep(0.05)
            if time.perf_counter() - started > 110:
                raise RuntimeError(f"only {events_sent() - sent_before:.0f} of {events} sent after 110 s")
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        sandbox_cpu = process_cpu_seconds(SANDBOX_PID[0]) - sandbox_cpu_started
        database_cpu = database_cpu_seconds() - database_cpu_started
        logged = await pool.fetchval(
            "select count(*) from capi_events where status = 'sent' and event_id like $1", f"{seed}-%"
        )
        if logged != events:
            raise RuntimeError(f"{logged} of {events} events are logged as sent")
        async with aiohttp.ClientSession() as session, session.get(f"{url}/_sandbox/calls") as resp:
            calls = await resp.json()
        requests = calls["by_path"].get(f"POST /{pixel_id}/events", 0)
    finally:
        try:
            await service.stop()
        except Exception as exc:  # report the figure even if the broker is slow to cancel the consumer
            print(f"(stopping the service failed: {type(exc).__name__})")
        with contextlib.suppress(Exception):
            channel = await connection.channel()
            await channel.queue_delete(source.queue_name)
            await channel.queue_delete(source.parking_queue_name)
        await connection.close()
        await pool.close()
    return {"published_s": published, "elapsed_s": elapsed, "cpu_s": cpu, "sandbox_cpu_s": sandbox_cpu,
            "database_cpu_s": database_cpu,
            "requests": requests}


async def bench_sender_only(url: str, pixel_id: str, events: int) -> dict[str, float]:
    """The same work without the broker: normalize, hash, batch, claim, POST, record (how fast our part is)."""
    from services.capi_sender.logic import CapiSender, post_events
    from shared.graph import GraphClient

    meta = MetaSettings(pixel_id=pixel_id, graph_url=url, access_token=TOKEN, app_secret=APP_SECRET)
    messages = [ConversionRequestedMessage.new(r) for r in make_requests(events, seed=unique("solo"))]
    pool = await asyncpg.create_pool(BENCH_DSN, min_size=2, max_size=10, init=_init_connection)
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, meta)
            sender = CapiSender(
                pool=lambda: pool,
                post=lambda batch: post_events(graph, batch),
                settings=CapiSettings(capi_linger_ms=500),
                default_pixel_id=pixel_id,
            )
            started = time.perf_counter()
            # As the service's batch handler calls it: consumer batches of 1,000, several in flight.
            await asyncio.gather(*(sender.process_many(messages[i:i + 1000]) for i in range(0, len(messages), 1000)))
            elapsed = time.perf_counter() - started
    finally:
        await pool.close()
    return {"elapsed_s": elapsed}


async def bench_one_per_request(url: str, pixel_id: str, events: int) -> dict[str, float]:
    """Meta's guide: build one event, POST it, wait for the answer, next (no batching, no concurrency)."""
    requests = make_requests(events, seed=unique("base"))
    graph = f"{url}/{VERSION}/{pixel_id}/events"
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for request in requests:
            prepared = prepare_event(request, now=int(time.time()), default_pixel_id=pixel_id)
            if not isinstance(prepared, PreparedEvent):
                raise RuntimeError(f"baseline event not sendable: {prepared}")
            async with session.post(
                graph, json={"data": [prepared.server_event]}, headers={"Authorization": f"OAuth {TOKEN}"}
            ) as resp:
                body: dict[str, Any] = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"sandbox refused an event: {body}")
    return {"elapsed_s": time.perf_counter() - started, "requests": events}


async def run(args: argparse.Namespace) -> None:
    await ensure_database(BENCH_DSN)
    await migrate(BENCH_DSN)
    async with sandbox_process() as (url, pixel_id):
        result = await bench_pipeline(url, pixel_id, args.events, args.linger_ms)
        rate = args.events / result["elapsed_s"]
        print(f"events:                    {args.events}")
        print(f"publish to broker:         {result['published_s']:.2f} s (not part of the figure below)")
        print(f"broker -> sandbox, logged: {result['elapsed_s']:.2f} s = {rate:,.0f} events/s  (goal >= 5,000/s)")
        print(f"sender process CPU:        {1e6 * result['cpu_s'] / args.events:.0f} us per event "
              f"({100 * result['cpu_s'] / result['elapsed_s']:.0f}% of one core; the sandbox, broker and database "
              "run in other processes)")
        print(f"sandbox process CPU:       {1e6 * result['sandbox_cpu_s'] / args.events:.0f} us per event "
              "(parsing and validating the requests)")
        print(f"database CPU:              {1e6 * result['database_cpu_s'] / args.events:.0f} us per event "
              "(all PostgreSQL processes: the send log and outbox writes)")
        print(f"requests:                  {result['requests']} = "
              f"{1000 * result['requests'] / args.events:.2f} per 1,000 events  (goal 1)")
        solo = await bench_sender_only(url, pixel_id, args.solo_events)
        print(f"same, without the broker:  {args.solo_events / solo['elapsed_s']:,.0f} events/s "
              "(normalize, hash, batch, log, POST: our part of the cost)")
        base = await bench_one_per_request(url, pixel_id, args.baseline_events)
        base_rate = args.baseline_events / base["elapsed_s"]
        print(f"one event per request:     {args.baseline_events} events in {base['elapsed_s']:.2f} s = "
              f"{base_rate:,.0f} events/s, 1,000 requests per 1,000 events")
        fewer = args.events / max(result["requests"], 1)
        print(f"compared:                  {rate / base_rate:.1f}x the events/s, {fewer:.0f}x fewer requests")
    if rate < 5000 or result["requests"] > -(-args.events // 1000):
        sys.exit(1)  # `make bench` lists the goals missed


def main(argv: list[str] | None = None) -> None:
    configure_logging("WARNING", "text")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=2_000)
    parser.add_argument("--solo-events", type=int, default=5_000)
    parser.add_argument("--linger-ms", type=int, default=500)
    run_event_loop(run(parser.parse_args(argv)))  # the loop `leadwire run` gives the sender


if __name__ == "__main__":
    main()
