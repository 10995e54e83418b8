"""The rules engine's handlers on FastStream's in-memory broker: no RabbitMQ, no PostgreSQL.

Each of its six messages reaches its own handler through its routing key and is claimed for that handler's queue; an
enabled rule is evaluated at once; a message no contract accepts is parked; while the database is down the consumers
wait, except the alerts (an outage must be announced while it lasts). The worker is a fake of the service's own port
(`worker.Worker`); the worker itself is tested against the real database in tests/integration/test_rules_engine.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from faststream.rabbit import TestRabbitBroker

from contracts import messages as m
from contracts.alerts import AlertRaised
from contracts.commands import CommandResult
from contracts.conversions import ConversionRequested, ConversionUser
from contracts.envelope import Envelope
from contracts.insights import InsightsUpdated
from contracts.rules import RuleConsentChanged, RuleDecisionReviewed
from services.rules_engine import handlers
from shared.topology import H_QUEUE, H_REASON
from tests.memory.support import send, service, started, watch

ACCOUNT = "act_1000000001"
CONSUMERS = (handlers.INSIGHTS_UPDATED, handlers.CRM_OUTCOMES, handlers.COMMAND_RESULTS, handlers.ALERTS,
             handlers.RULE_CONSENT, handlers.DECISION_REVIEWS)


class FakeWorker:
    """Records what the handlers asked of the worker (method, message or None, keyword arguments); a method named
    in `fail` raises that exception."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Envelope[Any] | None, dict[str, Any]]] = []
        self.fail: dict[str, BaseException] = {}
        self.consent_changed = True  # what change_consent answers: False for a change applied before
        self.wake_after = 0.0
        self.ran = asyncio.Event()
        self.pruned = asyncio.Event()

    def _call(self, method: str, message: Envelope[Any] | None, **kwargs: Any) -> None:
        self.calls.append((method, message, kwargs))
        if method in self.fail:
            raise self.fail[method]

    async def run(self, *, caused_by: Envelope[Any] | None = None, **kwargs: Any) -> None:
        self._call("run", caused_by, **kwargs)
        self.ran.set()

    async def record_crm_outcome(self, message: m.ConversionRequestedMessage, *, claim_as: str) -> None:
        self._call("record_crm_outcome", message, claim_as=claim_as)

    async def record_command_result(self, message: m.CommandResultMessage, *, claim_as: str) -> None:
        self._call("record_command_result", message, claim_as=claim_as)

    async def deliver_alert(self, message: m.AlertRaisedMessage) -> None:
        self._call("deliver_alert", message)

    async def change_consent(self, message: m.RuleConsentChangedMessage, *, claim_as: str) -> bool:
        self._call("change_consent", message, claim_as=claim_as)
        return self.consent_changed

    async def review_decision(self, message: m.RuleDecisionReviewedMessage, *, claim_as: str) -> None:
        self._call("review_decision", message, claim_as=claim_as)

    async def prune_decisions(self) -> int:
        self.pruned.set()
        self._call("prune_decisions", None)
        return 0

    async def next_wake(self, interval: float) -> float:
        self._call("next_wake", None, interval=interval)
        return self.wake_after

    def methods(self) -> list[str]:
        return [method for method, _, _ in self.calls]


def insights() -> m.InsightsUpdatedMessage:
    return m.InsightsUpdatedMessage.new(InsightsUpdated(account_id=ACCOUNT, date_since=date(2026, 11, 18),
                                                      date_until=date(2026, 11, 20), rows_changed=12))


def outcome() -> m.ConversionRequestedMessage:
    return m.ConversionRequestedMessage.new(ConversionRequested(
        event_name="SignedCase", event_time=datetime.now(UTC), user=ConversionUser(lead_id="1234567890123456")))


def result() -> m.CommandResultMessage:
    return m.CommandResultMessage.new(CommandResult(command_id=uuid.uuid4(), kind="pause", status="ok",
                                                  object_id="120000000000001"))


def alert() -> m.AlertRaisedMessage:
    return m.AlertRaisedMessage.new(AlertRaised(severity="warning", code="rule_acted", service="rules_engine",
                                              summary="Paused ad set 'Broad': CPL over the last 3 days $89 > $50."))


def consent(*, enabled: bool) -> m.RuleConsentChangedMessage:
    return m.RuleConsentChangedMessage.new(RuleConsentChanged(rule="kill", enabled=enabled, by="alice"))


def review() -> m.RuleDecisionReviewedMessage:
    return m.RuleDecisionReviewedMessage.new(RuleDecisionReviewed(decision_id=42, verdict="approve", by="alice"))


@pytest.fixture
async def engine() -> Any:
    """The rules engine's handlers on a service with the database's breaker; yields (broker, fake, copies, service)."""
    svc = service("rules_engine", uses_database=True)
    copies = watch(svc, *CONSUMERS)
    fake = FakeWorker()
    deps = await started(svc, handlers.Deps(worker=fake))  # type: ignore[arg-type]
    handlers.register(svc, deps, interval_seconds=0)
    async with TestRabbitBroker(svc.broker) as broker:
        yield broker, fake, copies, svc


