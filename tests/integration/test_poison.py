"""Issue 14, poison isolation: every poison kind to every consumer queue of `shared.topology.CONSUMERS`, against the
real services (`create_app`, as `leadwire run` starts them), the real broker, database and the Graph sandbox.

Each poison message must be parked alone, at once, with a reason; the valid message sent after them must come
through within seconds; and nothing may stay in a consumer queue, ready or unacknowledged (a message redelivered in
a loop is always in one of the two).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from pydantic import SecretStr

from contracts.alerts import AlertRaised
from contracts.commands import CampaignCommand
from contracts.conversions import ConversionRequested
from contracts.envelope import Envelope
from contracts.insights import InsightsUpdated
from contracts.leads import LeadCaptured, LeadgenReceived, RedeliverLead
from contracts.messages import (
    AlertRaisedMessage,
    CampaignCommandMessage,
    CommandResultMessage,
    ConversionRequestedMessage,
    InsightsUpdatedMessage,
    LeadCapturedMessage,
    LeadgenReceivedMessage,
    RedeliverLeadMessage,
    RuleConsentChangedMessage,
    RuleDecisionReviewedMessage,
)
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed
from services.campaign_executor.app import create_app as create_campaign_executor
from services.capi_sender.app import create_app as create_capi_sender
from services.crm_sync.app import create_app as create_crm_sync
from services.crm_sync.settings import CrmSyncSettings
from services.lead_fetcher.app import create_app as create_lead_fetcher
from services.lead_fetcher.settings import LeadFetcherSettings
from services.rules_engine.app import create_app as create_rules_engine
from services.rules_engine.settings import RulesSettings
from shared import metrics
from shared.service import Service
from shared.settings import BrokerSettings, MetaSettings, Settings
from shared.topology import CONSUMERS, EXCHANGE, H_ATTEMPT, H_NOT_BEFORE, H_REASON, Consumer
from tests.fixtures import vhosts
from tests.fixtures.crm import FakeCrm, crm_sink  # noqa: F401
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle

RESULT = json.loads((Path(__file__).parents[1] / "resources/contracts/campaign_command_result_v1.json").read_text())


@pytest.fixture
async def running(settings: Settings, vhost_url: str, sandbox: SandboxHandle,
                  crm_sink: FakeCrm) -> AsyncIterator[list[Service]]:  # noqa: F811
    """Every service with a consumer in `CONSUMERS`, on a vhost of this module's own."""
    state = sandbox.state
    base = settings.replace(
        BrokerSettings(amqp_url=vhost_url, RETRY_ATTEMPTS=3, GRACEFUL_TIMEOUT_SECONDS=5),
        MetaSettings(access_token=SecretStr(sandbox.token), page_access_token=SecretStr(sandbox.page_token),
                     app_secret=SecretStr(sandbox.app_secret), graph_url=sandbox.url, api_version=sandbox.version,
                     page_ids=[state["page_id"]], ad_account_id=[sandbox.account_id], pixel_id=state["pixel_id"],
                     webhook_verify_token="verify", health_check_seconds=0),
        RulesSettings(dry_run=True, interval_seconds=0),
        LeadFetcherSettings(backfill_interval_seconds=0, fetch_batch_window_ms=20, access_retry_seconds=1),
        CrmSyncSettings(crm_webhook_url=crm_sink.webhook_url, crm_webhook_secret="crm-secret", crm_timeout_seconds=2),
    )
    started: list[Service] = []
    try:
        for factory in (create_rules_engine, create_campaign_executor, create_capi_sender, create_crm_sync,
                        create_lead_fetcher):
            service = factory(base)
            await service.start()
            started.append(service)
        served = {(c.service, c.name) for s in started for c in CONSUMERS if c.service == s.name}
        assert served == {(c.service, c.name) for c in CONSUMERS}, "a consumer of the topology is not run here"
        yield started
    finally:
        for service in reversed(started):
            await service.stop()


