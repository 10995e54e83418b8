"""The CAPI sender end to end: real RabbitMQ, PostgreSQL and the Graph sandbox over HTTP.

Each test consumes its own queue (bound to its own routing key) so concurrent runs and other suites' messages on
`conversion.requested` never reach it; the handler, batcher, send log and outbox are the production ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from contracts.conversions import ConversionRequested
from contracts.messages import ConversionRequestedMessage
from services.capi_sender import handlers as capi_handlers
from services.capi_sender.app import create_app
from services.capi_sender.events import RequestBatch
from services.capi_sender.logic import SendOutcome
from services.capi_sender.settings import CapiSettings
from services.capi_sender.store import prune_send_log
from services.capi_sender.worker import Worker, post_events
from shared.messaging import PermanentError, RetryLater, declare_topology
from shared.poison import PoisonError
from shared.service import Service
from shared.settings import MetaSettings, Settings
from shared.topology import EXCHANGE, H_REASON, Consumer, consumer, register
from tests.fixtures.infra import AMQP_URL, drain, eventually, free_port, leadwire_workers, unique
from tests.fixtures.sandbox import SandboxHandle


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _lead_id() -> str:
    return str(10**15 + int(unique("")[:12], 16) % 10**15)  # 16 digits, unique per call


class Harness:
    """A capi_sender on a private queue, pointed at the sandbox."""

    def __init__(
        self, settings: Settings, sandbox: SandboxHandle, broker: RabbitBroker, amqp: Any, db: asyncpg.Pool
    ) -> None:
        self.source = register(Consumer(unique("capitest_"), "conversion_requested", (f"test.{unique('capi')}",)))
        self.pixel_id: str = sandbox.state["pixel_id"]
        self.sandbox = sandbox
        self.broker = broker
        self.amqp = amqp
        self.db = db
        self.settings = settings.replace(
            MetaSettings(
                pixel_id=self.pixel_id,
                graph_url=sandbox.url,
                access_token=sandbox.token,
                app_secret=sandbox.app_secret,
            ),
            # The longest linger allowed: the in-process sandbox parsing a 1,000-event request stalls the event loop,
            # and on a loaded machine a stall longer than the linger would flush a batch early (one request more).
            CapiSettings(capi_linger_ms=1000, capi_crm_name="Litify"),
        )
        self.service: Service | None = None

    async def declare(self) -> None:
        await declare_topology(AMQP_URL, [self.source])

    async def start(self) -> Service:
        self.service = create_app(self.settings, source=self.source)
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def publish(self, *messages: ConversionRequestedMessage) -> None:
        """Publish in order of the arguments (each waits for the broker's confirm), 500 at a time."""
        for start in range(0, len(messages), 500):
            await asyncio.gather(*(self._publish(m) for m in messages[start : start + 500]))

    async def _publish(self, message: ConversionRequestedMessage) -> None:
        await self.broker.publish(
            message.model_dump_json().encode(),
            exchange=EXCHANGE,
            routing_key=self.source.routing_keys[0],
            persist=True,
            content_type="application/json",
            message_id=str(message.message_id),
            correlation_id=str(message.correlation_id),
        )

    async def received(self) -> list[dict[str, Any]]:
        return [item["event"] for item in (await self.sandbox.capi_events(self.pixel_id))["events"]]

    async def requests(self) -> int:
        calls = await self.sandbox.calls()
        return int(calls["by_path"].get(f"POST /{self.pixel_id}/events", 0))

    def _count(self, metric: str) -> int:
        labels = {"service": self.source.service, "consumer": self.source.name}
        return int(REGISTRY.get_sample_value(metric, labels) or 0)

    async def settled(self, acked: int, failed: int = 0) -> bool:
        """`acked` messages handled (acked by the handler) and `failed` parked or retried, nothing pending."""
        done = self._count("leadwire_messages_consumed_total") == acked
        return done and self._count("leadwire_messages_failed_total") == failed

    async def parked(self) -> list[Any]:
        return await drain(self.amqp, self.source.parking_queue_name)


@pytest.fixture
async def capi(
    settings: Settings, sandbox: SandboxHandle, broker: RabbitBroker, amqp: Any, db: asyncpg.Pool
) -> AsyncIterator[Harness]:
    harness = Harness(settings, sandbox, broker, amqp, db)
    await harness.declare()
    yield harness
    await harness.stop()
    await amqp.queue_delete(harness.source.queue_name)
    await amqp.queue_delete(harness.source.parking_queue_name)


def conversion(
    event_id: str | None = None,
    *,
    event_name: str = "QualifiedLead",
    event_time: int | None = None,
    user: dict[str, Any] | None = None,
    **fields: Any,
) -> ConversionRequestedMessage:
    payload = ConversionRequested.model_validate(
        {
            "event_name": event_name,
            "event_time": event_time if event_time is not None else int(time.time()) - 60,
            "event_id": event_id or unique("ev-"),
            "user": user if user is not None else {"lead_id": _lead_id()},
            **fields,
        }
    )
    return ConversionRequestedMessage.new(payload)


async def _sent_rows(db: asyncpg.Pool, event_ids: list[str]) -> list[asyncpg.Record]:
    return await db.fetch(
        "select * from capi_events where event_id = any($1::text[]) and status = 'sent'", event_ids
    )


async def test_2500_events_go_to_meta_in_three_requests(capi: Harness, db: asyncpg.Pool) -> None:
    messages = [conversion() for _ in range(2500)]
    event_ids = [m.payload.event_id for m in messages if m.payload.event_id]
    await capi.publish(*messages)  # queued before the consumer starts, as after an outage
    await capi.start()

    async def all_sent() -> bool:
        return len(await _sent_rows(db, event_ids)) == 2500 and await capi.settled(2500)

    await eventually(all_sent, timeout=30, what="2,500 events recorded as sent and acked")
    assert await capi.requests() == 3
    received = await capi.received()
    assert sorted(e["event_id"] for e in received) == sorted(event_ids)
    rows = await _sent_rows(db, event_ids)
    sizes = sorted(
        r["n"] for r in await db.fetch(
            "select count(*) as n from capi_events where event_id = any($1::text[]) group by batch_id", event_ids
        )
    )
    assert sizes == [500, 1000, 1000]
    assert all(r["events_received"] in (500, 1000) and r["fbtrace_id"] for r in rows)
    receipts = await db.fetch(
        "select body from outbox where message_type = 'ConversionSent' and body->'payload'->'events'->0->>'event_id' "
        "= any($1::text[])",
        event_ids,
    )
    assert sorted(len(r["body"]["payload"]["events"]) for r in receipts) == [500, 1000, 1000]  # one per request
    assert sorted(e["event_id"] for r in receipts for e in r["body"]["payload"]["events"]) == sorted(event_ids)
    assert await capi.parked() == []
    # Conversion Leads form for CRM stages (docs/meta-api.md §8.7).
    assert received[0]["custom_data"] == {"event_source": "crm", "lead_event_source": "Litify"}
    assert received[0]["action_source"] == "system_generated"


async def test_redelivered_message_and_repeated_event_id_are_sent_once(capi: Harness, db: asyncpg.Pool) -> None:
    first = conversion()
    event_id = first.payload.event_id
    assert event_id is not None
    same_event_other_message = conversion(event_id, user=first.payload.user.model_dump(exclude_none=True))
    await capi.publish(first, first, same_event_other_message)  # a redelivery and a CRM resend, same batch
    await capi.start()
    await eventually(lambda: _sent_rows(db, [event_id]), what="event recorded as sent")
    await eventually(lambda: capi.settled(3), what="all three copies acked")

    # Later, and across a restart: still not sent again.
    await capi.stop()
    await capi.start()
    await capi.publish(conversion(event_id, user=first.payload.user.model_dump(exclude_none=True)))
    await eventually(lambda: capi.settled(4), what="late repeat acked")

    received = [e for e in await capi.received() if e["event_id"] == event_id]
    assert len(received) == 1
    assert await capi.requests() == 1
    assert await capi.parked() == []


async def test_stale_and_premature_events_are_parked_with_reason(capi: Harness, db: asyncpg.Pool) -> None:
    lead_id = _lead_id()
    created = int(time.time()) - 3600
    await db.execute(
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source) values ($1, $2, $3, $4, $5, $6)",
        lead_id, "102030405060708", datetime.fromtimestamp(created, UTC), {"email": "x@example.com"}, {}, "webhook",
    )
    stale = conversion(event_time=int(time.time()) - 8 * 86400)
    before_lead = conversion(event_time=created - 600, user={"lead_id": lead_id})
    good = conversion()
    await capi.publish(stale, before_lead, good)
    await capi.start()

    parked: list[Any] = []

    async def two_parked() -> bool:
        parked.extend(await capi.parked())
        return len(parked) >= 2

    await eventually(two_parked, what="both bad events parked")
    reasons = {json.loads(m.body)["payload"]["event_id"]: m.headers[H_REASON] for m in parked}
    assert reasons[stale.payload.event_id].startswith("permanent: event_too_old:")
    assert reasons[before_lead.payload.event_id].startswith("permanent: event_before_lead_created:")
    await eventually(lambda: _sent_rows(db, [good.payload.event_id or ""]), what="the good event sent")
    await eventually(lambda: capi.settled(1, failed=2), what="the good one acked")
    received = {e["event_id"] for e in await capi.received()}
    assert received == {good.payload.event_id}


