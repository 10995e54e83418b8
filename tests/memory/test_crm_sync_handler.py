"""crm_sync's LeadCaptured handler on FastStream's in-memory broker: no RabbitMQ, no PostgreSQL.

The handler is thin: it hands the message, its attempt number (from the retry header) and the attempt budget to
the worker; the reliability middleware parks what is invalid and retries what failed. The worker here is a fake of
our own port (`Worker.__call__`); the worker itself is tested against the real database and CRMs in
tests/integration/test_crm_sync.py.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from faststream.rabbit import TestRabbitBroker

from contracts.leads import LeadCaptured
from contracts.messages import LeadCapturedMessage
from services.crm_sync import handlers
from shared.messaging import RetryLater
from shared.topology import H_ATTEMPT, H_QUEUE, H_REASON, consumer
from tests.memory.support import send, service, started, watch

QUEUE = consumer("crm_sync", "lead_captured")


class FakeSync:
    """Records what the handler asked the worker to do; raises `fail` when set."""

    def __init__(self) -> None:
        self.calls: list[tuple[LeadCapturedMessage, int, int]] = []
        self.fail: Exception | None = None

    async def __call__(self, message: LeadCapturedMessage, *, attempt: int, max_attempts: int,
                       expired: bool = False) -> None:
        self.calls.append((message, attempt, max_attempts))
        if self.fail is not None:
            raise self.fail


def captured() -> LeadCapturedMessage:
    return LeadCapturedMessage.new(LeadCaptured(
        leadgen_id=str(uuid.uuid4().int)[:16], page_id="1111", created_time=datetime(2026, 11, 20, tzinfo=UTC),
    ))


@pytest.fixture
async def crm_sync() -> Any:
    """A crm_sync service whose handler uses a fake worker; yields (in-memory broker, fake, republished copies)."""
    svc = service("crm_sync")
    copies = watch(svc, QUEUE)
    fake = FakeSync()
    async with aiohttp.ClientSession() as http:
        deps = await started(svc, handlers.Deps(sync=fake, http=http))  # type: ignore[arg-type]
        handlers.register(svc, deps, QUEUE, prefetch=10)
        async with TestRabbitBroker(svc.broker) as broker:
            yield broker, fake, copies


async def test_the_handler_hands_the_message_and_its_first_attempt_to_the_worker(crm_sync: Any) -> None:
    broker, fake, copies = crm_sync
    message = captured()
    await send(broker, message)
    [(got, attempt, max_attempts)] = fake.calls
    assert got == message
    assert (attempt, max_attempts) == (1, 4)
    assert copies.parked == copies.retried == []


async def test_a_retried_message_carries_its_attempt_number_to_the_worker(crm_sync: Any) -> None:
    broker, fake, _ = crm_sync
    await send(broker, captured(), **{H_ATTEMPT: 3})
    assert [attempt for _, attempt, _ in fake.calls] == [3]


async def test_a_body_that_is_not_a_lead_captured_is_parked_without_reaching_the_worker(crm_sync: Any) -> None:
    broker, fake, copies = crm_sync
    body = {**captured().model_dump(mode="json"), "type": "LeadSynced"}
    await send(broker, json.dumps(body).encode(), routing_key=LeadCapturedMessage.routing_key)
    assert fake.calls == []
    assert "LeadCaptured" in copies.parked_once(QUEUE).headers[H_REASON]


async def test_a_failed_delivery_goes_back_to_its_own_queue_after_a_delay(crm_sync: Any) -> None:
    broker, fake, copies = crm_sync
    fake.fail = RetryLater("the CRM asked to wait", delay=1.0)
    message = captured()
    await send(broker, message)
    assert len(fake.calls) == 1
    [copy] = copies.retried
    assert copy.headers[H_QUEUE] == QUEUE.queue_name  # the retry returns to crm_sync only
    assert json.loads(copy.body)["message_id"] == str(message.message_id)  # the same message, not a new one
    assert copies.parked == []
