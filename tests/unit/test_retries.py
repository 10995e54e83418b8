"""The retry policy, failure classification, circuit breakers and incidents (pure logic, fake clocks)."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest
from pydantic import ValidationError

from contracts.alerts import AlertRaised
from shared.graph.errors import GraphConnectionError, InvalidRequestError, ThrottledError
from shared.incidents import Incidents
from shared.messaging import PermanentError, RetryLater
from shared.retries import (
    CircuitBreaker,
    DependencyUnavailable,
    RetryPolicy,
    is_database_unavailable,
    is_transient,
)
from shared.settings import BrokerSettings
from shared.topology import Consumer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_from_one_second_to_the_ceiling_with_jitter() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=900.0)
    for attempt, ceiling in ((1, 1), (2, 2), (3, 4), (10, 512), (11, 900), (200, 900)):
        waits = [policy.backoff(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (attempt, min(waits), max(waits))
        assert len(set(waits)) > 1  # jittered: waiters spread out


def test_the_horizon_counts_from_the_first_failure() -> None:
    policy = RetryPolicy(horizon_seconds=24 * 3600)
    assert not policy.expired(None)
    assert not policy.expired(1000.0, now=1000.0 + 23 * 3600)
    assert policy.expired(1000.0, now=1000.0 + 24 * 3600)


def test_the_policy_comes_from_the_settings_with_a_24_hour_default() -> None:
    policy = RetryPolicy.from_settings(BrokerSettings())
    assert policy.horizon_seconds == 24 * 3600
    assert (policy.backoff_base, policy.backoff_max, policy.breaker_probe_max) == (1.0, 900.0, 60.0)
    scaled = RetryPolicy.from_settings(BrokerSettings(RETRY_HORIZON_HOURS=0.5, RETRY_BACKOFF_MAX_SECONDS=60))
    assert (scaled.horizon_seconds, scaled.backoff_max) == (1800, 60)
    with pytest.raises(ValidationError):
        BrokerSettings(RETRY_HORIZON_HOURS=0)


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(), TimeoutError(), asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
    asyncpg.exceptions.CannotConnectNowError("starting"), asyncpg.exceptions.TooManyConnectionsError("full"),
    asyncpg.exceptions.SerializationError("retry"), aiohttp.ServerDisconnectedError(),
    GraphConnectionError("reset"), ThrottledError("slow down"), DependencyUnavailable("the CRM", 3),
])
def test_dependency_failures_are_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [
    RuntimeError("bug"), KeyError("x"), PermanentError("no"), InvalidRequestError("bad"),
    asyncpg.exceptions.UniqueViolationError("dup"), ValueError("nope"),
])
def test_bugs_and_refusals_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_only_an_unreachable_database_counts_against_its_breaker() -> None:
    assert is_database_unavailable(ConnectionRefusedError())
    assert is_database_unavailable(asyncpg.exceptions.ConnectionDoesNotExistError("gone"))
    assert not is_database_unavailable(aiohttp.ClientConnectorError(None, OSError()))  # type: ignore[arg-type]
    assert not is_database_unavailable(asyncpg.exceptions.UniqueViolationError("dup"))
    assert not is_database_unavailable(RetryLater("x", 1))


def test_breaker_opens_after_failures_in_a_row_and_lets_one_probe_through_at_a_time() -> None:
    clock = Clock()
    opened: list[str] = []
    closed: list[str] = []
    breaker = CircuitBreaker("crm:webhook", failures_to_open=3, probe_max=8.0, clock=clock,
                             on_open=lambda b: opened.append(b.name), on_close=lambda b: closed.append(b.name))
    breaker.failed("HTTP 503")
    breaker.succeeded()  # a success in between: the count starts again
    for _ in range(2):
        breaker.failed("HTTP 503")
    assert breaker.allow()
    breaker.failed("HTTP 503")
    assert opened == ["crm:webhook"]
    assert not breaker.allow()
    breaker.hold("lead-1")
    breaker.hold("lead-1")
    breaker.hold("lead-2")
    assert breaker.waiting == 2
    assert all(1.0 <= breaker.wait_seconds() <= 1.3 for _ in range(100))  # until the probe, jittered

    probes = []
    for _ in range(12):  # the CRM stays down: probe waits double to the ceiling
        clock.now += 100.0
        assert breaker.allow()  # the one probe
        assert not breaker.allow()  # everyone else waits for it
        probes.append(breaker._probe_wait)
        breaker.failed("HTTP 503")
    assert probes[:6] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert opened == ["crm:webhook"], "one incident, one opening"

    clock.now += 100.0
    assert breaker.allow()
    breaker.succeeded()
    assert closed == ["crm:webhook"]
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.waiting == 0


def test_a_ten_minute_outage_costs_a_handful_of_probes_per_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker("db", failures_to_open=5, probe_max=60.0, clock=clock)
    calls = 0
    for _second in range(600):  # one message a second for 10 minutes... every one asks
        if breaker.allow():
            calls += 1
            breaker.failed("down")
        clock.now += 1.0
    assert calls <= 5 + 16, calls


async def test_an_incident_alerts_once_when_it_opens_reminds_hourly_and_once_when_it_resolves() -> None:
    clock = Clock()
    wall = Clock()
    wall.now = 1_764_753_120.0  # 09:12 UTC
    sent: list[AlertRaised] = []

    async def publish(alert: AlertRaised) -> None:
        sent.append(alert)

    incidents = Incidents("crm_sync", reminder_seconds=3600, clock=clock, wall=wall)
    breaker = CircuitBreaker("crm:webhook", failures_to_open=1, clock=clock, wall=wall,
                             on_open=lambda b: incidents.breaker_opened(b, label="the CRM (webhook)", what="leads",
                                                                         fix="Check CRM_WEBHOOK_URL"),
                             on_close=lambda b: incidents.breaker_closed(b, label="the CRM (webhook)", what="leads"))
    breaker.failed("HTTP 503")
    for lead in range(37):
        breaker.hold(f"lead-{lead}")
    for _ in range(3):
        breaker.failed("HTTP 503")  # still the same incident
    await incidents.tick(publish)
    for _minute in range(150):  # 2.5 hours
        clock.now += 60
        await incidents.tick(publish)
    breaker.allow()
    clock.now += 3600
    assert breaker.allow()
    breaker.succeeded()
    await incidents.tick(publish)
    await incidents.tick(publish)

    states = [a.incident.state for a in sent if a.incident]
    assert states == ["opened", "reminder", "reminder", "resolved"]
    assert [a.code for a in sent] == ["dependency_unavailable_opened", "dependency_unavailable_reminder",
                                      "dependency_unavailable_reminder", "dependency_unavailable_resolved"]
    assert "37 leads waiting for the CRM (webhook) since 09:12 UTC" in sent[1].summary
    assert sent[1].incident is not None
    assert sent[1].incident.waiting == 37
    assert all(a.fix == "Check CRM_WEBHOOK_URL" for a in sent[:3])
    assert "answers again" in sent[3].summary


async def test_parked_messages_are_one_incident_resolved_when_the_queue_is_empty() -> None:
    clock = Clock()
    sent: list[AlertRaised] = []
    parked = {"n": 3}

    async def publish(alert: AlertRaised) -> None:
        sent.append(alert)

    async def count(_queue: str) -> int:
        return parked["n"]

    incidents = Incidents("lead_fetcher", reminder_seconds=3600, clock=clock)
    consumer = Consumer("lead_fetcher", "leadgen_received", ())
    for _ in range(3):
        incidents.parked(consumer, "permanent: lead 1 cannot be read")
    await incidents.tick(publish, count)
    assert len(sent) == 1
    assert sent[0].summary.startswith("3 lead reads parked by lead_fetcher")
    assert "leadwire parked list --queue lead_fetcher/leadgen_received" in (sent[0].fix or "")
    assert sent[0].incident is not None
    assert sent[0].incident.waiting == 3
    parked["n"] = 0  # replayed
    await incidents.tick(publish, count)
    assert len(sent) == 1, "a count read right after parking may be stale: no resolution before settle_seconds"
    clock.now += incidents.settle_seconds
    await incidents.tick(publish, count)
    assert [a.incident.state for a in sent if a.incident] == ["opened", "resolved"]


async def test_an_alert_the_broker_did_not_take_is_sent_on_the_next_tick() -> None:
    sent: list[AlertRaised] = []
    fail = {"n": 1}

    async def publish(alert: AlertRaised) -> None:
        if fail["n"]:
            fail["n"] -= 1
            raise ConnectionError("broker down")
        sent.append(alert)

    incidents = Incidents("crm_sync")
    incidents.open("database", "unavailable", summary=lambda: "down", fix="DATABASE_URL")
    await incidents.tick(publish)
    assert sent == []
    await incidents.tick(publish)
    assert len(sent) == 1
    await asyncio.sleep(0)


async def test_a_reason_quoting_a_nul_or_a_surrogate_does_not_poison_the_alert() -> None:
    sent: list[AlertRaised] = []

    async def publish(alert: AlertRaised) -> None:
        sent.append(alert)

    incidents = Incidents("campaign_executor")
    incidents.parked(Consumer("campaign_executor", "campaign_command", ()),
                     "undecodable message: invalid character: found `\x00` at 36, `\udc00`")
    await incidents.tick(publish)
    assert "\x00" not in sent[0].summary
    assert "\udc00" not in sent[0].summary
    AlertRaised.model_validate_json(sent[0].model_dump_json())  # travels and decodes
