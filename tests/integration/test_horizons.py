"""Failure horizons and incidents, from outside: the CRM down while leads arrive, the database unreachable, and
`leadwire parked` round trips. Real RabbitMQ, PostgreSQL (reached through a TCP proxy this test controls: the
machine's server is never stopped) and an HTTP CRM stand-in.

Both outages are scaled in time, honestly: the production code path, with the backoff ceiling and the breaker's
longest probe interval scaled down by the same factor as the outage (30×: 10 minutes → 20 s, the 15-minute backoff
ceiling → 30 s, 60 s between probes → 2 s).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import asyncpg

from contracts.messages import AlertRaisedMessage, RoutingKey
from shared.settings import BrokerSettings, DatabaseSettings
from shared.topology import H_ATTEMPT, H_FIRST_FAILURE, H_PARKED_AT, H_REASON, Consumer
from tests.fixtures.crm import FakeCrm, crm_sink  # noqa: F401
from tests.fixtures.infra import AMQP_URL, TEST_DSN, eventually
from tests.fixtures.taps import Tap
from tests.fixtures.tcp_proxy import tcp_proxy
from tests.integration.test_crm_sync import (  # noqa: F401 (fixtures)
    Send,
    StartCrmSync,
    captured,
    crm_sync,
    insert_lead,
    new_lead_id,
    queue,
    send,
    taps,
)

SCALE = 30
OUTAGE_SECONDS = 600 / SCALE  # a 10-minute outage (CRM or database), as are the backoff ceiling and probe interval
SCALED = {"RETRY_BACKOFF_MAX_SECONDS": 900 / SCALE, "BREAKER_PROBE_MAX_SECONDS": 60 / SCALE}


def _broker(**extra: Any) -> BrokerSettings:
    return BrokerSettings(amqp_url=AMQP_URL, GRACEFUL_TIMEOUT_SECONDS=5, **extra)


async def _delivered(db: asyncpg.Pool, ids: list[str]) -> bool:
    count = await db.fetchval("select count(*) from crm_deliveries where leadgen_id = any($1::text[]) "
                              "and adapter = 'webhook' and status = 'delivered'", ids)
    return bool(count == len(ids))


async def _parked_count(amqp: aio_pika.abc.AbstractChannel, consumer: Consumer) -> int:
    declared = await amqp.declare_queue(consumer.parking_queue_name, passive=True)
    return int(declared.declaration_result.message_count or 0)


async def _incident_alerts(
    tapped: dict[str, Tap], subject: str, *, states: int = 1
) -> list[AlertRaisedMessage] | None:
    bodies = await tapped[RoutingKey.ALERT_RAISED].of("subject", {subject})
    mine = [AlertRaisedMessage.model_validate(b) for b in bodies]
    return mine if len(mine) >= states else None


async def test_crm_down_while_100_leads_arrive_all_delivered_once_after_it_heals_with_two_alerts(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    amqp: aio_pika.abc.AbstractChannel, queue: Consumer, taps: Any,  # noqa: F811
) -> None:
    service = await crm_sync(broker=_broker(**SCALED))
    service.incidents.tick_seconds = 0.5
    ids = [new_lead_id() for _ in range(100)]
    for lid in ids:
        await insert_lead(db, lid)

    crm_sink.fail_always(503)  # the CRM's maintenance window
    started = time.monotonic()
    for index, lid in enumerate(ids):  # 100 leads arrive during the first ~10 s of the outage (5 minutes)
        await send(captured(lid))
        if index % 10 == 9:
            await asyncio.sleep(1.0)
    opened = await eventually(lambda: _incident_alerts(taps, "crm:webhook"), timeout=15, what="the CRM incident")
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    calls_while_down = sum(1 for r in crm_sink.requests if r.status == 503)
    crm_sink.heal()
    healed = time.monotonic()

    await eventually(lambda: _delivered(db, ids), timeout=60, interval=0.5, what="all 100 leads delivered")
    catch_up = time.monotonic() - healed
    for lid in ids:
        assert len(crm_sink.delivered(lid)) == 1, f"lead {lid} delivered {len(crm_sink.delivered(lid))} times"
        assert crm_sink.contacts[lid] == 1
    # Without a breaker every lead would be tried at least once while the CRM was down, and again on each backoff.
    assert calls_while_down < 40, f"{calls_while_down} CRM calls during the outage"
    assert await _parked_count(amqp, queue) == 0, "nothing is parked"

    alerts = await eventually(lambda: _incident_alerts(taps, "crm:webhook", states=2), timeout=15,
                              what="the CRM incident resolved")
    await asyncio.sleep(1.5)  # any further alert of this incident would be out by now
    alerts = await _incident_alerts(taps, "crm:webhook") or []
    ours = list(await _incident_alerts(taps, f"{queue.service}/{queue.name}") or [])
    assert ours == [], "no lead was parked, so no parked alert"
    assert len(alerts) <= 3
    assert [a.payload.incident.state for a in alerts if a.payload.incident] == ["opened", "resolved"]
    first = opened[0].payload
    assert first.service == "crm_sync"
    assert first.code == "dependency_unavailable_opened"
    assert "waiting for the CRM (webhook)" in first.summary
    assert "CRM_WEBHOOK_URL" in (first.fix or "")
    assert "leadwire parked list" in (first.fix or "")
    resolved = alerts[-1].payload
    assert "answers again" in resolved.summary
    sys.stderr.write(f"\n[crm outage] {calls_while_down} CRM calls in {OUTAGE_SECONDS:.0f} s down for 100 leads; "
                     f"all delivered {catch_up:.1f} s after it healed; {len(alerts)} alerts\n")


async def test_database_unreachable_10_minutes_nothing_parked_all_delivered(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    amqp: aio_pika.abc.AbstractChannel, queue: Consumer, taps: Any,  # noqa: F811
) -> None:
    target = urlsplit(TEST_DSN)
    async with tcp_proxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        through_proxy = urlunsplit(target._replace(netloc=f"{target.username}:{target.password}@127.0.0.1:"
                                                          f"{proxy.port}"))
        service = await crm_sync(
            broker=_broker(**SCALED),
            database=DatabaseSettings(database_url=through_proxy, db_pool_min=1, db_pool_max=5),
        )
        service.incidents.tick_seconds = 0.5
        before = [new_lead_id() for _ in range(5)]
        during = [new_lead_id() for _ in range(20)]
        for lid in before + during:
            await insert_lead(db, lid)  # the test's own connection, not through the proxy
        for lid in before:
            await send(captured(lid))
        await eventually(lambda: _delivered(db, before), timeout=20, what="leads before the outage")

        await proxy.cut()
        cut_at = time.monotonic()
        for lid in during:  # leads keep arriving while crm_sync cannot reach its database
            await send(captured(lid))
            await asyncio.sleep(0.5)
        opened = await eventually(lambda: _incident_alerts(taps, "database"), timeout=OUTAGE_SECONDS,
                                  what="database incident")
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - cut_at)))
        assert not await _delivered(db, during[:1])
        await proxy.restore()

        await eventually(lambda: _delivered(db, during), timeout=60, interval=0.5, what="leads after the outage")
        for lid in before + during:
            assert len(crm_sink.delivered(lid)) == 1
        assert await _parked_count(amqp, queue) == 0, "nothing is parked"
        alerts = await eventually(lambda: _incident_alerts(taps, "database", states=2), timeout=20,
                                  what="database incident resolved")
        assert len(alerts) <= 3
        assert [a.payload.incident.state for a in alerts if a.payload.incident] == ["opened", "resolved"]
        assert "DATABASE_URL" in (opened[0].payload.fix or "")


async def _leadwire(*args: str, stdin: str = "") -> tuple[int, str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AMQP", "DATABASE"))},
           "AMQP_URL": AMQP_URL, "DATABASE_URL": TEST_DSN, "LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services", *args, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate(stdin.encode())
    return process.returncode or 0, output.decode()


async def test_leadwire_parked_list_show_replay_drop_round_trip(
    crm_sync: StartCrmSync, crm_sink: FakeCrm, send: Send, db: asyncpg.Pool,  # noqa: F811
    amqp: aio_pika.abc.AbstractChannel, queue: Consumer,  # noqa: F811
) -> None:
    await crm_sync()
    refused, delivered, dropped = new_lead_id(), new_lead_id(), new_lead_id()
    for lid in (refused, delivered, dropped):
        await insert_lead(db, lid)
    # `refused`: the CRM refuses it (a 422 retrying cannot fix): parked at once.
    crm_sink.fail_next(1, status=422, lead=refused)
    refused_message = captured(refused)
    await send(refused_message)
    # `delivered`: delivered, and a second copy of it parked (as after a horizon ran out while another copy got
    # through): replaying it must not deliver the lead twice.
    delivered_message = captured(delivered)
    await send(delivered_message)
    await eventually(lambda: _delivered(db, [delivered]), what="delivered")
    await amqp.default_exchange.publish(
        aio_pika.Message(delivered_message.model_dump_json().encode(), message_id=str(delivered_message.message_id),
                         type=delivered_message.type, delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                         headers={H_REASON: "gave up after 24.0 h and 97 attempts: CrmUnavailable: HTTP 503",
                                  H_ATTEMPT: 97, H_FIRST_FAILURE: f"{time.time() - 86400:.3f}",
                                  H_PARKED_AT: "2026-12-03T09:12:00+00:00"}),
        routing_key=queue.parking_queue_name,
    )
    name = queue.parking_queue_name
    await eventually(lambda: _count_is(amqp, queue, 2), what="two parked messages")

    code, output = await _leadwire("parked", "list", "--queue", name)
    assert code == 0, output
    assert str(refused_message.message_id) in output
    assert str(delivered_message.message_id) in output
    assert "HTTP 422" in output
    assert "97" in output
    assert "2026-12-03 09:12:00" in output
    assert "2 parked messages" in output
    code, output = await _leadwire("parked", "list", "--queue", name, "--reason", "422")
    assert "1 parked message" in output
    assert str(delivered_message.message_id) not in output
    code, output = await _leadwire("parked", "list", "--queue", name, "--since", "2099-01-01")
    assert "0 parked messages" in output
    code, output = await _leadwire("parked", "show", str(refused_message.message_id), "--queue", name)
    assert code == 0, output
    assert "LeadCaptured" in output
    assert "HTTP 422" in output
    assert "first failure:" in output
    assert "Jane" not in output  # no body unless asked (it never holds answers, but a conversion's may)
    assert await _parked_count(amqp, queue) == 2, "listing and showing leave every message parked"

    crm_sink.heal()
    code, output = await _leadwire("parked", "replay", "--queue", name)
    assert code == 0, output
    assert "2 messages replayed" in output
    await eventually(lambda: _delivered(db, [refused]), timeout=15, what="the refused lead delivered on replay")
    await asyncio.sleep(2)  # the replayed copy of the delivered lead has been handled by now
    assert len(crm_sink.delivered(delivered)) == 1, "a replayed lead already delivered is not delivered twice"
    assert len(crm_sink.delivered(refused)) == 1
    assert await _parked_count(amqp, queue) == 0

    # drop asks first; "no" keeps the message, "yes" drops it
    crm_sink.fail_next(1, status=400, lead=dropped)
    dropped_message = captured(dropped)
    await send(dropped_message)
    await eventually(lambda: _count_is(amqp, queue, 1), what="parked")
    code, output = await _leadwire("parked", "drop", "--queue", name, stdin="no\n")
    assert code == 1
    assert "nothing dropped" in output
    assert str(dropped_message.message_id) in output
    assert await _count_is(amqp, queue, 1)
    code, output = await _leadwire("parked", "drop", str(dropped_message.message_id), "--queue", name, stdin="yes\n")
    assert code == 0, output
    assert "1 message dropped" in output
    await eventually(lambda: _count_is(amqp, queue, 0), what="dropped")
    code, output = await _leadwire("parked", "replay", "--queue", "no_such/consumer")
    assert code == 2
    assert "crm_sync/lead_captured" in output


async def _count_is(amqp: aio_pika.abc.AbstractChannel, consumer: Consumer, n: int) -> bool:
    return await _parked_count(amqp, consumer) == n
