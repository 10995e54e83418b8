"""Helpers and the `lead_env` fixture shared by the lead fetcher and backfill integration tests (no tests here)."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from contracts.leads import LeadgenReceived, captured_message_id
from contracts.messages import LeadgenReceivedMessage, RoutingKey
from services.lead_fetcher.app import create_app
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.messaging import declare_topology, ensure_confirmed
from shared.service import Service
from shared.settings import MetaSettings, Settings
from shared.topology import EXCHANGE, Consumer, consumers_of, register
from tests.fixtures.infra import AMQP_URL, unique
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.taps import Tap, tap

SANDBOX_WINDOWS = {"app": 5.0, "ad_account": 5.0, "buc": 5.0, "buc:pages": 5.0, "buc:leadgen": 5.0, "page": 5.0}
# Like the ingress, the webhook's message id is a uuid5 of the lead id (the lead fetcher does not rely on it: it
# dedupes on the lead id itself, so any id scheme works).
LEADGEN_NAMESPACE = uuid.UUID("6f0d7a52-56a3-4d7e-9c59-3f1c2a8d9b10")


def leadgen_message(leadgen_id: str, page_id: str, *, message_id: uuid.UUID | None = None,
                    source: str = "webhook", created_time: int | None = None) -> LeadgenReceivedMessage:
    payload = LeadgenReceived(leadgen_id=leadgen_id, page_id=page_id, source=source, created_time=created_time)
    return LeadgenReceivedMessage.new(payload, message_id=message_id or uuid.uuid5(LEADGEN_NAMESPACE, leadgen_id))


@dataclass
class LeadEnv:
    """A running lead_fetcher against the sandbox, with taps on LeadCaptured and AlertRaised."""

    sandbox: SandboxHandle
    db: asyncpg.Pool
    broker: RabbitBroker
    settings: Settings
    captured: Tap
    alerts: Tap
    page_id: str
    form_ids: list[str]
    # A private LeadgenReceived queue, bound to a routing key of its own: another run of these tests at the same
    # time (same vhost) neither takes this run's messages nor hands it theirs.
    queue: Consumer
    services: list[Service] = field(default_factory=list)

    async def start(self, **overrides: Any) -> Service:
        config = LeadFetcherSettings(**{"backfill_interval_seconds": 0, "fetch_batch_window_ms": 20,
                                        "access_retry_seconds": 1, **overrides})
        service = create_app(self.settings.replace(config), leadgen_consumer=self.queue)
        await service.start()
        # The service's client paces by Meta's windows (24 h for the leadgen BUC); the sandbox's limits use
        # seconds. Nothing was read yet, so the client's tracker takes the sandbox's windows from here on.
        service.graph_client.usage.windows = {**service.graph_client.usage.windows, **SANDBOX_WINDOWS}
        self.services.append(service)
        return service

    async def stop(self) -> None:
        for service in self.services:
            await service.stop()
        self.services.clear()

    async def new_leads(self, count: int, **body: Any) -> list[str]:
        """Leads created at Meta whose webhook is not delivered; stale rows from earlier tests are removed."""
        ids = await self.sandbox.create_leads(count=count, deliver=False, **body)
        await purge(self.db, ids)
        return ids

    async def send(self, leadgen_id: str, **kwargs: Any) -> LeadgenReceivedMessage:
        message = leadgen_message(leadgen_id, kwargs.pop("page_id", self.page_id), **kwargs)
        await self.publish(message)
        return message

    async def publish(self, message: LeadgenReceivedMessage) -> None:
        """Publish as the ingress does (persistent, confirmed), to this run's queue only."""
        frame = await self.broker.publish(
            message.model_dump_json().encode(), exchange=EXCHANGE, routing_key=self.queue.routing_keys[0],
            persist=True, mandatory=True, content_type="application/json", message_id=str(message.message_id),
            correlation_id=str(message.correlation_id), message_type=message.type,
        )
        ensure_confirmed(frame, self.queue.queue_name)

    async def rows(self, ids: list[str]) -> dict[str, asyncpg.Record]:
        rows = await self.db.fetch("select * from leads where leadgen_id = any($1::text[])", ids)
        return {r["leadgen_id"]: r for r in rows}

    async def all_published(self, ids: list[str]) -> bool:
        """Every lead's LeadCaptured is in the outbox and the relay has published it."""
        count = await self.db.fetchval(
            "select count(*) from outbox where message_id = any($1::uuid[]) and published_at is not null",
            [captured_message_id(i) for i in ids],
        )
        return count == len(ids)


async def purge(db: asyncpg.Pool, ids: list[str]) -> None:
    """Forget leads (and their LeadCaptured) with these ids: the sandbox reuses ids across resets."""
    await db.execute("delete from leads where leadgen_id = any($1::text[])", ids)
    await db.execute("delete from outbox where message_id = any($1::uuid[])", [captured_message_id(i) for i in ids])


async def sandbox_lead_ids(sandbox: SandboxHandle, form_ids: list[str]) -> list[str]:
    ids: list[str] = []
    for form_id in form_ids:
        status, _, body = await sandbox.graph("GET", f"{form_id}/leads", limit=5000, fields="id")
        assert status == 200, body
        ids += [lead["id"] for lead in body["data"]]
    return ids


def graph_http_calls() -> float:
    """HTTP round trips the Graph client made for lead reads so far (batch calls and single lead GETs)."""
    total = 0.0
    for endpoint in ("/", "/{id}"):
        total += REGISTRY.get_sample_value("graph_call_duration_seconds_count", {"endpoint": endpoint}) or 0.0
    return total


async def lead_env_fixture(
    settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker,
    amqp: aio_pika.abc.AbstractChannel,
) -> AsyncIterator[LeadEnv]:
    state = await sandbox.reset(seed=random.randrange(1, 10**9))
    page_id, form_ids = state["page_id"], state["form_ids"]
    await purge(db, await sandbox_lead_ids(sandbox, form_ids))
    await db.execute("delete from lead_alerts where page_id = $1", page_id)
    await db.execute("delete from lead_form_watermarks where form_id = any($1::text[])", form_ids)
    await declare_topology(AMQP_URL, consumers_of("lead_fetcher"))
    name = unique("lead_fetcher_test_")
    queue = register(Consumer(name, "leadgen_received", (f"test.{name}",)))
    await declare_topology(AMQP_URL, [queue])
    meta = MetaSettings(access_token=sandbox.token, page_access_token=sandbox.page_token, app_secret=sandbox.app_secret,
                        graph_url=sandbox.url, page_ids=[page_id], api_version=sandbox.version,
                        health_check_seconds=0)  # connection health has its own tests (test_doctor.py)
    env = LeadEnv(
        sandbox=sandbox, db=db, broker=broker, settings=settings.replace(meta),
        captured=await tap(amqp, RoutingKey.LEAD_CAPTURED), alerts=await tap(amqp, RoutingKey.ALERT_RAISED),
        page_id=page_id, form_ids=form_ids, queue=queue,
    )
    try:
        yield env
    finally:
        await env.stop()
        for queue_name in (queue.queue_name, queue.parking_queue_name):
            await amqp.queue_delete(queue_name)