def valid_messages(sandbox: SandboxHandle, lead_id: str) -> dict[str, Envelope[Any]]:
    """One message each consumer handles successfully, by routing key (the LeadCaptured is the poison kinds'
    template only: crm_sync's valid one is the lead_fetcher's, for the LeadgenReceived)."""
    state = sandbox.state
    adset = state["accounts"][sandbox.account_id]["adsets"][0]
    conversion = ConversionRequested.model_validate({
        "event_name": "SignedCase", "event_time": int(time.time()) - 60,
        "user": {"email": f"{uuid.uuid4().hex[:8]}@example.com"}, "crm_name": "Litify",
        "custom_data": {"value": 100.0, "currency": "USD"},
    })
    result = CommandResultMessage.model_validate({**RESULT, "message_id": str(uuid.uuid4())})
    messages: list[Envelope[Any]] = [
        LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=lead_id, page_id=state["page_id"])),
        RedeliverLeadMessage.new(RedeliverLead(leadgen_id=lead_id, reason="poison test")),
        LeadCapturedMessage.new(LeadCaptured(leadgen_id=str(int(lead_id) + 7), page_id=state["page_id"],
                                             created_time=datetime.now(UTC))),
        ConversionRequestedMessage.new(conversion),
        InsightsUpdatedMessage.new(InsightsUpdated(account_id=sandbox.account_id, date_since=date.today(),
                                                   date_until=date.today(), rows_changed=0)),
        result,
        AlertRaisedMessage.new(AlertRaised(severity="info", code="poison_test", summary="a test alert",
                                           service="tests")),
        CampaignCommandMessage.new(CampaignCommand.model_validate({
            "kind": "pause", "command_id": str(uuid.uuid4()), "requested_by": "test", "reason": "poison test",
            "object_id": adset, "level": "adset", "dry_run": True,
        })),
        RuleConsentChangedMessage.new(RuleConsentChanged(rule="poison-test", enabled=False, by="tests")),
        RuleDecisionReviewedMessage.new(RuleDecisionReviewed(decision_id=2**62, verdict="reject", by="tests")),
    ]
    return {type(m).routing_key: m for m in messages}


def _strings(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, str):
        return [path]
    if isinstance(node, dict):
        return [p for key, value in node.items() for p in _strings(value, (*path, key))]
    if isinstance(node, list):
        return [p for index, value in enumerate(node) for p in _strings(value, (*path, index))]
    return []


