"""crm_sync against the real RabbitMQ and PostgreSQL, with a fake CRM over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from contracts.leads import LeadCaptured
from contracts.messages import AlertRaisedMessage, LeadCapturedMessage, LeadSyncedMessage, RoutingKey
from services.crm_sync.app import build_adapters, create_app
from services.crm_sync.cli import redeliver_once
from services.crm_sync.logic import DeliveryOutcome
from services.crm_sync.settings import CrmSyncSettings
from services.crm_sync.store import failed_leads
from services.crm_sync.worker import Job, Worker
from shared.messaging import declare_topology, ensure_confirmed
from shared.service import Service
from shared.settings import BrokerSettings, DatabaseSettings, MetaSettings, Settings
from shared.topology import EXCHANGE, H_ATTEMPT, H_FIRST_FAILURE, H_PARKED_AT, H_REASON, Consumer, register
from tests.fixtures.crm import FakeCrm, crm_sink  # noqa: F401
from tests.fixtures.infra import AMQP_URL, TEST_DSN, eventually, unique
from tests.fixtures.sandbox import SandboxHandle
from tests.fixtures.taps import Tap, tap
from tests.integration.test_lead_fetcher_helpers import LeadEnv, lead_env_fixture

WEBHOOK_SECRET = "test-crm-webhook-secret"
GHL_TOKEN = "test-ghl-token-abcdef"


def new_lead_id() -> str:
    return str(random.randint(10**15, 10**16 - 1))


def answers(leadgen_id: str) -> dict[str, str]:
    return {
        "full_name": "Jane Q Roe",
        "email": f"jane.roe.{leadgen_id}@example.com",
        "phone_number": "+15555550123",
        "were_you_injured": "yes",
        "accident_date": "2026-10-01",
    }


async def insert_lead(db: asyncpg.Pool, leadgen_id: str, *, names: bool = True) -> None:
    raw = {"id": leadgen_id, "ad_name": "Car crash - video", "adset_name": "Phoenix 25-54",
           "campaign_name": "PI Leads Q4"} if names else {"id": leadgen_id}
    await db.execute(
        "insert into leads (leadgen_id, page_id, form_id, ad_id, adset_id, campaign_id, created_time, fields, raw, "
        "source) values ($1, '1111', '2222', '3333', '4444', '5555', $2, $3, $4, 'webhook')",
        leadgen_id, datetime(2026, 11, 20, 15, 4, 5, tzinfo=UTC), answers(leadgen_id), raw,
    )


def captured(leadgen_id: str) -> LeadCapturedMessage:
    return LeadCapturedMessage.new(LeadCaptured(
        leadgen_id=leadgen_id, page_id="1111", form_id="2222", ad_id="3333", adset_id="4444", campaign_id="5555",
        created_time=datetime(2026, 11, 20, 15, 4, 5, tzinfo=UTC),
    ))


async def delivery_row(db: asyncpg.Pool, leadgen_id: str, adapter: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "select * from crm_deliveries where leadgen_id = $1 and adapter = $2", leadgen_id, adapter
    )


def metric(adapter: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("leadwire_crm_deliveries_total", {"adapter": adapter, "outcome": outcome}) or 0


@pytest.fixture
async def taps(amqp: aio_pika.abc.AbstractChannel) -> dict[str, Tap]:
    """Taps on lead.synced.v1 and alert.raised.v1."""
    return {key: await tap(amqp, key) for key in (RoutingKey.LEAD_SYNCED, RoutingKey.ALERT_RAISED)}


StartCrmSync = Callable[..., Awaitable[Service]]


@pytest.fixture
async def queue(amqp: aio_pika.abc.AbstractChannel, broker: RabbitBroker) -> AsyncIterator[Consumer]:
    """A private LeadCaptured queue (with its parking queue) for this test's crm_sync, bound to a routing key of
    its own: another run of this suite at the same time, or leftovers in the real queue, cannot take or add
    messages. Deleted afterwards."""
    name = unique("crm_sync_test_")
    private = register(Consumer(name, "lead_captured", (f"test.{name}",)))
    await declare_topology(AMQP_URL, [private])
    yield private
    for queue_name in (private.queue_name, private.parking_queue_name):
        await amqp.queue_delete(queue_name)


Send = Callable[[LeadCapturedMessage], Awaitable[None]]


@pytest.fixture
def send(broker: RabbitBroker, queue: Consumer) -> Send:
    """Publish a LeadCaptured as the outbox relay does (persistent, confirmed), to this test's queue only."""

    async def publish_to_queue(message: LeadCapturedMessage) -> None:
        frame = await broker.publish(
            message.model_dump_json().encode(), exchange=EXCHANGE, routing_key=queue.routing_keys[0],
            persist=True, mandatory=True, content_type="application/json", message_id=str(message.message_id),
            correlation_id=str(message.correlation_id), message_type=message.type,
        )
        ensure_confirmed(frame, queue.queue_name)

    return publish_to_queue


