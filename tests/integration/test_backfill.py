"""Backfill: leads whose webhook never came are captured from the forms' bulk read, once."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from pydantic import SecretStr

from services.lead_fetcher.cli import backfill_once
from services.lead_fetcher.settings import LeadFetcherSettings
from shared.settings import Settings
from tests.fixtures.infra import eventually
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_lead_fetcher_helpers import LeadEnv, lead_env_fixture


@pytest.fixture
async def env(settings: Settings, sandbox: SandboxHandle, db: asyncpg.Pool, broker: RabbitBroker,
              amqp: aio_pika.abc.AbstractChannel) -> AsyncIterator[LeadEnv]:
    async for lead_env in lead_env_fixture(settings, sandbox, db, broker, amqp):
        yield lead_env


def _settings(env: LeadEnv, **overrides: float) -> Settings:
    return env.settings.replace(LeadFetcherSettings(**{"backfill_interval_seconds": 0, **overrides}))


async def test_backfill_captures_dropped_leads_once(env: LeadEnv) -> None:
    await env.start()  # relays the outbox
    ids = await env.new_leads(5)  # created at Meta, webhook never delivered

    first = await backfill_once(_settings(env))

    rows = await env.rows(ids)
    assert set(rows) == set(ids)
    assert {r["source"] for r in rows.values()} == {"backfill"}
    assert all(r["fields"].get("email") for r in rows.values())  # same fields as the single read
    assert first.leads_new >= 5  # plus the sandbox's seeded leads of the last 14 days
    assert first.forms_scanned == len(env.form_ids)
    await eventually(lambda: env.all_published(ids), what="LeadCaptured relayed")
    assert len(await env.captured.of("leadgen_id", set(ids))) == 5
    marks = await env.db.fetch("select form_id, scanned_to from lead_form_watermarks where form_id = any($1)",
                               env.form_ids)
    assert len(marks) == len(env.form_ids)

    second = await backfill_once(_settings(env))

    assert second.leads_new == 0
    assert second.leads_listed >= 5  # the overlap re-reads recent leads; nothing new is stored
    await eventually(lambda: env.all_published(ids), what="nothing pending")
    assert len(await env.captured.of("leadgen_id", set(ids))) == 5


async def test_backfill_scans_from_the_watermark_minus_the_overlap(env: LeadEnv) -> None:
    form_id = env.form_ids[0]
    now = time.time()
    old, in_overlap, fresh = (await env.new_leads(1, form_id=form_id, created_time=now - 7200),
                              await env.new_leads(1, form_id=form_id, created_time=now - 3900),
                              await env.new_leads(1, form_id=form_id, created_time=now - 60))
    watermark = datetime.now(UTC) - timedelta(hours=1)
    await env.db.execute(
        "insert into lead_form_watermarks (form_id, page_id, scanned_to) values ($1, $2, $3)",
        form_id, env.page_id, watermark)

    await backfill_once(_settings(env, backfill_overlap_seconds=600))

    assert set(await env.rows(old + in_overlap + fresh)) == {*in_overlap, *fresh}
    scanned_to = await env.db.fetchval("select scanned_to from lead_form_watermarks where form_id = $1", form_id)
    assert scanned_to > watermark + timedelta(minutes=59)


async def test_explicit_since_reaches_behind_the_watermark(env: LeadEnv) -> None:
    form_id = env.form_ids[0]
    [old] = await env.new_leads(1, form_id=form_id, created_time=time.time() - 3 * 86400)
    await env.db.execute(
        "insert into lead_form_watermarks (form_id, page_id, scanned_to) values ($1, $2, now())",
        form_id, env.page_id)

    await backfill_once(_settings(env))
    assert not await env.rows([old])

    await backfill_once(_settings(env), since=datetime.now(UTC) - timedelta(days=4))
    assert set(await env.rows([old])) == {old}


async def test_background_backfill_captures_a_lost_lead_within_one_interval(env: LeadEnv) -> None:
    await env.start(backfill_interval_seconds=1)
    await eventually(lambda: _watermarked(env), what="the first backfill run")
    [lead_id] = await env.new_leads(1)

    await eventually(lambda: env.rows([lead_id]), timeout=5, what="the lost lead captured by the next run")
    await eventually(lambda: env.all_published([lead_id]), what="LeadCaptured relayed")
    assert len(await env.captured.of("leadgen_id", {lead_id})) == 1


async def _watermarked(env: LeadEnv) -> bool:
    count = await env.db.fetchval("select count(*) from lead_form_watermarks where form_id = any($1)",
                                  env.form_ids)
    return count == len(env.form_ids)


async def test_webhook_after_backfill_makes_no_graph_call_and_no_second_capture(
    env: LeadEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.lead_fetcher.worker")
    await env.start()
    [lead_id] = await env.new_leads(1)
    await backfill_once(_settings(env))
    await eventually(lambda: env.all_published([lead_id]), what="LeadCaptured relayed")
    await env.sandbox.reset_calls()

    await env.send(lead_id)  # the late webhook

    await eventually(lambda: _handled(caplog, lead_id), what="the late webhook handled")
    assert (await env.sandbox.calls())["by_path"].get(f"GET /{lead_id}") is None
    assert len(await env.captured.of("leadgen_id", {lead_id})) == 1


async def _handled(caplog: pytest.LogCaptureFixture, lead_id: str) -> bool:
    return any(getattr(r, "leadgen_id", None) == lead_id and r.getMessage().startswith("lead already stored")
               for r in caplog.records)


async def test_without_a_page_token_in_the_settings_the_backfill_reads_the_pages_own(env: LeadEnv) -> None:
    """Meta lists a Page's forms only with that Page's token; with several Pages, none is configured: the backfill
    reads each Page's token with META_ACCESS_TOKEN (`GET /{page}?fields=access_token`) and lists its forms."""
    await env.start()
    ids = await env.new_leads(2)
    meta = env.settings.meta.model_copy(update={"page_access_token": SecretStr("")})
    calls_before = await env.sandbox.calls()

    report = await backfill_once(_settings(env).replace(meta))

    assert set(await env.rows(ids)) == set(ids)
    assert env.page_id not in report.failed_pages
    assert report.forms_scanned == len(env.form_ids)
    by_path = (await env.sandbox.calls())["by_path"]
    assert by_path.get(f"GET /{env.page_id}", 0) > calls_before["by_path"].get(f"GET /{env.page_id}", 0)
