"""lead_fetcher's LeadgenReceived batch handler, in memory: no RabbitMQ, no PostgreSQL, no Graph API.

The handler reads its queue through `shared.bulk_consumer` (outside FastStream), so it gets its decoded messages here
as its `BulkConsumer` hands them over (`support.batch`). It is thin: each message goes to the worker on its own,
all of a batch at once, under the message's correlation id; each message's result is its own (None when stored or a
duplicate; the worker's exception otherwise, which the consumer parks or retries). The worker here is a fake of our
own port (`Worker.__call__`); the worker itself is tested against the real database and the Graph sandbox in
tests/integration/test_lead_fetcher.py.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from contracts.leads import LeadgenReceived
from contracts.messages import LeadgenReceivedMessage
from services.lead_fetcher import handlers
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.logging import current_correlation_id
from shared.messaging import PermanentError, RetryLater
from shared.topology import consumer
from tests.memory.support import batch, service, started

LEADGEN = consumer("lead_fetcher", "leadgen_received")


class FakeCapture:
    """Our port `Worker.__call__`: records each message with the correlation id it ran under; `fail` maps a lead
    id to the exception its message raises; `gate`, when set, holds every call until it opens."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.fail: dict[str, BaseException] = {}
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    async def __call__(self, message: LeadgenReceivedMessage) -> None:
        self.calls.append((message.payload.leadgen_id, current_correlation_id()))
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()
        if (exc := self.fail.get(message.payload.leadgen_id)) is not None:
            raise exc

    def check_held(self) -> list[str]:
        return []


def leadgen(leadgen_id: str) -> LeadgenReceivedMessage:
    return LeadgenReceivedMessage.new(LeadgenReceived(leadgen_id=leadgen_id, page_id="222"))


@pytest.fixture
async def lead_fetcher() -> tuple[Any, FakeCapture]:
    """A lead_fetcher service whose handlers use a fake worker (never started: no broker, no jobs running)."""
    svc = service("lead_fetcher", uses_database=True)
    fake = FakeCapture()
    deps = await started(svc, handlers.Deps(capture=fake, graph=None, pool=None))  # type: ignore[arg-type]
    handlers.register(svc, deps, LeadFetcherSettings(backfill_interval_seconds=0), token=SecretStr(""),
                      leadgen_consumer=LEADGEN, redeliver_consumer=consumer("lead_fetcher", "redeliver_lead"))
    return svc, fake


async def test_each_message_goes_to_the_worker_once_under_its_correlation_id(lead_fetcher: Any) -> None:
    svc, fake = lead_fetcher
    messages = [leadgen(str(10**15 + i)) for i in range(5)]

    assert await batch(svc, LEADGEN, messages) == [None] * 5  # stored or duplicates: all acked

    assert sorted(fake.calls) == sorted((m.payload.leadgen_id, str(m.correlation_id)) for m in messages)


async def test_a_batch_s_messages_are_handled_at_once_not_one_after_another(lead_fetcher: Any) -> None:
    svc, fake = lead_fetcher
    fake.gate = asyncio.Event()
    handled = asyncio.create_task(batch(svc, LEADGEN, [leadgen(str(10**15 + i)) for i in range(8)]))

    async def all_waiting() -> None:
        while fake.waiting < 8:  # one after another, the second would never start while the first waits
            await asyncio.sleep(0)

    await asyncio.wait_for(all_waiting(), timeout=5)
    fake.gate.set()
    assert await handled == [None] * 8


async def test_each_message_fails_alone_with_the_worker_s_exception(lead_fetcher: Any) -> None:
    svc, fake = lead_fetcher
    throttled, gone, broken = RetryLater("page throttled", delay=60), PermanentError("lead not found"), OSError("db")
    fake.fail = {"1000000000000001": throttled, "1000000000000003": gone, "1000000000000004": broken}
    messages = [leadgen(str(10**15 + i)) for i in range(6)]

    results = await batch(svc, LEADGEN, messages)

    # in the messages' order: retried later (no attempt used), parked, retried with backoff; the others acked
    assert results == [None, throttled, None, gone, broken, None]
    assert len(fake.calls) == 6, "a failing neighbour stops no other message"


async def test_a_redelivered_message_is_handed_to_the_worker_again(lead_fetcher: Any) -> None:
    """Idempotence is the worker's (it finds the lead stored): the handler keeps no memory of its own."""
    svc, fake = lead_fetcher
    message = leadgen("1000000000000009")
    again = LeadgenReceivedMessage.model_validate_json(message.model_dump_json())

    assert await batch(svc, LEADGEN, [message]) == [None]
    assert await batch(svc, LEADGEN, [again]) == [None]
    assert [lead for lead, _ in fake.calls] == ["1000000000000009"] * 2
    assert uuid.UUID(fake.calls[1][1] or "") == message.correlation_id