def _set(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


def _fresh(message: Envelope[Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message.model_dump_json())
    body["message_id"] = str(uuid.uuid4())
    return body


MARK = "@@POISON@@"


def poison_kinds(message: Envelope[Any]) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Every poison kind of issue 14, built on one valid message: name -> (body, headers)."""
    leaves = _strings(_fresh(message)["payload"])

    def every_string(value: str) -> bytes:
        body = _fresh(message)
        for path in leaves:
            node: Any = body["payload"]
            for key in path:
                node = node[key]
            _set(body["payload"], path, node + value)
        return json.dumps(body).encode()

    def first_string_as(raw: str) -> bytes:  # a literal JSON cannot say through json.dumps
        body = _fresh(message)
        _set(body["payload"], leaves[-1], MARK)
        return json.dumps(body).encode().replace(f'"{MARK}"'.encode(), raw.encode())

    valid = message.model_dump_json().encode()
    kinds = {
        "nul": (every_string("\x00"), {}),
        "lone_surrogate": (first_string_as('"\\udc00"'), {}),
        "overflow": (first_string_as("1e400"), {}),
        "infinity": (first_string_as("Infinity"), {}),
        "nan": (first_string_as("NaN"), {}),
        "not_json": (b'{"message_id": "', {}),
        "not_before_abc": (json.dumps(_fresh(message)).encode(), {H_NOT_BEFORE: "abc"}),
        "not_before_inf": (json.dumps(_fresh(message)).encode(), {H_NOT_BEFORE: "Infinity"}),
        "attempt_x": (json.dumps(_fresh(message)).encode(), {H_ATTEMPT: "x"}),
    }
    assert all(body != valid for body, _ in kinds.values())
    if isinstance(message, ConversionRequestedMessage):  # where OverflowError and non-finite values bit
        body = _fresh(message)
        body["payload"]["event_time"] = MARK
        kinds["event_time_1e400"] = (json.dumps(body).encode().replace(f'"{MARK}"'.encode(), b"1e400"), {})
        for literal in ("Infinity", "NaN", "1e999"):
            body = _fresh(message)
            body["payload"]["custom_data"]["value"] = MARK
            kinds[f"value_{literal}"] = (json.dumps(body).encode().replace(f'"{MARK}"'.encode(), literal.encode()), {})
        body = _fresh(message)
        body["payload"]["event_name"] = "Signed\x00Case"
        kinds["event_name_nul"] = (json.dumps(body).encode(), {})
    return kinds


def consumed(consumer: Consumer) -> float:
    return float(metrics.consumer_series(consumer.service, consumer.name).consumed._value.get())


async def test_every_poison_kind_to_every_consumer_is_parked_alone_and_the_next_message_passes(
    running: list[Service], sandbox: SandboxHandle, vhost_url: str,
) -> None:
    [lead_id] = await sandbox.create_leads(count=1, deliver=False)
    valid = valid_messages(sandbox, lead_id)
    assert {key for c in CONSUMERS for key in c.routing_keys} <= set(valid)
    vhost = urlsplit(vhost_url).path.lstrip("/")

    connection = await aio_pika.connect(vhost_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EXCHANGE.name, ensure=False)
        sent: dict[str, int] = {}  # poison messages per routing key
        for routing_key, message in valid.items():
            for body, headers in poison_kinds(message).values():
                await exchange.publish(aio_pika.Message(body, headers=headers or None, message_id=str(uuid.uuid4()),
                                                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                       routing_key=routing_key)
                sent[routing_key] = sent.get(routing_key, 0) + 1

        before = {c: consumed(c) for c in CONSUMERS}
        started = time.monotonic()
        # The LeadgenReceived first: the lead it stores is what the RedeliverLead and the conversion are about.
        leadgen = valid.pop(LeadgenReceivedMessage.routing_key)
        del valid[LeadCapturedMessage.routing_key]
        await _publish(exchange, leadgen)
        fetcher = next(c for c in CONSUMERS if c.routing_keys == (LeadgenReceivedMessage.routing_key,))
        await eventually(lambda: _async(consumed(fetcher) > before[fetcher]), timeout=30, what="the lead stored")
        for message in valid.values():
            await _publish(exchange, message)
        for consumer in CONSUMERS:
            await eventually(lambda c=consumer: _async(consumed(c) > before[c]), timeout=30,
                             what=f"the valid message through {consumer.queue_name}")
        took = time.monotonic() - started

        queue_for: Callable[[Consumer], str] = lambda c: c.parking_queue_name  # noqa: E731
        for consumer in CONSUMERS:
            expected = sent[consumer.routing_keys[0]]
            parked = await _drain(channel, queue_for(consumer), expected)
            assert len(parked) == expected, f"{consumer.queue_name}: {len(parked)} of {expected} parked"
            reasons = [str(m.headers[H_REASON]) for m in parked]
            assert all(reasons), reasons
            assert not any("@example.com" in reason for reason in reasons)
            assert any("malformed header x-leadwire-not-before" in r for r in reasons), reasons
            assert any("malformed header x-leadwire-attempt" in r for r in reasons), reasons

        # Nothing left behind: for a few seconds, every consumer queue is empty, ready and unacknowledged alike, and
        # no poison message comes back to a parking queue a second time.
        for _ in range(6):
            counts = await asyncio.to_thread(vhosts.queue_counts, vhost)
            for consumer in CONSUMERS:
                assert counts[consumer.queue_name] == (0, 0), (consumer.queue_name, counts[consumer.queue_name])
                assert counts[consumer.parking_queue_name] == (0, 0), consumer.parking_queue_name
            await asyncio.sleep(0.5)
    finally:
        await connection.close()
    assert took < 30


async def _publish(exchange: aio_pika.abc.AbstractExchange, message: Envelope[Any]) -> None:
    await exchange.publish(aio_pika.Message(message.model_dump_json().encode(), message_id=str(message.message_id),
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                           routing_key=type(message).routing_key)


async def _drain(channel: aio_pika.abc.AbstractChannel, queue_name: str,
                 expected: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """The parked messages, once `expected` of them are there (or 10 s passed)."""
    queue = await channel.get_queue(queue_name, ensure=False)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = await queue.get(fail=False)
        if message is None:
            if len(got) >= expected:
                break
            await asyncio.sleep(0.1)
            continue
        await message.ack()
        got.append(message)
    return got


async def _async(value: bool) -> bool:
    return value
