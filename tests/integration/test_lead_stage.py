"""The funnel's first stage (issue 17, item 5): capi_sender sends each captured lead to the Conversions API as the CRM
stage "Lead", as Meta's Conversion Leads integration asks, against the Graph sandbox on the real broker and database."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from contracts.leads import LeadCaptured
from contracts.messages import LeadCapturedMessage
from services.capi_sender.app import create_app
from services.capi_sender.settings import CapiSettings
from shared.messaging import declare_topology, ensure_confirmed
from shared.service import Service
from shared.settings import MetaSettings, Settings
from shared.topology import EXCHANGE, Consumer, register
from tests.fixtures.infra import AMQP_URL, eventually, unique
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_outcome_matching import _phone, _sha, _store_lead

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def lead_queue(amqp: Any) -> AsyncIterator[Consumer]:
    name = unique("capi_lead_stage_")
    private = register(Consumer(name, "lead_captured", (f"test.{name}",)))
    await declare_topology(AMQP_URL, [private])
    yield private
    for queue_name in (private.queue_name, private.parking_queue_name):
        await amqp.queue_delete(queue_name)


async def _publish(broker: RabbitBroker, queue: Consumer, message: LeadCapturedMessage) -> None:
    frame = await broker.publish(message.model_dump_json().encode(), exchange=EXCHANGE,
                                 routing_key=queue.routing_keys[0], persist=True, mandatory=True,
                                 content_type="application/json", message_id=str(message.message_id),
                                 message_type=message.type)
    ensure_confirmed(frame, queue.queue_name)


def _captured(lead_id: str, *, created: float, organic: bool = False) -> LeadCapturedMessage:
    return LeadCapturedMessage.new(LeadCaptured(
        leadgen_id=lead_id, page_id="1111", form_id="2222", ad_id="3333", adset_id="4444", campaign_id="5555",
        created_time=datetime.fromtimestamp(created, UTC), is_organic=organic,
    ))


async def _start(settings: Settings, sandbox: SandboxHandle, lead_queue: Consumer, **capi: Any) -> Service:
    conversions = register(Consumer(unique("capi_conv_"), "conversion_requested", (f"test.{unique('conv')}",)))
    await declare_topology(AMQP_URL, [conversions])
    service = create_app(settings.replace(
        MetaSettings(pixel_id=sandbox.state["pixel_id"], graph_url=sandbox.url, access_token=sandbox.token,
                     app_secret=sandbox.app_secret),
        CapiSettings(capi_linger_ms=20, **capi),
    ), source=conversions, lead_source=lead_queue)
    await service.start()
    return service


async def test_each_captured_lead_is_sent_once_as_the_lead_stage(
    settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker, lead_queue: Consumer,
    amqp: Any,
) -> None:
    email = f"{unique('lena.')}@example.com"
    lead_id = await _store_lead(db, email=email, phone=_phone()[0])
    old_id = await _store_lead(db, email=f"{unique('old.')}@example.com", phone=_phone()[0])
    organic_id = await _store_lead(db, email=f"{unique('org.')}@example.com", phone=_phone()[0])
    service = await _start(settings, sandbox, lead_queue, capi_crm_name="Litify")
    pixel_id = sandbox.state["pixel_id"]

    async def sent(event_id: str) -> dict[str, Any] | None:
        events = (await sandbox.capi_events(pixel_id))["events"]
        found = [e["event"] for e in events if e["event"].get("event_id") == event_id]
        return found[0] if len(found) == 1 else None

    try:
        now = time.time()
        message = _captured(lead_id, created=now - 3600)
        await _publish(broker, lead_queue, message)
        await _publish(broker, lead_queue, _captured(lead_id, created=now - 3600))  # the backfill read it too
        await _publish(broker, lead_queue, _captured(old_id, created=now - 8 * 86400))  # past Meta's 7 days
        await _publish(broker, lead_queue, _captured(organic_id, created=now - 60, organic=True))
        event = await eventually(lambda: sent(f"lead-{lead_id}"), timeout=20, what="the Lead stage sent")
        assert event["event_name"] == "Lead"
        assert event["action_source"] == "system_generated"
        assert event["event_time"] == int(message.payload.created_time.timestamp())
        assert event["user_data"]["lead_id"] == lead_id
        assert event["user_data"]["em"] == _sha(email)  # the stored lead's identifiers go with it
        assert event["custom_data"] == {"event_source": "crm", "lead_event_source": "Litify"}
        await eventually(lambda: _recorded_sent(db, f"lead-{lead_id}"), what="recorded as sent")
        await eventually(lambda: _empty(amqp, lead_queue.queue_name), what="every LeadCaptured acknowledged")
    finally:
        await service.stop()
    events = (await sandbox.capi_events(pixel_id))["events"]
    ids = [e["event"].get("event_id") for e in events]
    assert ids.count(f"lead-{lead_id}") == 1  # the second copy was not sent again
    assert f"lead-{old_id}" not in ids
    assert f"lead-{organic_id}" not in ids


async def _empty(amqp: Any, queue_name: str) -> bool:
    for name in (queue_name, f"{queue_name}.parked"):  # nothing waiting, nothing parked
        queue = await amqp.declare_queue(name, passive=True)
        if queue.declaration_result.message_count:
            return False
    return True


async def test_the_lead_stage_can_be_turned_off(settings: Settings, sandbox: SandboxHandle) -> None:
    off = create_app(settings.replace(CapiSettings(capi_send_lead_stage=False)))
    assert [b.consumer.name for b in off._bulk_consumers] == ["conversion_requested"]
    on = create_app(settings.replace(CapiSettings()))
    assert [b.consumer.name for b in on._bulk_consumers] == ["conversion_requested", "lead_captured"]


async def _recorded_sent(db: asyncpg.Pool, event_id: str) -> bool:
    return await db.fetchval("select status from capi_events where event_id = $1", event_id) == "sent"
