"""Benchmark: ConversionRequested messages from the broker, normalized, hashed, batched and sent to the sandbox.

Run: ``python -m tests.benchmarks.bench_capi [--events 20000] [--workers 2] [--solo-events 5000]
[--baseline-events 2000]``. Needs RabbitMQ (with `rabbitmqctl` or the management API, for a throwaway vhost) and
PostgreSQL (it uses the `leadwire_bench` database). Starts the Graph sandbox in a subprocess.

Prints:
* end to end, as deployed: `leadwire run capi_sender` with CAPI_WORKERS=1 and =`--workers`, on a queue holding
  `--events` messages: events per second from the first worker ready until the sandbox has them all (goal
  >= 5,000/s), requests per 1,000 events (goal 1), and the CPU per event of the sender's processes, of PostgreSQL
  and of the sandbox (the machine's other load makes events/s noisy; CPU per event much less so);
* one sender without the broker (`Worker.process_many` called directly, 1,000 messages a call, as the batch
  handler does): the cost of our own part;
* for comparison, the approach of Meta's guide / SDK examples: a loop posting one event per request
  (same normalization and hashing, no broker, no database), on `--baseline-events` events.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import asyncpg

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage
from services.capi_sender.events import PreparedEvent, prepare_event
from services.capi_sender.settings import CapiSettings
from shared.cli import run_event_loop
from shared.db.migrate import ensure_database, migrate
from shared.db.pool import _init_connection
from shared.logging import configure_logging
from shared.messaging import declare_topology
from shared.settings import MetaSettings
from shared.topology import EXCHANGE, consumer
from tests.benchmarks.bench_ingress import bench_broker
from tests.fixtures.infra import BENCH_DSN, free_port, unique

APP_SECRET = "bench-app-secret"
TOKEN = "bench-token"
VERSION = "v26.0"


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


SANDBOX_PID: list[int] = []


@contextlib.asynccontextmanager
async def sandbox_process() -> AsyncIterator[tuple[str, str]]:
    """The Graph sandbox in its own process (so its CPU is not the sender's); yields (url, pixel_id)."""
    port = free_port()
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


async def bench_pipeline(url: str, pixel_id: str, events: int, linger_ms: int, workers: int) -> dict[str, float]:
    """`leadwire run capi_sender` with CAPI_WORKERS=`workers`, as deployed, on a queue holding `events` messages.

    The clock starts when the first worker answers /readyz (it consumes from then on) and stops when the sandbox
    has all events; then every event must be logged as sent in `capi_events`.
    """
    async with bench_broker() as amqp_url:
        await declare_topology(amqp_url, [SOURCE])
        seed = unique("bench")
        published = await publish_requests(amqp_url, events, seed)
        pool = await asyncpg.create_pool(BENCH_DSN, min_size=1, max_size=2)
        # Every run starts from an empty send log and outbox (the database is the benchmark's own): rows left by
        # earlier runs would make the figures drift from run to run.
        await pool.execute("truncate capi_events, outbox")
        port = free_port()
        env = {**os.environ, "AMQP_URL": amqp_url, "DATABASE_URL": BENCH_DSN, "CAPI_WORKERS": str(workers),
               "CAPI_LINGER_MS": str(linger_ms), "META_GRAPH_URL": url, "META_ACCESS_TOKEN": TOKEN,
               "META_APP_SECRET": APP_SECRET, "META_PIXEL_ID": pixel_id, "META_HEALTH_CHECK_SECONDS": "0",
               "OPS_HOST": "127.0.0.1", "OPS_PORT": str(port), "LOG_LEVEL": "WARNING"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services", "run", "capi_sender", env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as http:
                before = await sandbox_count(http, url, pixel_id)
                await wait_ready(http, f"http://127.0.0.1:{port}/readyz")
                started = time.perf_counter()
                pids = [process.pid, *worker_pids(process.pid)]
                cpu_started = sum(map(process_cpu_seconds, pids))
                sandbox_cpu_started = process_cpu_seconds(SANDBOX_PID[0])
                database_cpu_started = database_cpu_seconds()
                while (count := await sandbox_count(http, url, pixel_id))["count"] - before["count"] < events:
                    await asyncio.sleep(0.02)
                    if time.perf_counter() - started > 110:
                        raise RuntimeError(f"only {count['count'] - before['count']} of {events} sent after 110 s")
                elapsed = time.perf_counter() - started
                pids = [process.pid, *worker_pids(process.pid)]
                cpu = sum(map(process_cpu_seconds, pids)) - cpu_started
                sandbox_cpu = process_cpu_seconds(SANDBOX_PID[0]) - sandbox_cpu_started
                database_cpu = database_cpu_seconds() - database_cpu_started
            for _ in range(100):
                logged = await pool.fetchval(
                    "select count(*) from capi_events where status = 'sent' and event_id like $1", f"{seed}-%"
                )
                if logged == events:
                    break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{logged} of {events} events are logged as sent")
        finally:
            process.terminate()
            await process.wait()
            await pool.close()
    return {"published_s": published, "elapsed_s": elapsed, "cpu_s": cpu, "sandbox_cpu_s": sandbox_cpu,
            "database_cpu_s": database_cpu, "requests": count["requests"] - before["requests"]}


SOURCE = consumer("capi_sender", "conversion_requested")


async def publish_requests(amqp_url: str, events: int, seed: str) -> float:
    """Fill the capi_sender's queue with `events` ConversionRequested messages; returns the seconds it took."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE.name)
        started = time.perf_counter()
        for start in range(0, events, 1000):
            chunk = [ConversionRequestedMessage.new(r) for r in make_requests(min(1000, events - start), seed=seed,
                                                                              start=start)]
            await asyncio.gather(*(
                exchange.publish(
                    aio_pika.Message(m.model_dump_json().encode(), content_type="application/json",
                                     message_id=str(m.message_id), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=SOURCE.routing_keys[0],
                )
                for m in chunk
            ))
        return time.perf_counter() - started
    finally:
        await connection.close()


async def sandbox_count(http: aiohttp.ClientSession, url: str, pixel_id: str) -> dict[str, int]:
    async with http.get(f"{url}/_sandbox/capi/events", params={"pixel_id": pixel_id, "count_only": "1"}) as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def wait_ready(http: aiohttp.ClientSession, url: str) -> None:
    for _ in range(3000):
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.01)
    raise RuntimeError("the capi_sender did not become ready")


def worker_pids(pid: int) -> list[int]:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]
    return []


async def bench_sender_only(url: str, pixel_id: str, events: int) -> dict[str, float]:
    """The same work without the broker: normalize, hash, batch, claim, POST, record (how fast our part is)."""
    from services.capi_sender.worker import Worker, post_events
    from shared.graph import GraphClient

    meta = MetaSettings(pixel_id=pixel_id, graph_url=url, access_token=TOKEN, app_secret=APP_SECRET)
    messages = [ConversionRequestedMessage.new(r) for r in make_requests(events, seed=unique("solo"))]
    pool = await asyncpg.create_pool(BENCH_DSN, min_size=2, max_size=10, init=_init_connection)
    try:
        async with aiohttp.ClientSession() as session:
            graph = GraphClient(session, meta)
            sender = Worker(
                pool=pool,
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
        print(f"events: {args.events} ConversionRequested on the broker (publishing them is not part of the figures); "
              f"`leadwire run capi_sender` with CAPI_WORKERS=N, from ready until the sandbox has them all, then all "
              f"checked as logged in capi_events")
        print(f"{'workers':>7} {'events/s':>9} {'requests':>9} {'per 1,000':>9} {'sender CPU/event':>17} "
              f"{'database':>9} {'sandbox':>8}")
        results = {}
        for workers in sorted({1, args.workers}):
            r = results[workers] = await bench_pipeline(url, pixel_id, args.events, args.linger_ms, workers)
            print(f"{workers:>7} {args.events / r['elapsed_s']:>9,.0f} {r['requests']:>9} "
                  f"{1000 * r['requests'] / args.events:>9.2f} {1e6 * r['cpu_s'] / args.events:>14.0f} us "
                  f"{1e6 * r['database_cpu_s'] / args.events:>6.0f} us "
                  f"{1e6 * r['sandbox_cpu_s'] / args.events:>5.0f} us")
        print("(sender CPU: all its processes; database: all PostgreSQL processes; sandbox: parsing the requests)")
        solo = await bench_sender_only(url, pixel_id, args.solo_events)
        print(f"one sender without the broker: {args.solo_events / solo['elapsed_s']:,.0f} events/s "
              "(normalize, hash, batch, log, POST in one process: our part of the cost)")
        base = await bench_one_per_request(url, pixel_id, args.baseline_events)
        base_rate = args.baseline_events / base["elapsed_s"]
        print(f"one event per request:         {args.baseline_events} events in {base['elapsed_s']:.2f} s = "
              f"{base_rate:,.0f} events/s, 1,000 requests per 1,000 events")
    best = results[args.workers]
    rate = args.events / best["elapsed_s"]
    # Each worker batches on its own: at most one part-filled request per worker at the end of the stream.
    allowed = -(-args.events // 1000) + args.workers - 1
    met = rate >= 5000 and best["requests"] <= allowed
    print(f"compared: {rate / base_rate:.1f}x the events/s of one event per request, "
          f"{args.events / max(best['requests'], 1):.0f}x fewer requests")
    print(f"goal: >= 5,000 events/s and about 1 request per 1,000 events (<= {allowed} requests) with CAPI_WORKERS="
          f"{args.workers} -> {'met' if met else 'NOT met'}")
    if not met:
        sys.exit(1)  # `make bench` lists the goals missed


def main(argv: list[str] | None = None) -> None:
    configure_logging("WARNING", "text")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=2_000)
    parser.add_argument("--solo-events", type=int, default=5_000)
    parser.add_argument("--linger-ms", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="CAPI_WORKERS of the run the goal is checked on")
    run_event_loop(run(parser.parse_args(argv)))  # the loop `leadwire run` gives the sender


if __name__ == "__main__":
    main()
