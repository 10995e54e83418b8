"""The leadgen quota nears its limit, then recovers: lead reads must flow again, with one alert meanwhile.

Against the real broker and database and the Graph sandbox behaving as Meta does: the client paces by Meta's
documented 24 h leadgen window (not the sandbox's), and the sandbox sends only Meta's own headers (no exact-seconds
hint). Before the probes, the pacer projected a 24-hour wait from its own call log and never asked Meta again.
The held capture is one incident: one alert when it opens, one when lead reads flow again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from shared.graph.usage import DEFAULT_WINDOWS
from shared.settings import Settings
from tests.fixtures.infra import drain, eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_lead_fetcher_helpers import LeadEnv, lead_env_fixture

PROBE_SECONDS = 3.0  # META_USAGE_PROBE_SECONDS ("a few minutes" in production)
HELD_ALERT_SECONDS = 3.0  # LEAD_HELD_ALERT_SECONDS (300 in production)
BUDGET = 40  # the Page's leadgen calls per window at the sandbox


@pytest.fixture
async def env(settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker,
              amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[LeadEnv]:
    async for lead_env in lead_env_fixture(settings, sandbox, db, broker, amqp):
        meta = lead_env.settings.meta.model_copy(update={"usage_probe_seconds": PROBE_SECONDS})
        lead_env.settings = lead_env.settings.replace(meta)
        yield lead_env


async def _stored(env: LeadEnv, ids: list[str]) -> int:
    return len(await env.rows(ids))


async def _held_alerts(env: LeadEnv, state: str = "opened") -> list[dict[str, object]]:
    subject = f"meta_lead_reads:{env.page_id}"
    return [b for b in await env.alerts.of("subject", {subject})
            if b["payload"]["code"] == f"lead_capture_held_{state}"]


async def test_leads_flow_again_after_the_leadgen_quota_recovers_with_one_alert(
    env: LeadEnv, amqp: aio_pika.abc.AbstractChannel
) -> None:
    # A window far longer than the test: usage only drops when Meta's quota grows (4800 x the Page's leads).
    await env.sandbox.limits(buc={"leadgen": {"budget": BUDGET, "window_seconds": 3600}}, regain_header=False)
    service = await env.start(held_alert_seconds=HELD_ALERT_SECONDS, fetch_batch_window_ms=50)
    service.graph_client.usage.windows = dict(DEFAULT_WINDOWS)  # Meta's windows: the leadgen BUC's is 24 h
    await drain(amqp, env.queue.parking_queue_name)

    # Three quarters of the quota used: these are read at once (one batch call, no usage known yet).
    first = await env.new_leads(30)
    await asyncio.gather(*(env.send(i) for i in first))
    await eventually(lambda: _n(env, first, 30), timeout=60, what="the first 30 leads stored")

    # Near the limit: the pacer's own projection (24 h window) now holds the next leads back.
    held = await env.new_leads(10)
    await asyncio.gather(*(env.send(i) for i in held))
    alerts = await eventually(lambda: _held_alerts(env), timeout=60, what="the lead-capture-held alert")
    assert await _stored(env, held) < len(held), "leads should have been held back near the limit"

    # Meta's quota grows (or the window slides): usage drops. Nothing tells the client but Meta's headers.
    await env.sandbox.limits(buc={"leadgen": {"budget": 100_000}})
    await eventually(lambda: _n(env, held, len(held)), timeout=120, what="the held leads read after usage dropped")
    await eventually(lambda: env.all_published(held), timeout=30, what="their LeadCaptured relayed")

    # One alert opened the episode, saying why and when it should end; one says it ended.
    resolved = await eventually(lambda: _held_alerts(env, "resolved"), timeout=60, what="the resolved alert")
    assert len(await _held_alerts(env)) == 1
    assert len(resolved) == 1
    assert "resumed" in str(resolved[0]["payload"]["summary"])  # type: ignore[index]
    payload = alerts[0]["payload"]
    assert isinstance(payload, dict)
    assert payload["severity"] == "warning"
    assert f"buc:{env.page_id}:leadgen" in str(payload["summary"])
    assert "expected to resume around" in str(payload["summary"])
    assert "leadwire doctor" in str(payload["fix"])
    assert env.sandbox.token not in str(payload)
    # Nothing was parked; the sandbox never had to throttle: the client stayed under Meta's limit.
    assert not list(await drain(amqp, env.queue.parking_queue_name))
    assert (await env.sandbox.calls())["throttled"] == 0


async def _n(env: LeadEnv, ids: list[str], n: int) -> bool:
    return await _stored(env, ids) >= n