@pytest.fixture
async def crm_sync(
    settings: Settings, crm_sink: FakeCrm, queue: Consumer  # noqa: F811
) -> AsyncIterator[StartCrmSync]:
    """Start crm_sync with the given adapters pointing at the fake CRM (webhook by default)."""
    started: list[Service] = []

    async def start(*, webhook: bool = True, ghl: bool = False, broker: BrokerSettings | None = None,
                    database: DatabaseSettings | None = None, **extra: Any) -> Service:
        crm = CrmSyncSettings(
            crm_webhook_url=crm_sink.webhook_url if webhook else "",
            crm_webhook_secret=WEBHOOK_SECRET if webhook else "",
            ghl_api_token=GHL_TOKEN if ghl else "",
            ghl_location_id="loc-123" if ghl else "",
            ghl_base_url=crm_sink.url,
            crm_timeout_seconds=2,
            **extra,
        )
        blocks = [b for b in (broker, database) if b is not None]
        service = create_app(settings.replace(crm, *blocks), lead_consumer=queue)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


# --------------------------------------------------------------------------------------------- tests


async def test_same_lead_captured_twice_gives_one_crm_request(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool, taps: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.crm_sync.worker")
    await crm_sync()
    lid = new_lead_id()
    await insert_lead(db, lid)
    message = captured(lid)

    await send(message)
    await send(message)  # a redelivery (same message id)
    again = captured(lid)
    await send(again)  # the same lead again, new message id (e.g. webhook + backfill)

    def duplicates() -> int:
        return sum(1 for r in caplog.records
                   if r.getMessage().startswith("already delivered") and getattr(r, "leadgen_id", None) == lid)

    await eventually(lambda: _async(duplicates() >= 2), timeout=15, what="both copies seen as duplicates")
    assert metric("webhook", "duplicate") >= 2
    assert len(crm_sink.for_lead(lid)) == 1
    row = await delivery_row(db, lid, "webhook")
    assert row["status"] == "delivered"
    assert row["attempts"] == 1
    assert row["crm_reference"].startswith("crm-")
    synced = await eventually(lambda: _synced(taps, lid), what="LeadSynced")
    assert len(synced) == 1
    assert synced[0].payload.adapter == "webhook"
    assert synced[0].payload.crm_reference == row["crm_reference"]
    # Whichever copy was handled first caused the delivery (concurrent copies may share a group in either order).
    assert synced[0].correlation_id in {message.correlation_id, again.correlation_id}


async def test_webhook_request_is_signed_keyed_and_mapped(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    await crm_sync(crm_field_map={"phone_number": "mobile", "accident_date": "incident_on", "full_name": None})
    lid = new_lead_id()
    await insert_lead(db, lid)
    await send(captured(lid))
    [request] = await eventually(lambda: _async(crm_sink.for_lead(lid)), what="webhook request")

    expected = hmac.new(WEBHOOK_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Leadwire-Signature"] == f"sha256={expected}"
    assert request.headers["Idempotency-Key"] == lid
    body = request.json
    assert body["leadgen_id"] == lid
    assert body["campaign_name"] == "PI Leads Q4"
    assert body["fields"] == {
        "email": f"jane.roe.{lid}@example.com",
        "mobile": "+15555550123",
        "incident_on": "2026-10-01",
        "were_you_injured": "yes",  # unmapped answers pass through under their own key
    }


@pytest.fixture
async def fetcher(settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker,
                       amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[LeadEnv]:
    async for lead_env in lead_env_fixture(settings, sandbox, db, broker, amqp):
        yield lead_env


# GoHighLevel: tests/integration/test_gohighlevel.py, against the stand-in built from its API v2 spec.


async def test_crm_500s_then_200_is_delivered_once(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool  # noqa: F811
) -> None:
    await crm_sync()
    lid = new_lead_id()
    await insert_lead(db, lid)
    crm_sink.fail_next(2, status=500, lead=lid)
    await send(captured(lid))

    await eventually(lambda: _status(db, lid, "webhook", "delivered"), timeout=20, what="delivered after retries")
    assert [r.status for r in crm_sink.for_lead(lid)] == [500, 500, 200]
    row = await delivery_row(db, lid, "webhook")
    assert row["attempts"] == 3
    assert row["last_error"] is None


async def test_crm_down_past_the_horizon_parks_with_one_incident_alert(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    amqp: aio_pika.abc.AbstractChannel, queue: Consumer, taps: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    """A transient failure is retried until RETRY_HORIZON_HOURS (here scaled to 4 s), then parked: the parking
    opens the consumer's `parked` incident (one alert, a fix line with `leadwire parked`), which resolves once the
    parking queue is empty again."""
    caplog.set_level(logging.DEBUG)
    service = await crm_sync(broker=BrokerSettings(amqp_url=AMQP_URL, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5,
                                                   RETRY_HORIZON_HOURS=4 / 3600, BREAKER_FAILURES=50))
    service.incidents.tick_seconds = 0.5
    service.incidents.settle_seconds = 2.0
    lid = new_lead_id()
    await insert_lead(db, lid)
    await crm_sink.down()
    try:
        message = captured(lid)
        await send(message)
        parked = await eventually(lambda: _parked(amqp, queue, lid), timeout=30, what="parked message")
    finally:
        await crm_sink.up()

    assert parked.headers[H_ATTEMPT] >= 3  # 1 s, 2 s, then the 4 s horizon passed
    assert "webhook (connection error" in parked.headers[H_REASON]
    first, parked_at = float(parked.headers[H_FIRST_FAILURE]), datetime.fromisoformat(parked.headers[H_PARKED_AT])
    assert parked_at.timestamp() - first >= 4
    row = await delivery_row(db, lid, "webhook")
    assert row["status"] == "failed"
    assert row["last_error"].startswith("connection error")
    subject = f"{queue.service}/{queue.name}"
    # the parking queue is empty again (the copy was taken above): the incident resolves, with one alert
    alerts = await eventually(lambda: _alerts(taps, subject, 2), timeout=15, what="opened and resolved")
    assert [a.payload.incident.state for a in alerts if a.payload.incident] == ["opened", "resolved"]
    opened = alerts[0]
    assert opened.payload.code == "messages_parked_opened"
    assert f"leadwire parked replay --queue {subject}" in (opened.payload.fix or "")
    assert await _alerts(taps, lid) is None, "no alert per lead"
    assert_no_pii(caplog, lid)

    # nothing lost: the parked copy, replayed once the CRM is back, delivers the lead
    await send(LeadCapturedMessage.model_validate_json(parked.body))
    await eventually(lambda: _status(db, lid, "webhook", "delivered"), timeout=10, what="replayed and delivered")


async def test_4xx_is_permanent_parked_at_once_with_an_alert(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    amqp: aio_pika.abc.AbstractChannel, queue: Consumer, taps: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await crm_sync()
    lid = new_lead_id()
    await insert_lead(db, lid)
    crm_sink.fail_next(1, status=422, lead=lid)
    await send(captured(lid))
    parked = await eventually(lambda: _parked(amqp, queue, lid), timeout=10, what="parked message")
    assert parked.headers[H_ATTEMPT] == 1
    assert len(crm_sink.for_lead(lid)) == 1
    row = await delivery_row(db, lid, "webhook")
    assert (row["status"], row["last_error"]) == ("failed", "HTTP 422")
    alert = (await eventually(lambda: _alerts(taps, f"{queue.service}/{queue.name}"), what="alert"))[0]
    assert alert.payload.code == "messages_parked_opened"
    assert "HTTP 422" in alert.payload.summary
    assert_no_pii(caplog, lid)


async def test_no_adapter_records_the_lead_as_skipped(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="services.crm_sync.app")
    await crm_sync(webhook=False)
    assert sum("no CRM adapter configured" in r.getMessage() for r in caplog.records) == 1
    lid = new_lead_id()
    await insert_lead(db, lid)
    await send(captured(lid))
    await eventually(lambda: _status(db, lid, "none", "skipped"), what="skipped row")
    assert crm_sink.for_lead(lid) == []


async def test_concurrent_leads_share_delivery_transactions_each_delivered_once(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool, taps: Any,  # noqa: F811
) -> None:
    await crm_sync()
    ids = [new_lead_id() for _ in range(30)]
    for lid in ids:
        await insert_lead(db, lid)
    groups_before = REGISTRY.get_sample_value("leadwire_crm_delivery_group_size_count") or 0
    crm_sink.fail_next(1, status=422, lead=ids[7])  # one lead refused for good: the others are not affected

    await asyncio.gather(*(send(captured(lid)) for lid in ids))

    await eventually(lambda: _all_status(db, ids[:7] + ids[8:], "delivered"), timeout=15, what="29 delivered")
    await eventually(lambda: _status(db, ids[7], "webhook", "failed"), what="the refused lead failed")
    assert all(len(crm_sink.delivered(lid)) == 1 for lid in ids if lid != ids[7])
    groups = (REGISTRY.get_sample_value("leadwire_crm_delivery_group_size_count") or 0) - groups_before
    assert groups < 30, "concurrent messages should share delivery transactions"
    synced = await eventually(lambda: _synced_all(taps, set(ids) - {ids[7]}), what="29 LeadSynced")
    assert len(synced) == 29


async def test_a_group_that_cannot_commit_is_redone_lead_by_lead(
    crm_sink: FakeCrm, db: asyncpg.Pool, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    """One lead's CRM answer makes the group's record statement fail (PostgreSQL refuses a NUL in text): the group
    is redone lead by lead, the others are delivered and recorded, each still one contact (same Idempotency-Key),
    and only the odd lead fails."""
    caplog.set_level(logging.WARNING, logger="services.crm_sync.worker")
    ids = [new_lead_id() for _ in range(20)]
    for lid in ids:
        await insert_lead(db, lid)
    odd = ids[5]
    crm_sink.answer_reference(odd, "crm-\x00-odd")
    crm = CrmSyncSettings(crm_webhook_url=crm_sink.webhook_url, crm_webhook_secret=WEBHOOK_SECRET,
                          crm_timeout_seconds=2)
    async with aiohttp.ClientSession() as session:
        sync = Worker(db, build_adapters(crm, session))
        jobs = [Job(captured(lid), attempt=1, max_attempts=3) for lid in ids]

        outcomes = await sync._run_group(jobs)  # the group as the runner hands it over, all 20 together

    assert any(r.getMessage().startswith("delivering") and "one by one" in r.getMessage() for r in caplog.records)
    assert isinstance(outcomes[5], asyncpg.PostgresError)
    assert all(o["webhook"].outcome is DeliveryOutcome.DELIVERED for i, o in enumerate(outcomes) if i != 5)
    others = [lid for lid in ids if lid != odd]
    assert await _all_status(db, others, "delivered")
    assert all(crm_sink.contacts[lid] == 1 for lid in ids)  # resent with the same key: no second contact
    assert crm_sink.replayed() >= 1  # the fallback did resend what the failed group had sent
    synced = await db.fetchval("select count(*) from outbox where routing_key = $1 and body->'payload'->>'leadgen_id'"
                               " = any($2::text[])", LeadSyncedMessage.routing_key, others)
    assert synced == 19
    row = await delivery_row(db, odd, "webhook")  # its own transaction rolled back: retried, never "delivered"
    assert row is None or row["status"] != "delivered"


@pytest.fixture
async def lead_fetcher(settings: Settings) -> AsyncIterator[Service]:
    """The owner of `leads`, which answers crm_sync's RedeliverLead commands (no Graph call is needed for them)."""
    from services.lead_fetcher.app import create_app as create_lead_fetcher
    from services.lead_fetcher.settings import LeadFetcherSettings

    service = create_lead_fetcher(settings.replace(LeadFetcherSettings(backfill_interval_seconds=0),
                                                   MetaSettings(health_check_seconds=0)))
    await service.start()
    yield service
    await service.stop()


async def test_redeliver_failed_leads_through_the_outbox_once(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    settings: Settings, caplog: pytest.LogCaptureFixture, amqp: aio_pika.abc.AbstractChannel, queue: Consumer,
    lead_fetcher: Service,
) -> None:
    caplog.set_level(logging.INFO, logger="services.crm_sync.worker")
    started = await db.fetchval("select now()")  # the clock the delivery rows are stamped with
    await crm_sync()
    # crm_sync's RedeliverLead commands leave through the outbox to lead_fetcher, whose new LeadCaptured arrives
    # with LeadCaptured's own routing key, as crm_sync gets them.
    exchange = await amqp.declare_exchange(EXCHANGE.name, aio_pika.ExchangeType.TOPIC, durable=True)
    await (await amqp.get_queue(queue.queue_name, ensure=False)).bind(exchange, routing_key=RoutingKey.LEAD_CAPTURED)
    failed, delivered, unknown = new_lead_id(), new_lead_id(), new_lead_id()
    for lid in (failed, delivered):
        await insert_lead(db, lid)
    crm_sink.fail_next(1, status=400, lead=failed)  # refused for good (say, a field mapping the CRM rejected)
    await send(captured(failed))
    await send(captured(delivered))
    await eventually(lambda: _status(db, failed, "webhook", "failed"), what="the failed delivery")
    await eventually(lambda: _status(db, delivered, "webhook", "delivered"), what="the delivered one")
    assert failed in await failed_leads(db)

    # The operator fixed the CRM; `leadwire crm redeliver --failed` and a named lead that is already there.
    report, relayed = await redeliver_once(settings, leadgen_ids=[delivered, unknown], failed=True, since=started)

    assert relayed
    assert set(report.enqueued) >= {failed, delivered}
    assert report.not_stored == [unknown]
    await eventually(lambda: _status(db, failed, "webhook", "delivered"), what="redelivered")
    assert [r.status for r in crm_sink.for_lead(failed)] == [400, 200]
    assert failed not in await failed_leads(db)
    row = await delivery_row(db, failed, "webhook")
    assert row["attempts"] == 2
    # The lead the CRM already had is not sent again, however often it is redriven.
    await eventually(lambda: _async(_already_delivered(caplog, delivered)), what="the delivered lead's copy handled")
    assert len(crm_sink.for_lead(delivered)) == 1


async def test_redeliver_command_line(db: asyncpg.Pool) -> None:
    lid = new_lead_id()
    await insert_lead(db, lid)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AMQP", "DATABASE"))},
           "AMQP_URL": AMQP_URL, "DATABASE_URL": TEST_DSN, "LOG_FORMAT": "json"}

    code, output = await _leadwire("crm", "redeliver", env=env)
    assert code == 2, output  # nothing named
    code, output = await _leadwire("crm", "redeliver", lid, "999000999000999", env=env)
    assert code == 1, output  # one id is not a stored lead: said, and the exit code says so
    assert "999000999000999" in output

    body = await db.fetchval(
        "select body from outbox where message_type = 'RedeliverLead' and body->'payload'->>'leadgen_id' = $1", lid)
    assert body["payload"]["leadgen_id"] == lid  # a command to lead_fetcher, which owns the lead


# --------------------------------------------------------------------------------------------- helpers


async def _leadwire(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "services", *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def _all_status(db: asyncpg.Pool, ids: list[str], status: str) -> bool:
    count = await db.fetchval(
        "select count(*) from crm_deliveries where leadgen_id = any($1::text[]) and adapter = 'webhook' "
        "and status = $2", ids, status)
    return count == len(ids)


async def _synced_all(taps: dict[str, Tap], ids: set[str]) -> list[dict[str, Any]] | None:
    mine = await taps[RoutingKey.LEAD_SYNCED].of("leadgen_id", ids)
    return mine if len(mine) >= len(ids) else None


def _already_delivered(caplog: pytest.LogCaptureFixture, lid: str) -> bool:
    return any(r.getMessage().startswith("already delivered") and getattr(r, "leadgen_id", None) == lid
               for r in caplog.records)


def assert_no_pii(caplog: pytest.LogCaptureFixture, leadgen_id: str) -> None:
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert leadgen_id in text  # the log does talk about this lead...
    for value in (*answers(leadgen_id).values(), "Jane", WEBHOOK_SECRET, GHL_TOKEN):
        assert value not in text, f"{value!r} in the logs"  # ...but never with its answers or our secrets


async def _status(db: asyncpg.Pool, lid: str, adapter: str, status: str) -> bool:
    row = await delivery_row(db, lid, adapter)
    return row is not None and row["status"] == status


async def _synced(taps: dict[str, Tap], lid: str, n: int = 1) -> list[LeadSyncedMessage] | None:
    mine = [LeadSyncedMessage.model_validate(b) for b in await taps[RoutingKey.LEAD_SYNCED].of("leadgen_id", {lid})]
    return mine if len(mine) >= n else None


async def _alerts(taps: dict[str, Tap], subject: str, n: int = 1) -> list[AlertRaisedMessage] | None:
    mine = [AlertRaisedMessage.model_validate(b) for b in await taps[RoutingKey.ALERT_RAISED].of("subject", {subject})]
    return mine if len(mine) >= n else None


async def _parked(
    amqp: aio_pika.abc.AbstractChannel, private: Consumer, lid: str
) -> aio_pika.abc.AbstractIncomingMessage | None:
    queue = await amqp.get_queue(private.parking_queue_name, ensure=False)
    others = []
    found = None
    while (message := await queue.get(fail=False, no_ack=False)) is not None:
        if json.loads(message.body)["payload"]["leadgen_id"] == lid:
            await message.ack()
            found = message
        else:
            others.append(message)
    for message in others:
        await message.nack(requeue=True)
    return found


async def _async(value: Any) -> Any:
    return value