@pytest.mark.parametrize(
    ("make", "method", "claimed_for"),
    [
        (outcome, "record_crm_outcome", handlers.CRM_OUTCOMES),
        (result, "record_command_result", handlers.COMMAND_RESULTS),
        (review, "review_decision", handlers.DECISION_REVIEWS),
    ],
    ids=["crm_outcome", "command_result", "decision_review"],
)
async def test_each_message_reaches_its_own_handler_and_is_claimed_for_its_queue(
    engine: Any, make: Any, method: str, claimed_for: Any
) -> None:
    broker, fake, copies, _ = engine
    message = make()
    await send(broker, message)
    assert fake.calls == [(method, message, {"claim_as": claimed_for.queue_name})]
    assert copies.parked == copies.retried == []


async def test_updated_insights_evaluate_that_account_claimed_for_the_insights_queue(engine: Any) -> None:
    broker, fake, _, _ = engine
    message = insights()
    await send(broker, message)
    assert fake.calls == [("run", message, {"trigger": "insights_updated", "accounts": [ACCOUNT],
                                            "claim_as": handlers.INSIGHTS_UPDATED.queue_name})]


async def test_an_alert_is_delivered_without_a_claim(engine: Any) -> None:
    broker, fake, _, _ = engine
    message = alert()
    await send(broker, message)
    assert fake.calls == [("deliver_alert", message, {})]


async def test_enabling_a_rule_evaluates_at_once(engine: Any) -> None:
    broker, fake, _, _ = engine
    message = consent(enabled=True)
    await send(broker, message)
    assert fake.calls == [("change_consent", message, {"claim_as": handlers.RULE_CONSENT.queue_name}),
                          ("run", None, {"trigger": "consent"})]


@pytest.mark.parametrize(("enabled", "changed"), [(False, True), (True, False)],
                         ids=["back_to_shadow_mode", "consent_applied_before"])
async def test_no_evaluation_for_shadow_mode_or_a_consent_applied_before(
    engine: Any, enabled: bool, changed: bool
) -> None:
    broker, fake, _, _ = engine
    fake.consent_changed = changed
    await send(broker, consent(enabled=enabled))
    assert fake.methods() == ["change_consent"]


async def test_a_review_its_contract_refuses_is_parked_by_its_consumer_without_reaching_the_worker(
    engine: Any,
) -> None:
    broker, fake, copies, _ = engine
    body = {**review().model_dump(mode="json"), "payload": {"decision_id": 0, "verdict": "approve", "by": "alice"}}
    await send(broker, json.dumps(body).encode(), routing_key=m.RuleDecisionReviewedMessage.routing_key)
    assert fake.calls == []
    assert "decision_id" in copies.parked_once(handlers.DECISION_REVIEWS).headers[H_REASON]


async def test_while_the_database_is_down_evaluations_wait_and_alerts_are_still_delivered(engine: Any) -> None:
    broker, fake, copies, svc = engine
    breaker = svc.guards.database
    breaker.clock = lambda: 0.0  # no probe comes due during the test
    fake.fail["record_command_result"] = ConnectionRefusedError("the database does not answer")
    for _ in range(breaker.failures_to_open):
        await send(broker, result())
    assert breaker.is_open
    assert len(copies.retried) == breaker.failures_to_open  # each failed result retried, none lost
    fake.calls.clear()

    await send(broker, insights())
    await send(broker, alert())

    assert fake.methods() == ["deliver_alert"]  # the evaluation waits, the outage is announced
    waiting = copies.retried[-1]
    assert waiting.headers[H_QUEUE] == handlers.INSIGHTS_UPDATED.queue_name
    assert copies.parked == []


async def test_the_scheduled_evaluation_runs_every_account_and_sleeps_as_long_as_the_worker_says() -> None:
    fake = FakeWorker()
    svc = service("rules_engine")
    deps = await started(svc, handlers.Deps(worker=fake))  # type: ignore[arg-type]
    job = asyncio.create_task(handlers.evaluate_periodically(deps, 300.0))
    try:
        for _ in range(3):
            await asyncio.wait_for(fake.ran.wait(), 5)
            fake.ran.clear()
    finally:
        job.cancel()
    assert fake.calls[:4] == [("run", None, {"trigger": "schedule"}), ("next_wake", None, {"interval": 300.0})] * 2


def test_the_pruning_of_skipped_decisions_is_a_background_job_even_without_scheduled_evaluation() -> None:
    svc = service("rules_engine")
    handlers.register(svc, lambda: handlers.Deps(worker=FakeWorker()), interval_seconds=0)  # type: ignore[arg-type]
    assert [name for name, _ in svc._background] == ["prune_skipped_decisions"]
    svc = service("rules_engine")
    handlers.register(svc, lambda: handlers.Deps(worker=FakeWorker()), interval_seconds=900)  # type: ignore[arg-type]
    assert [name for name, _ in svc._background] == ["scheduled_evaluation", "prune_skipped_decisions"]


async def test_the_pruning_goes_on_after_a_database_error() -> None:
    fake = FakeWorker()
    fake.fail["prune_decisions"] = ConnectionRefusedError("database down")
    svc = service("rules_engine")
    deps = await started(svc, handlers.Deps(worker=fake))  # type: ignore[arg-type]
    job = asyncio.create_task(handlers.prune_periodically(deps, 0.01))
    try:
        await asyncio.wait_for(fake.pruned.wait(), 5)  # the first attempt fails (logged) ...
        fake.pruned.clear()
        del fake.fail["prune_decisions"]
        await asyncio.wait_for(fake.pruned.wait(), 5)  # ... and the job tries again at the next interval
        assert not job.done()
    finally:
        job.cancel()
    assert fake.methods()[:2] == ["prune_decisions", "prune_decisions"]
