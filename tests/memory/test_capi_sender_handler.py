"""capi_sender's ConversionRequested batch handler, in memory: no RabbitMQ, no PostgreSQL, no Conversions API.

The handler reads its queue through `shared.bulk_consumer` (outside FastStream), so it gets its decoded messages here
as its `BulkConsumer` hands them over (`support.batch`). It is thin: the whole batch goes to the worker in one call
(so one consumer batch can fill one Meta request); an outcome (sent, or already sent) acks its message, an exception
is that message's own (parked or retried by the consumer); a duplicate is logged by ids, never with the person's
data. The worker here is a fake of our own port (`Worker.process_many`); the worker itself is tested against the
real database and the Graph sandbox in tests/integration/test_capi_sender.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest

from contracts.conversions import ConversionRequested, ConversionUser
from contracts.messages import ConversionRequestedMessage
from services.capi_sender import handlers
from services.capi_sender.logic import SendOutcome
from shared.messaging import PermanentError, RetryLater
from shared.topology import consumer
from tests.memory.support import batch, service, started

CONVERSIONS = consumer("capi_sender", "conversion_requested")
EMAIL = "mary.smith@example.com"


class FakeSender:
    """Our port `Worker.process_many`: records each call's messages; `outcomes` maps an event id to what its
    message ends with (default: sent)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.outcomes: dict[str, SendOutcome | BaseException] = {}

    async def process_many(self, messages: Sequence[ConversionRequestedMessage]) -> list[SendOutcome | BaseException]:
        self.calls.append([m.payload.event_id or "" for m in messages])
        return [self.outcomes.get(m.payload.event_id or "", SendOutcome.SENT) for m in messages]

    async def flush_on_stop(self) -> None:
        return None


def conversion(event_id: str) -> ConversionRequestedMessage:
    return ConversionRequestedMessage.new(ConversionRequested(
        event_name="QualifiedLead", event_time=1_795_208_645, event_id=event_id,
        user=ConversionUser(lead_id="1234567890123456", email=EMAIL, first_name="Mary"),
    ))


@pytest.fixture
async def capi_sender() -> tuple[Any, FakeSender]:
    """A capi_sender service whose handler uses a fake worker (never started: no broker, no jobs running)."""
    svc = service("capi_sender", uses_database=True)
    fake = FakeSender()
    deps = await started(svc, handlers.Deps(sender=fake, pool=None))  # type: ignore[arg-type]
    handlers.register(svc, deps, CONVERSIONS)
    return svc, fake


async def test_the_whole_batch_goes_to_the_worker_in_one_call_and_sent_ones_are_acked(capi_sender: Any) -> None:
    svc, fake = capi_sender
    ids = [f"e{i}" for i in range(7)]

    assert await batch(svc, CONVERSIONS, [conversion(i) for i in ids]) == [None] * 7

    assert fake.calls == [ids], "one call, in the messages' order: one consumer batch can fill one request"


async def test_each_message_ends_with_its_own_outcome(capi_sender: Any) -> None:
    svc, fake = capi_sender
    refused, throttled, down = PermanentError("no user data Meta can match"), RetryLater("pixel throttled", 30), \
        OSError("connection reset")
    fake.outcomes = {"e1": refused, "e2": SendOutcome.DUPLICATE, "e3": throttled, "e4": down}

    results = await batch(svc, CONVERSIONS, [conversion(f"e{i}") for i in range(6)])

    # parked, acked (already sent), retried later, retried with backoff; the others acked
    assert results == [None, refused, None, throttled, down, None]


async def test_an_already_sent_conversion_is_logged_by_its_ids_without_the_person_s_data(
    capi_sender: Any, caplog: pytest.LogCaptureFixture
) -> None:
    svc, fake = capi_sender
    fake.outcomes = {"dup": SendOutcome.DUPLICATE}
    message = conversion("dup")

    with caplog.at_level(logging.INFO, logger="services.capi_sender.handlers"):
        assert await batch(svc, CONVERSIONS, [conversion("new"), message]) == [None, None]

    [record] = [r for r in caplog.records if r.getMessage() == "conversion already sent, not sent again"]
    assert record.__dict__["message_id"] == str(message.message_id)
    assert record.__dict__["event_name"] == "QualifiedLead"
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert EMAIL not in logged
    assert "Mary" not in logged
