"""Meta's Conversions API down for a while: conversions wait behind one circuit breaker (one probe at a time, not a
request per message per backoff), the outage is one incident (opened, resolved), and every event reaches Meta
once when it heals. Real RabbitMQ, PostgreSQL and the Graph sandbox failing `/{pixel}/events` with Meta's code 2.

Scaled in time like tests/integration/test_horizons.py: the backoff ceiling and the breaker's longest probe interval
are scaled down with the outage (30×), on the production code path.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aio_pika
import asyncpg

from contracts.messages import AlertRaisedMessage, RoutingKey
from tests.fixtures.infra import eventually
from tests.fixtures.taps import tap
from tests.integration.test_capi_sender import Harness, capi, conversion  # noqa: F401 (fixture)

SCALE = 30
OUTAGE_SECONDS = 600 / SCALE  # a 10-minute outage
SCALED = {"retry_backoff_max_seconds": 900 / SCALE, "breaker_probe_max_seconds": 60 / SCALE}
PATHS = r"/\d+/events"
# Separate requests: the test event code is per request, so each conversion is a request of its own, as
# conversions arriving minutes apart would be.
CONVERSIONS = 30


async def _sent(db: asyncpg.Pool, event_ids: list[str]) -> bool:
    count = await db.fetchval("select count(*) from capi_events where event_id = any($1::text[]) "
                              "and status = 'sent'", event_ids)
    return bool(count == len(event_ids))


async def test_capi_down_waits_behind_one_breaker_one_incident_and_every_event_goes_once(
    capi: Harness, db: asyncpg.Pool, amqp: aio_pika.abc.AbstractChannel  # noqa: F811
) -> None:
    alerts = await tap(amqp, RoutingKey.ALERT_RAISED)
    capi.settings = capi.settings.replace(capi.settings.broker.model_copy(update=SCALED))
    await capi.sandbox.faults(error_rate=1.0, path_regex=PATHS)  # Meta's code 2, HTTP 500
    messages = [conversion(test_event_code=f"TEST{i}") for i in range(CONVERSIONS)]
    event_ids = [m.payload.event_id or "" for m in messages]
    service = await capi.start()
    service.incidents.tick_seconds = 0.5
    started = time.monotonic()
    await capi.publish(*messages)

    async def incident(states: int) -> list[AlertRaisedMessage] | None:
        mine = [AlertRaisedMessage.model_validate(b) for b in await alerts.of("subject", {"meta_capi"})]
        return mine if len(mine) >= states else None

    opened = await eventually(lambda: incident(1), timeout=60, what="the Conversions API incident")
    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - started)))
    calls_while_down = await capi.requests()
    await capi.sandbox.faults(error_rate=0.0)
    healed = time.monotonic()

    await eventually(lambda: _sent(db, event_ids), timeout=90, interval=0.5, what="every conversion sent")
    catch_up = time.monotonic() - healed
    received = [e["event_id"] for e in await capi.received()]
    assert sorted(received) == sorted(event_ids), "an event was lost or sent twice"
    assert await capi.parked() == []
    # Without the breaker each of the 30 would be retried on its own backoff (1, 2, 4, ... s; ~5 tries each in
    # 20 s, each try being the Graph client's own retries): ~150 tries. Behind it: the first failures, then probes.
    assert calls_while_down < 3 * CONVERSIONS, f"{calls_while_down} requests during the outage"

    resolved: list[Any] = await eventually(lambda: incident(2), timeout=30, what="the incident resolved")
    await asyncio.sleep(1.5)  # any further alert of this incident would be out by now
    states = [a.payload.incident.state for a in await incident(1) or [] if a.payload.incident]
    assert states == ["opened", "resolved"]
    first = opened[0].payload
    assert first.service == "capi_sender"
    assert first.code == "dependency_unavailable_opened"
    assert "waiting for Meta's Conversions API" in first.summary
    assert "leadwire parked list" in (first.fix or "")
    assert "answers again" in resolved[-1].payload.summary
    assert capi.sandbox.token not in str([a.payload for a in resolved])
    sys.stderr.write(f"\n[capi outage] {calls_while_down} requests in {OUTAGE_SECONDS:.0f} s down for "
                     f"{CONVERSIONS} conversions; all sent {catch_up:.1f} s after it healed\n")
