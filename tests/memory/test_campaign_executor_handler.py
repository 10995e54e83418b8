"""The campaign executor's handler on FastStream's in-memory broker: no RabbitMQ, no PostgreSQL, no Meta.

A command reaches the worker through its routing key; a command its contract refuses (a forced change without a
reason) is parked and never executed; Meta's throttling sends it back to the executor's queue after Meta's wait
without using up an attempt; a broken token parks it at once; a bug is retried until the attempts run out, then
parked. The worker is a fake of the service's own port (`worker.Worker.execute`); the worker itself is tested against
the real database and the Graph sandbox in tests/integration/test_campaign_executor.py.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from faststream.rabbit import TestRabbitBroker

from contracts.commands import CampaignCommand, PauseCommand, SetBudgetCommand
from contracts.messages import CampaignCommandMessage
from services.campaign_executor import handlers
from shared.messaging import PermanentError, RetryLater
from shared.topology import H_ATTEMPT, H_QUEUE, H_REASON, delay_queue_name
from tests.memory.support import send, service, started, watch

ATTEMPTS = 4


class FakeWorker:
    """Records the commands the handler asked it to execute; raises `fail` when set."""

    def __init__(self) -> None:
        self.executed: list[CampaignCommandMessage] = []
        self.fail: Exception | None = None

    async def execute(self, message: CampaignCommandMessage) -> None:
        self.executed.append(message)
        if self.fail is not None:
            raise self.fail


def pause() -> CampaignCommandMessage:
    return CampaignCommandMessage.new(CampaignCommand(PauseCommand(
        command_id=uuid.uuid4(), requested_by="rules_engine:kill", object_id="120000000000001", level="adset",
        reason="CPL over the last 3 days was $89 (> $50)")))


def raise_budget() -> CampaignCommandMessage:
    return CampaignCommandMessage.new(CampaignCommand(SetBudgetCommand(
        command_id=uuid.uuid4(), requested_by="alice", object_id="120000000000002", level="adset",
        amount_minor=11500)))


@pytest.fixture
async def executor() -> Any:
    """The executor's handler with a fake worker; yields (in-memory broker, fake, republished copies)."""
    svc = service("campaign_executor", retry_attempts=ATTEMPTS)
    copies = watch(svc, handlers.CONSUMER)
    fake = FakeWorker()
    deps = await started(svc, handlers.Deps(worker=fake, db=None))  # type: ignore[arg-type]
    handlers.register(svc, deps)
    async with TestRabbitBroker(svc.broker) as broker:
        yield broker, fake, copies


@pytest.mark.parametrize("make", [pause, raise_budget], ids=["pause", "set_budget"])
async def test_a_command_reaches_the_worker_as_sent(executor: Any, make: Any) -> None:
    broker, fake, copies = executor
    message = make()
    await send(broker, message)
    assert fake.executed == [message]
    assert copies.parked == copies.retried == []


async def test_a_forced_command_without_a_reason_is_parked_and_never_executed(executor: Any) -> None:
    broker, fake, copies = executor
    body = raise_budget().model_dump(mode="json")
    body["payload"] = {**body["payload"], "force": True, "reason": " "}
    await send(broker, json.dumps(body).encode(), routing_key=CampaignCommandMessage.routing_key)
    assert fake.executed == []
    assert "a forced command must carry a reason" in copies.parked_once(handlers.CONSUMER).headers[H_REASON]


async def test_a_throttled_command_returns_to_the_executor_after_metas_wait_without_using_an_attempt(
    executor: Any,
) -> None:
    broker, fake, copies = executor
    fake.fail = RetryLater("Meta throttled the ad account for 40 s", delay=40.0)
    message = pause()
    await send(broker, message)
    [copy] = copies.retried
    assert copy.raw_message.routing_key == delay_queue_name(30)  # the longest tier within the wait
    assert copy.headers[H_QUEUE] == handlers.CONSUMER.queue_name
    assert int(copy.headers[H_ATTEMPT]) == 1
    assert json.loads(copy.body)["message_id"] == str(message.message_id)
    assert copies.parked == []


async def test_a_broken_token_parks_the_command_at_once(executor: Any) -> None:
    broker, fake, copies = executor
    fake.fail = PermanentError("Meta error 190: the access token has expired")
    await send(broker, pause())
    assert len(fake.executed) == 1
    assert "access token has expired" in copies.parked_once(handlers.CONSUMER).headers[H_REASON]


async def test_a_failing_command_is_retried_with_its_next_attempt_then_parked_at_the_last(executor: Any) -> None:
    broker, fake, copies = executor
    fake.fail = ValueError("a bug")
    await send(broker, pause())
    [retry] = copies.retried
    assert int(retry.headers[H_ATTEMPT]) == 2
    await send(broker, pause(), **{H_ATTEMPT: ATTEMPTS})
    [copy] = copies.parked
    assert f"gave up after {ATTEMPTS} attempts" in copy.headers[H_REASON]
    assert len(copies.retried) == 1
