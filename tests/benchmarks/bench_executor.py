"""Benchmark: commands per second through the campaign executor against the Graph sandbox.

Starts the Graph sandbox in-process (200 ads), publishes 2,000 pause/unpause commands on `campaign.command`
(each ad gets a pause, then an unpause), then starts the campaign executor on the real RabbitMQ and a database
of its own (`leadwire_bench`) and times until every CommandResult has arrived. Reports publish time, end-to-end
time, commands per second, result statuses and the Graph calls made. Sandbox, executor and publisher share one
process and one event loop, so the figure is a floor rather than a ceiling.

Run: `python -m tests.benchmarks.bench_executor`
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from collections import Counter

import aio_pika
import aiohttp
from aiohttp import web
from faststream.rabbit import RabbitBroker
from pydantic import SecretStr

from contracts.commands import CampaignCommand
from contracts.messages import CampaignCommandMessage, CommandResultMessage, RoutingKey
from services.campaign_executor.app import create_app
from services.campaign_executor.handlers import CONSUMER
from services.graph_sandbox.app import create_app as create_sandbox
from services.graph_sandbox.config import SandboxConfig
from shared.db.migrate import ensure_database, migrate
from shared.messaging import declare_topology, publish
from shared.settings import BrokerSettings, DatabaseSettings, MetaSettings, OpsSettings, Settings
from shared.topology import EXCHANGE, consumers_of
from tests.fixtures.infra import AMQP_URL, BENCH_DSN

COMMANDS = 2000
ADS = 200
TOKEN = "bench-token"
APP_SECRET = "bench-app-secret"
ACCOUNT = "act_1000000001"


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


async def run() -> dict[str, float]:
    sandbox = create_sandbox(SandboxConfig(app_secret=APP_SECRET, ads=ADS))
    runner = web.AppRunner(sandbox, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    await ensure_database(BENCH_DSN)
    await migrate(BENCH_DSN)
    settings = Settings(
        database=DatabaseSettings(database_url=BENCH_DSN, db_pool_min=1, db_pool_max=10),
        broker=BrokerSettings(amqp_url=AMQP_URL, PREFETCH_COUNT=32),
        ops=OpsSettings(ops_port=0),
        meta=MetaSettings(access_token=SecretStr(TOKEN), app_secret=SecretStr(APP_SECRET), graph_url=url),
    )
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    broker = RabbitBroker(AMQP_URL, logger=None)
    await broker.connect()
    service = None
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/_sandbox/reset", json={"seed": 7, "ads": ADS}) as resp:
                reset = await resp.json()
            ads = reset["accounts"][ACCOUNT]["ads"]

            await declare_topology(AMQP_URL, consumers_of("campaign_executor"))
            await (await channel.get_queue(CONSUMER.queue_name, ensure=False)).purge()
            exchange = await channel.declare_exchange(EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True)
            results_queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await results_queue.bind(exchange, routing_key=RoutingKey.COMMAND_RESULT)
            wanted: set[str] = set()
            statuses: Counter[str] = Counter()
            done = asyncio.Event()

            async def on_result(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    result = CommandResultMessage.model_validate_json(message.body).payload
                    key = str(result.command_id)
                    if key in wanted:
                        wanted.discard(key)
                        statuses[result.status] += 1
                        if not wanted:
                            done.set()

            await results_queue.consume(on_result)
            messages = []
            for i in range(COMMANDS):
                ad = ads[(i // 2) % len(ads)]
                kind = "pause" if i % 2 == 0 else "unpause"
                body = {"kind": kind, "command_id": str(uuid.uuid4()), "requested_by": "bench", "object_id": ad,
                        "level": "ad", "account_id": ACCOUNT}
                messages.append(CampaignCommandMessage.new(CampaignCommand.model_validate(body)))
            wanted.update(str(m.payload.root.command_id) for m in messages)

            # Publish everything first, so the executor's figure is not mixed with the publisher's.
            started = time.perf_counter()
            await asyncio.gather(*(publish(broker, m) for m in messages))
            published = time.perf_counter() - started
            service = create_app(settings)
            await service.start()
            started = time.perf_counter()
            await asyncio.wait_for(done.wait(), timeout=110)
            elapsed = time.perf_counter() - started
            async with http.get(f"{url}/_sandbox/calls") as resp:
                calls = await resp.json()
    finally:
        if service is not None:
            await service.stop()
        await broker.stop()
        await connection.close()
        await runner.cleanup()
    methods = Counter(r["method"] for r in calls["requests"])
    return {
        "commands": COMMANDS,
        "publish_seconds": published,
        "total_seconds": elapsed,
        "commands_per_second": COMMANDS / elapsed,
        "ok": statuses["ok"],
        "other_statuses": sum(statuses.values()) - statuses["ok"],
        "graph_calls": calls["total"],
        "graph_gets": methods["GET"],
        "graph_writes": methods["POST"] + methods["DELETE"],
    }


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    figures = asyncio.run(run())
    _out(f"campaign executor: {figures['commands']:.0f} pause/unpause commands against the Graph sandbox")
    _out(f"  published in          {figures['publish_seconds']:.2f} s")
    _out(f"  all results after     {figures['total_seconds']:.2f} s (from executor start)")
    _out(f"  throughput            {figures['commands_per_second']:.0f} commands/s")
    _out(f"  results ok / other    {figures['ok']:.0f} / {figures['other_statuses']:.0f}")
    _out(f"  graph calls           {figures['graph_calls']:.0f} "
         f"({figures['graph_gets']:.0f} reads, {figures['graph_writes']:.0f} writes)")


if __name__ == "__main__":
    main()