async def test_event_that_ages_while_batched_is_parked_not_sent(
    settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """`check_event` runs again right before sending: an event past Meta's 7 days would sink the whole request."""
    now = [time.time()]
    posted: list[int] = []

    async def post(batch: Any) -> dict[str, Any]:
        posted.append(len(batch.events))
        return {"events_received": len(batch.events), "fbtrace_id": "T"}

    sender = Worker(
        pool=db,
        post=post,
        settings=CapiSettings(capi_linger_ms=1000),
        default_pixel_id="778899001122334",
        clock=lambda: now[0],
    )
    old = conversion(event_time=int(now[0]) - 7 * 86400 + 3600)  # fine now, too old in two hours
    fresh = conversion()
    old_task = asyncio.create_task(sender.process(old))
    fresh_task = asyncio.create_task(sender.process(fresh))

    async def both_batched() -> bool:
        return sender.batcher.pending == 2

    await eventually(both_batched, what="both events batched")
    now[0] += 2 * 3600
    await sender.batcher.drain()
    with pytest.raises(PermanentError, match=r"^event_too_old: "):
        await old_task
    assert await fresh_task == SendOutcome.SENT
    assert posted == [1]


async def test_one_invalid_event_does_not_sink_the_other_999(capi: Harness, db: asyncpg.Pool) -> None:
    # Our checks stop everything Meta is known to reject, so to see a rejection one event is spoiled on its way
    # out (a 13-digit lead_id, which the sandbox, like Meta, refuses): Meta rejects the whole request
    # (docs/meta-api.md §8.1), and the sender must split until the bad event stands alone.
    messages = [conversion() for _ in range(1000)]
    bad = messages[617]
    event_ids = [m.payload.event_id or "" for m in messages]
    await capi.publish(*messages)
    service = create_app(capi.settings, source=capi.source)

    async def spoil_one(batch: RequestBatch) -> Any:
        events = [
            replace(e, server_event={**e.server_event, "user_data": {"lead_id": "1234567890123"}})
            if e.event_id == bad.payload.event_id else e
            for e in batch.events
        ]
        return await send(RequestBatch(batch.pixel_id, batch.test_event_code, events))

    def wrap_post(started: Service) -> None:  # runs once the sender is built, before any message is consumed
        nonlocal send
        sender = started.dependencies(capi_handlers.Deps).sender
        send, sender._post = sender._post, spoil_one

    send: Any = None
    service.on_started(wrap_post)
    capi.service = service
    await service.start()

    parked = await eventually(capi.parked, timeout=20, what="the invalid event parked")
    await eventually(lambda: _count_sent(db, event_ids, 999), timeout=20, what="999 good events sent")
    await eventually(lambda: capi.settled(999, failed=1), what="all acked")
    assert [json.loads(m.body)["payload"]["event_id"] for m in parked] == [bad.payload.event_id]
    reason = parked[0].headers[H_REASON]
    assert reason.startswith("permanent: meta_rejected:")
    assert "code=100" in reason
    assert "fbtrace_id=" in reason
    assert "lead_id" in reason
    received = {e["event_id"] for e in await capi.received()}
    assert len(received) == 999
    assert bad.payload.event_id not in received
    requests = await capi.requests()
    assert requests <= 1 + 2 * 10  # one try, then two halves per level of a 1,000-event bisection
    row = await db.fetchrow("select status, error from capi_events where event_id = $1", bad.payload.event_id)
    assert row["status"] == "rejected"
    assert row["error"]["code"] == 100
    assert row["error"]["fbtrace_id"]


async def test_a_lead_id_meta_would_refuse_is_dropped_not_sent(capi: Harness, db: asyncpg.Pool) -> None:
    """Meta lead ids have 15-17 digits; a 13-digit one would sink the whole request, so it is dropped before."""
    with_email = conversion(user={"lead_id": "1234567890123", "email": "someone@example.com"})
    only_bad_id = conversion(user={"lead_id": "1234567890123"})
    await capi.publish(with_email, only_bad_id)
    await capi.start()
    parked = await eventually(capi.parked, what="the event left with nothing to match on parked")
    assert parked[0].headers[H_REASON].startswith("permanent: no_identifiers:")
    assert "lead_id" in parked[0].headers[H_REASON]
    await eventually(lambda: _count_sent(db, [with_email.payload.event_id or ""], 1), what="the other sent")
    row = await db.fetchrow("select dropped_fields, identifiers from capi_events where event_id = $1",
                            with_email.payload.event_id)
    assert row["dropped_fields"] == ["lead_id"]
    assert "lead_id" not in row["identifiers"]
    assert [e["user_data"].get("lead_id") for e in await capi.received()] == [None]


async def _count_sent(db: asyncpg.Pool, event_ids: list[str], expected: int) -> bool:
    return len(await _sent_rows(db, event_ids)) == expected


async def test_lead_id_only_is_filled_from_the_stored_lead_and_hashed(
    capi: Harness, db: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # what production runs at (aiormq's DEBUG dumps raw frames, bodies included)
    for ours in ("services", "shared", "leadwire"):
        caplog.set_level(logging.DEBUG, logger=ours)
    lead_id = _lead_id()
    await db.execute(
        "insert into leads (leadgen_id, page_id, created_time, fields, raw, source) values ($1, $2, $3, $4, $5, $6)",
        lead_id,
        "102030405060708",
        datetime.fromtimestamp(time.time() - 3600, UTC),
        {
            "email": " Jane.Doe@Example.com ",
            "phone_number": "+1 (312) 555-0142",
            "full_name": "Jane Q. Doe",
            "city": "Chicago",
            "zip_code": "60601-1234",
            "when_would_you_like_to_start?": "now",
        },
        {},
        "webhook",
    )
    only_lead = conversion(event_name="SignedCase", user={"lead_id": lead_id})
    # A CRM that sends clear PII itself, one value of it invalid (dropped, and the drop logged by name only).
    with_pii = conversion(user={"email": "crm.person@example.org", "phone": "312-555-0199", "zip": "!!"})
    await capi.publish(only_lead, with_pii)
    await capi.start()
    await eventually(
        lambda: _count_sent(db, [only_lead.payload.event_id or "", with_pii.payload.event_id or ""], 2),
        what="both sent",
    )

    events = {e["event_id"]: e for e in await capi.received()}
    user_data = events[only_lead.payload.event_id]["user_data"]
    assert user_data["lead_id"] == lead_id
    assert user_data["em"] == _sha("jane.doe@example.com")
    assert user_data["ph"] == _sha("13125550142")
    assert user_data["fn"] == _sha("janeq")
    assert user_data["ln"] == _sha("doe")
    assert user_data["ct"] == _sha("chicago")
    assert user_data["zp"] == _sha("60601")

    clear = ["jane", "Jane", "Doe", "5550142", "555-0142", "crm.person", "5550199", "555-0199", "Chicago"]
    rows = await db.fetch(
        "select row_to_json(e)::text as line from capi_events e where event_id = any($1::text[])",
        [only_lead.payload.event_id, with_pii.payload.event_id],
    )
    outbox = await db.fetch(
        "select body::text as line from outbox where message_type = 'ConversionSent' and exists "
        "(select from jsonb_array_elements(body->'payload'->'events') e where e->>'event_id' = any($1::text[]))",
        [only_lead.payload.event_id, with_pii.payload.event_id],
    )
    assert len(rows) == 2
    assert 1 <= len(outbox) <= 2  # one receipt per request: both events in one, or one each
    stored = " ".join(r["line"] for r in [*rows, *outbox])
    assert _sha("jane.doe@example.com") in stored  # the hashes are there ...
    assert not [word for word in clear if word in stored]  # ... the clear values are not
    assert '"zip"' in stored  # the dropped field is named

    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "dropping customer field zip" in logged
    assert not [word for word in clear if word in logged]


async def test_send_log_rows_past_the_dedupe_window_are_pruned(db: asyncpg.Pool) -> None:
    hours = 3600

    async def row(status: str, claimed_hours_ago: float, sent_hours_ago: float | None = None) -> str:
        key = unique("prune-")
        await db.execute(
            "insert into capi_events (dedupe_key, pixel_id, event_name, event_id, event_time, status, batch_id, "
            "claimed_at, sent_at) values ($1, '1', 'Lead', $1, now(), $2, gen_random_uuid(), "
            "now() - make_interval(secs => $3), now() - make_interval(secs => $4))",
            key, status, claimed_hours_ago * hours, sent_hours_ago * hours if sent_hours_ago is not None else None,
        )
        return key

    old_sent = await row("sent", 49, 49)
    recent_sent = await row("sent", 49, 47)  # claimed long ago, but sent within the window: still dedupes
    old_rejected = await row("rejected", 49)
    old_claim = await row("sending", 50)
    recent_failed = await row("failed", 1)
    keys = [old_sent, recent_sent, old_rejected, old_claim, recent_failed]

    deleted = await prune_send_log(db, chunk=2)  # small chunks: the loop must go on until nothing is left
    remaining = {r["dedupe_key"] for r in await db.fetch(
        "select dedupe_key from capi_events where dedupe_key = any($1::text[])", keys
    )}
    assert remaining == {recent_sent, recent_failed}
    assert deleted >= 3


async def _received_ids(capi: Harness) -> list[str]:
    return [e["event_id"] for e in await capi.received()]


def _throttle_retries() -> float:
    return REGISTRY.get_sample_value("leadwire_capi_events_retried_total", {"cause": "throttled"}) or 0.0


async def test_throttled_request_waits_out_the_block_then_sends_without_parking(capi: Harness) -> None:
    # One call per 12 s on the ad account (CAPI calls count against the pixel's account): the first request goes,
    # the second would have to wait longer than a batch may wait inside the Graph client, so its message goes
    # back to the delay queues (not counted as an attempt) and is sent once Meta lets us in again.
    await capi.sandbox.limits(ad_account={"budget": 1, "window_seconds": 12})
    throttled_before = _throttle_retries()
    first = conversion()
    second = conversion(test_event_code="TEST123")  # another request: test_event_code is per request
    await capi.publish(first, second)
    await capi.start()

    await eventually(lambda: capi.settled(2, failed=1), timeout=40, what="both sent, one after a throttle")
    assert sorted(await _received_ids(capi)) == sorted([first.payload.event_id, second.payload.event_id])
    assert _throttle_retries() == throttled_before + 1, "no throttle: the test did not test anything"
    assert (await capi.sandbox.calls())["throttled"] == 1  # the throttled call, then no call until the block ended
    assert await capi.requests() == 3
    assert await capi.parked() == []


async def test_transient_meta_errors_are_retried_then_the_event_is_sent_once(capi: Harness, db: asyncpg.Pool) -> None:
    await capi.sandbox.faults(error_rate=1.0, path_regex=r"/\d+/events")  # Meta's code 2, HTTP 500
    message = conversion()
    await capi.publish(message)
    await capi.start()

    async def released() -> bool:  # the client gave up on its retries; the claim is released for the retry
        status = await db.fetchval("select status from capi_events where event_id = $1", message.payload.event_id)
        return status == "failed"

    await eventually(released, timeout=30, what="the failed send released")
    await capi.sandbox.faults(error_rate=0.0)
    await eventually(lambda: _count_sent(db, [message.payload.event_id or ""], 1), timeout=30, what="sent")
    await eventually(lambda: capi.settled(1, failed=1), what="acked after one retry")
    assert await _received_ids(capi) == [message.payload.event_id]
    assert await capi.parked() == []


async def test_two_senders_racing_on_the_same_events_send_each_once(
    settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """Two instances (as two processes would) get copies of the same 50 events at the same moment."""
    from shared.graph import GraphClient

    pixel_id = sandbox.state["pixel_id"]
    meta = MetaSettings(pixel_id=pixel_id, graph_url=sandbox.url, access_token=sandbox.token,
                        app_secret=sandbox.app_secret)
    async with aiohttp.ClientSession() as session:
        senders = [
            Worker(
                pool=db,
                post=lambda batch, graph=GraphClient(session, meta): post_events(graph, batch),
                settings=CapiSettings(capi_linger_ms=0),
                default_pixel_id=pixel_id,
            )
            for _ in range(2)
        ]
        originals = [conversion() for _ in range(50)]
        copies = [conversion(m.payload.event_id, user=m.payload.user.model_dump(exclude_none=True)) for m in originals]
        results = await asyncio.gather(senders[0].process_many(originals), senders[1].process_many(copies))

    received = [item["event"]["event_id"] for item in (await sandbox.capi_events(pixel_id))["events"]]
    assert sorted(received) == sorted(m.payload.event_id for m in originals), "an event was sent twice or lost"
    for mine, theirs in zip(*results, strict=True):
        outcomes = {mine if isinstance(mine, SendOutcome) else type(mine),
                    theirs if isinstance(theirs, SendOutcome) else type(theirs)}
        # One copy was sent; the other found it sent, or found it in flight and comes back later (RetryLater).
        assert SendOutcome.SENT in outcomes
        assert outcomes - {SendOutcome.SENT} <= {SendOutcome.DUPLICATE, RetryLater}


# ----------------------------------------------------------------------------------------------- CAPI_WORKERS


async def test_capi_workers_share_the_queue_and_send_every_event_once(
    vhost_url: str, database_dsn: str, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """`leadwire run capi_sender` with CAPI_WORKERS=2, as an operator starts it: both processes consume the queue,
    every event reaches Meta once, /metrics counts both, and SIGTERM stops them cleanly."""
    port = free_port()
    env = {"AMQP_URL": vhost_url, "DATABASE_URL": database_dsn, "CAPI_WORKERS": "2", "CAPI_LINGER_MS": "100",
           "META_GRAPH_URL": sandbox.url, "META_ACCESS_TOKEN": sandbox.token, "META_APP_SECRET": sandbox.app_secret,
           "META_PIXEL_ID": sandbox.state["pixel_id"], "META_HEALTH_CHECK_SECONDS": "0"}
    messages = [conversion(user={"email": f"worker.{i}@example.com"}) for i in range(300)]
    event_ids = [m.payload.event_id for m in messages]
    async with leadwire_workers("capi_sender", 2, env, port) as workers:
        connection = await aio_pika.connect(vhost_url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE.name)
            queue_name = consumer("capi_sender", "conversion_requested").queue_name

            async def both_consume() -> bool:  # the group is ready when one worker is: the other may still connect
                queue = await channel.declare_queue(queue_name, passive=True)
                return queue.declaration_result.consumer_count == 2

            await eventually(both_consume, timeout=30, what="both capi_sender workers consuming")
            await asyncio.gather(*(
                exchange.publish(aio_pika.Message(m.model_dump_json().encode(), message_id=str(m.message_id),
                                                  delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                 routing_key=ConversionRequestedMessage.routing_key)
                for m in messages
            ))
        finally:
            await connection.close()

        async def all_logged() -> bool:
            return len(await _sent_rows(db, event_ids)) == len(event_ids)

        await eventually(all_logged, timeout=30, what="300 events logged as sent")
        events = (await sandbox.capi_events(sandbox.state["pixel_id"]))["events"]
        received = [item["event"]["event_id"] for item in events]
        assert sorted(e for e in received if e in set(event_ids)) == sorted(event_ids)  # each once
        async with aiohttp.ClientSession() as http, http.get(f"{workers.url}/metrics") as resp:
            text = await resp.text()
        assert "leadwire_capi_events_sent_total 300.0" in text  # both workers' counts
        workers.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(workers.process.wait(), timeout=30) == 0


async def test_events_the_send_log_refuses_park_alone_and_the_rest_of_the_batch_goes(
    capi: Harness, db: asyncpg.Pool
) -> None:
    # A NUL passes the contract (only the consumers' decoding refuses it, `shared.poison`), but no text column
    # takes it: the claim of a batch holding one fails in PostgreSQL. Handed to the sender directly, as a body the
    # decoder let through would be.
    service = await capi.start()
    sender = service.dependencies(capi_handlers.Deps).sender
    good = [conversion() for _ in range(40)]
    bad = [conversion(event_id=unique("ev-") + "\x00"), conversion(event_id=unique("ev-") + "\x00")]
    messages = [*good[:10], bad[0], *good[10:30], bad[1], *good[30:]]

    results = await sender.process_many(messages)

    by_id = {m.message_id: r for m, r in zip(messages, results, strict=True)}
    assert [by_id[m.message_id] for m in good] == [SendOutcome.SENT] * 40
    for message in bad:
        refused = by_id[message.message_id]
        assert isinstance(refused, PoisonError), refused
        assert "send log refused the event" in str(refused)
        assert "CharacterNotInRepertoireError" in str(refused)
    assert len(await _sent_rows(db, [m.payload.event_id for m in good if m.payload.event_id])) == 40
    assert {e["event_id"] for e in await capi.received()} >= {m.payload.event_id for m in good}
