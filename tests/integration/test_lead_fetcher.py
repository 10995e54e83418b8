"""The lead fetcher against the real broker and database and the Graph sandbox over HTTP."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from prometheus_client import REGISTRY

from contracts.leads import captured_message_id
from services.lead_fetcher.logic import LEAD_FIELDS, Lead, parse_lead
from services.lead_fetcher.settings import LeadFetcherSettings
from services.lead_fetcher.worker import Worker
from shared.settings import Settings
from shared.topology import H_REASON
from tests.fixtures.infra import drain, eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_lead_fetcher_helpers import (
    LeadEnv,
    graph_http_calls,
    lead_env_fixture,
    leadgen_message,
    purge,
)

HANDLER_LOGGER = "services.lead_fetcher.worker"


@pytest.fixture
async def env(settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker,
              amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[LeadEnv]:
    async for lead_env in lead_env_fixture(settings, sandbox, db, broker, amqp):
        yield lead_env


def _outcomes(caplog: pytest.LogCaptureFixture, leadgen_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == HANDLER_LOGGER and getattr(r, "leadgen_id", None) == leadgen_id]


async def _lead_reads(env: LeadEnv, leadgen_id: str) -> int:
    return int((await env.sandbox.calls())["by_path"].get(f"GET /{leadgen_id}", 0))


async def test_lead_is_stored_with_flattened_answers_and_captured_once(env: LeadEnv) -> None:
    await env.start()
    [lead_id] = await env.new_leads(1)

    message = await env.send(lead_id)

    rows = await eventually(lambda: env.rows([lead_id]), what="the lead row")
    row = rows[lead_id]
    status, _, meta = await env.sandbox.graph("GET", lead_id, fields=LEAD_FIELDS)
    assert status == 200
    assert row["fields"] == {f["name"]: f["values"][0] for f in meta["field_data"]}
    assert row["fields"]["email"]  # the answers are really there
    assert row["created_time"] == datetime.strptime(meta["created_time"], "%Y-%m-%dT%H:%M:%S%z")
    assert (row["page_id"], row["form_id"], row["ad_id"], row["source"]) == (
        env.page_id, meta["form_id"], meta.get("ad_id"), "webhook")
    assert row["raw"] == meta
    assert row["custom_disclaimer_responses"] == meta["custom_disclaimer_responses"]

    await eventually(lambda: env.all_published([lead_id]), what="LeadCaptured relayed")
    captured = await env.captured.of("leadgen_id", {lead_id})
    assert len(captured) == 1
    body = captured[0]
    assert body["type"] == "LeadCaptured"
    assert body["causation_id"] == str(message.message_id)
    assert body["correlation_id"] == str(message.correlation_id)
    assert body["payload"]["form_id"] == meta["form_id"]
    assert row["fields"]["email"] not in str(body)  # no PII on the broker


async def test_duplicate_deliveries_give_one_row_and_one_lead_captured(
    env: LeadEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HANDLER_LOGGER)
    await env.start()
    [lead_id] = await env.new_leads(1)
    same = leadgen_message(lead_id, env.page_id)

    for _ in range(3):  # Meta redelivers the same webhook: same message id
        await env.publish(same)
    for _ in range(3):  # or the same lead arrives in different messages (another delivery, a replay)
        await env.send(lead_id, message_id=uuid.uuid4())

    await eventually(lambda: _done(caplog, lead_id, 6), what="all six messages handled")
    await eventually(lambda: env.all_published([lead_id]), what="LeadCaptured relayed")
    assert len(await env.rows([lead_id])) == 1
    assert len(await env.captured.of("leadgen_id", {lead_id})) == 1
    assert sum(m == "lead captured" for m in _outcomes(caplog, lead_id)) == 1

    # A late duplicate: no Graph call at all, and still no second LeadCaptured.
    reads = await _lead_reads(env, lead_id)
    skipped = _metric("leadwire_lead_duplicates_skipped_total", {"stage": "stored"})
    await env.send(lead_id, message_id=uuid.uuid4())
    await eventually(lambda: _done(caplog, lead_id, 7), what="the late duplicate handled")
    assert await _lead_reads(env, lead_id) == reads
    assert _metric("leadwire_lead_duplicates_skipped_total", {"stage": "stored"}) == skipped + 1
    assert len(await env.captured.of("leadgen_id", {lead_id})) == 1


async def _done(caplog: pytest.LogCaptureFixture, lead_id: str, n: int) -> bool:
    return len(_outcomes(caplog, lead_id)) >= n


async def test_concurrent_leads_are_read_in_batch_calls(env: LeadEnv) -> None:
    await env.start(fetch_batch_window_ms=100)
    ids = await env.new_leads(40)
    before = graph_http_calls()
    captured_before = _metric("leadwire_leads_captured_total", {"source": "webhook"})
    stores_before = _metric("leadwire_lead_fetcher_batch_size_count", {"operation": "store"})
    reads_before = _metric("leadwire_lead_reads_total", {"outcome": "ok"})

    await asyncio.gather(*(env.send(i) for i in ids))

    await eventually(lambda: _count_rows(env, ids, 40), what="all 40 leads stored")
    http_calls = graph_http_calls() - before
    log = await env.sandbox.calls()
    lead_reads = [r for r in log["requests"] if r["path"].lstrip("/") in set(ids)]
    assert len(lead_reads) == 40  # every lead read once, each counted against the Page's leadgen quota
    assert sum(r["batch"] for r in lead_reads) >= 20
    assert http_calls <= 20, f"{http_calls} HTTP calls for 40 leads"
    await eventually(lambda: env.all_published(ids), what="40 LeadCaptured relayed")
    assert len(await env.captured.of("leadgen_id", set(ids))) == 40
    # The lead fetcher's own metrics: every lead counted once; the inserts shared transactions.
    assert _metric("leadwire_leads_captured_total", {"source": "webhook"}) - captured_before == 40
    assert _metric("leadwire_lead_reads_total", {"outcome": "ok"}) - reads_before == 40
    assert _metric("leadwire_lead_fetcher_batch_size_count", {"operation": "store"}) - stores_before < 40


async def _count_rows(env: LeadEnv, ids: list[str], n: int) -> bool:
    return len(await env.rows(ids)) == n


async def test_throttled_reads_wait_in_the_queue_not_in_the_worker(
    env: LeadEnv, amqp: aio_pika.abc.AbstractChannel, caplog: pytest.LogCaptureFixture
) -> None:
    window = 4.0
    await env.sandbox.limits(buc={"leadgen": {"budget": 3, "window_seconds": window}})
    await env.start()
    ids = await env.new_leads(6)
    await drain(amqp, env.queue.parking_queue_name)

    await asyncio.gather(*(env.send(i) for i in ids))
    await eventually(lambda: _throttled(env), what="Meta's 80005 leadgen throttle")
    # While the Page is throttled, an unrelated message (another Page, an unknown lead) is handled at once.
    other = await env.send("999000111222", page_id="999000111")
    parked = await eventually(lambda: _parked(amqp, env, str(other.message_id)), timeout=window / 2,
                              what="the unrelated message handled while the Page is throttled")
    assert len(await env.rows(ids)) < 6, "the throttled leads should still be waiting"
    assert "code=100" in parked.headers[H_REASON]

    await eventually(lambda: _count_rows(env, ids, 6), timeout=8 * window, what="throttled leads stored")
    retries = [r for r in caplog.records if r.name == "shared.messaging" and "read throttled" in r.getMessage()]
    assert retries, "throttled reads should go back to the queue as delayed retries"
    await eventually(lambda: env.all_published(ids), what="LeadCaptured relayed")
    assert len(await env.captured.of("leadgen_id", set(ids))) == 6


async def _throttled(env: LeadEnv) -> bool:
    return (await env.sandbox.calls())["throttled"] > 0


async def _parked(amqp: aio_pika.abc.AbstractChannel, env: LeadEnv, message_id: str) -> Any:
    for message in await drain(amqp, env.queue.parking_queue_name):
        if message.message_id == message_id:
            return message
    return None


async def test_unknown_lead_is_parked_with_metas_error(
    env: LeadEnv, amqp: aio_pika.abc.AbstractChannel
) -> None:
    await env.start()
    await drain(amqp, env.queue.parking_queue_name)

    message = await env.send("777000000000001")

    parked = await eventually(lambda: _parked(amqp, env, str(message.message_id)), what="the message parked")
    reason = parked.headers[H_REASON]
    assert reason.startswith("permanent: lead 777000000000001 cannot be read")
    assert "code=100" in reason
    assert "subcode=33" in reason
    assert "fbtrace_id=" in reason
    assert "does not exist" in reason
    assert env.sandbox.token not in reason
    assert not await env.rows(["777000000000001"])


async def _one_access_alert(env: LeadEnv, caplog: pytest.LogCaptureFixture, ids: list[str]) -> dict[str, Any]:
    """Once every lead was refused: the one `lead_access_denied` alert of the Page (its payload), without the token."""
    await eventually(lambda: _all_refused(caplog, ids), what="every lead refused at least once")
    await eventually(lambda: _alerts_relayed(env), what="alerts relayed")
    alerts = await env.alerts.of("subject", {env.page_id})
    assert len(alerts) == 1, alerts
    assert env.sandbox.token not in str(alerts[0])
    alert: dict[str, Any] = alerts[0]["payload"]
    assert alert["code"] == "lead_access_denied"
    return alert


async def test_permission_error_raises_one_alert_and_leads_flow_once_fixed(
    env: LeadEnv, caplog: pytest.LogCaptureFixture
) -> None:
    await env.sandbox.faults(
        error_rate=1.0, error_status=403, path_regex=r"^/\d+$",
        error={"code": 200, "message": "(#200) Requires leads_retrieval permission to access leads",
               "type": "OAuthException", "is_transient": False},
    )
    await env.start()
    ids = await env.new_leads(8)

    await asyncio.gather(*(env.send(i) for i in ids))

    alert = await _one_access_alert(env, caplog, ids)
    assert alert["service"] == "lead_fetcher"
    assert "leads_retrieval" in alert["fix"]
    assert not await env.rows(ids)

    await env.sandbox.faults(error_rate=0.0)  # the customer fixed the permission
    await eventually(lambda: _count_rows(env, ids, 8), timeout=15, what="leads fetched once access is back")
    assert len(await env.alerts.of("subject", {env.page_id})) == 1


async def test_revoked_leads_retrieval_holds_capture_with_one_alert_until_granted_back(
    env: LeadEnv, caplog: pytest.LogCaptureFixture, amqp: aio_pika.abc.AbstractChannel
) -> None:
    """The customer takes leads_retrieval away from the token: the sandbox refuses lead reads as Meta does (#200),
    not through a fault. No lead is lost: the reads wait in the queue as access errors (no attempt used, nothing
    parked), one alert says to grant leads_retrieval, and once it is granted back every waiting lead is captured
    once."""
    await env.start()
    await drain(amqp, env.queue.parking_queue_name)
    ids = await env.new_leads(3)
    await env.sandbox.set_token(revoke=["leads_retrieval"])

    messages = await asyncio.gather(*(env.send(i) for i in ids))

    alert = await _one_access_alert(env, caplog, ids)
    assert "code=200" in alert["summary"]
    assert "leads_retrieval" in alert["fix"]
    refused = [r.getMessage() for r in caplog.records if "access refused" in r.getMessage()]
    assert all("leads_retrieval" in m for m in refused), refused[:1]  # Meta's own words reach the log
    assert not await env.rows(ids)

    await env.sandbox.set_token(grant=["leads_retrieval"])  # the customer granted it back
    await eventually(lambda: _count_rows(env, ids, 3), timeout=15, what="leads captured once access is back")
    await eventually(lambda: env.all_published(ids), what="their LeadCaptured published")
    for lead_id in ids:
        assert len(await env.captured.of("leadgen_id", {lead_id})) == 1
    assert len(await env.alerts.of("subject", {env.page_id})) == 1
    parked = {m.message_id for m in await drain(amqp, env.queue.parking_queue_name)}
    assert not parked & {str(m.message_id) for m in messages}


async def _all_refused(caplog: pytest.LogCaptureFixture, ids: list[str]) -> bool:
    text = " ".join(r.getMessage() for r in caplog.records if "access refused" in r.getMessage())
    return all(i in text for i in ids)


async def _alerts_relayed(env: LeadEnv) -> bool:
    pending = await env.db.fetchval(
        "select count(*) from outbox where message_type = 'AlertRaised' and published_at is null")
    return pending == 0


async def test_no_lead_pii_in_any_log_line(env: LeadEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await env.start()
    ids = await env.new_leads(5)
    await asyncio.gather(*(env.send(i) for i in ids))
    await env.send(ids[0], message_id=uuid.uuid4())  # a duplicate path too
    await eventually(lambda: _count_rows(env, ids, 5), what="leads stored")
    await eventually(lambda: env.all_published(ids), what="LeadCaptured relayed")

    pii: set[str] = set()
    for row in (await env.rows(ids)).values():
        answers = row["fields"]
        pii |= {answers["full_name"], answers["email"], answers["phone_number"], answers["full_name"].split()[-1]}
    lines = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert any(i in line for i in ids for line in lines)  # the handling was logged, by id
    leaks = [value for line in lines for value in pii if value in line]
    assert not leaks, f"{len(leaks)} log lines carry lead answers"


async def test_a_lead_that_breaks_the_group_insert_fails_alone(db: asyncpg.Pool) -> None:
    """One lead the database refuses (a NUL in an answer: jsonb cannot hold it) is redone on its own; the other
    leads of its group are stored with their LeadCaptured, and a second copy in the group is not new."""
    ids = [str(random.randint(10**14, 10**15 - 1)) for _ in range(3)]
    await purge(db, ids)
    leads = [_lead(ids[0]), _lead(ids[1], answer="bad \u0000 answer"), _lead(ids[2])]
    capture = Worker(db, reader=None, settings=LeadFetcherSettings())  # type: ignore[arg-type]
    messages = [leadgen_message(i, "1111") for i in ids]

    outcomes = await capture.store_group([*zip(leads, messages, strict=True), (leads[2], messages[2])])

    assert outcomes[0] is True
    assert isinstance(outcomes[1], asyncpg.PostgresError)
    assert outcomes[2] is True
    assert outcomes[3] is False  # the same lead twice in one group: stored once
    rows = await db.fetch("select leadgen_id from leads where leadgen_id = any($1::text[])", ids)
    assert {r["leadgen_id"] for r in rows} == {ids[0], ids[2]}
    emitted = await db.fetch("select message_id from outbox where message_id = any($1::uuid[])",
                             [captured_message_id(i) for i in ids])
    assert {r["message_id"] for r in emitted} == {captured_message_id(ids[0]), captured_message_id(ids[2])}
    assert await capture.lookup_group([ids[0], ids[1]]) == [True, None]


def _lead(leadgen_id: str, answer: str = "yes") -> Lead:
    return parse_lead({"id": leadgen_id, "created_time": "2026-11-20T10:00:00+0000", "form_id": "2222",
                       "field_data": [{"name": "were_you_injured", "values": [answer]}]},
                      page_id="1111", source="webhook")


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
