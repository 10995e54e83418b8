"""Every attempt re-checks: a retried or interrupted command re-reads the object and decides again with every
guardrail, against what Meta says now; an object changed elsewhere meanwhile abandons the command.

The executor's worker runs here as the consumer runs it (one `execute` per delivery), against real PostgreSQL
and the Graph sandbox over HTTP; a delivery that raises `RetryLater` is simply delivered again later (the test
moves the sandbox's clock an hour ahead instead of waiting). The operator's edits go through the sandbox's
"Ads Manager" (`POST /_sandbox/objects/<id>`), which count toward Meta's 4-budget-changes-per-hour limit.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.commands import CampaignCommand
from contracts.messages import CampaignCommandMessage
from services.campaign_executor.commands import CommandContext
from services.campaign_executor.meta_reads import MetaReads
from services.campaign_executor.worker import Worker
from shared.graph import GraphClient
from shared.messaging import RetryLater
from shared.settings import BudgetGuardrailSettings, MetaSettings
from tests.fixtures.sandbox import SandboxHandle

pytestmark = pytest.mark.timeout(60)

ADSET = "Prospecting - Lookalike"


@pytest.fixture
async def worker(db: asyncpg.Pool, sandbox: SandboxHandle) -> AsyncIterator[Worker]:
    account = sandbox.state["accounts"][sandbox.account_id]
    objects = account["campaigns"] + account["adsets"] + account["ads"]
    # The sandbox hands out the same ids after every reset: forget what earlier tests recorded about them.
    await db.execute("delete from campaign_commands where object_id = any($1::text[])", objects)
    await db.execute("delete from first_seen_budgets where key = any($1::text[])", [*objects, sandbox.account_id])
    await db.execute("delete from meta_budget_blocks where object_id = any($1::text[])", objects)
    meta = MetaSettings(access_token=SecretStr(sandbox.token), app_secret=SecretStr(sandbox.app_secret),
                        graph_url=sandbox.url, api_version=sandbox.version, request_timeout_seconds=10,
                        ad_account_id=[sandbox.account_id])
    async with aiohttp.ClientSession() as http:
        graph = GraphClient(http, meta, registry=CollectorRegistry())
        context = CommandContext(graph, MetaReads(graph, max_wait=2), BudgetGuardrailSettings(_env_file=None))
        yield Worker(db, context, consumer_name=f"test-rechecks-{uuid.uuid4().hex[:8]}")


def command(kind: str, **fields: Any) -> CampaignCommandMessage:
    body = {"kind": kind, "command_id": str(uuid.uuid4()), "requested_by": "test", "reason": "re-check test",
            **fields}
    return CampaignCommandMessage.new(CampaignCommand.model_validate(body))


async def budget(sandbox: SandboxHandle, adset: str) -> int:
    status, _, body = await sandbox.graph("GET", adset, fields="daily_budget")
    assert status == 200, body
    return int(body["daily_budget"])


async def writes_to(sandbox: SandboxHandle, object_id: str) -> list[dict[str, Any]]:
    return [r for r in (await sandbox.calls())["requests"]
            if r["method"] != "GET" and r["path"].strip("/") == object_id]


async def move_clock(sandbox: SandboxHandle, epoch: float) -> None:
    await sandbox.control("POST", "clock", {"now": datetime.fromtimestamp(epoch, UTC).isoformat(), "frozen": True})


async def test_a_change_meta_refused_and_the_operator_overrode_is_abandoned(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """Issue 15's scenario: Meta refuses a raise with 613/1487632 (the operator's own edits in Ads Manager used
    up the hour), the operator sets $20 meanwhile, the retry an hour later abandons the raise: changed_elsewhere,
    the operator's $20 untouched."""
    adset = sandbox.state["adsets_by_name"][ADSET]
    start = (await sandbox.set_clock("2026-11-20T15:00:00+00:00", frozen=True))["epoch"]
    original = await budget(sandbox, adset)
    for cents in (original + 100, original + 200, original + 300, original + 400):  # 4 edits in Ads Manager
        await sandbox.edit_object(adset, daily_budget=cents)
    current = original + 400
    target = current * 6 // 5  # +20 %: within the step limit, and leadwire's own log holds no change this hour
    raise_ = command("set_budget", object_id=adset, level="adset", amount_minor=target)

    with pytest.raises(RetryLater, match="1487632") as retry:
        await worker.execute(raise_)
    assert retry.value.delay > 3600, "retried once Meta's hour-long block is surely over"
    row = await db.fetchrow("select status, plan from campaign_commands where command_id = $1",
                            raise_.payload.root.command_id)
    assert row["status"] == "applying"  # Meta's throttle: retried later
    assert await budget(sandbox, adset) == current
    # Meta's answer counts toward the hourly limit as Meta sees it: within the hour another change is refused by
    # leadwire's own guardrail, without a call to Meta.
    await sandbox.reset_calls()
    other = await worker.execute(command("change_budget", object_id=adset, level="adset", percent=-10))
    assert other is not None
    assert (other.status, other.guardrail) == ("refused", "budget_changes_per_hour")
    assert "613/1487632" in other.detail
    assert await writes_to(sandbox, adset) == []
    # Meta blocks budget changes only: pausing the ad set still works within the hour.
    paused = await worker.execute(command("pause", object_id=adset, level="adset"))
    assert paused is not None
    assert paused.status == "ok", paused.detail

    # An hour later Meta's block is over; the operator sets $20 in Ads Manager, then the raise is retried.
    await move_clock(sandbox, start + 61 * 60)
    await sandbox.edit_object(adset, daily_budget=2000)
    await sandbox.reset_calls()
    result = await worker.execute(raise_)

    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "changed_elsewhere"), result.detail
    assert "$20.00" in result.detail
    assert result.before["daily_budget"] == 2000
    assert result.after == {}
    assert await budget(sandbox, adset) == 2000, "the operator's budget is untouched"
    assert await writes_to(sandbox, adset) == []
    row = await db.fetchrow("select status from campaign_commands where command_id = $1",
                            raise_.payload.root.command_id)
    assert row["status"] == "refused"
    assert await worker.execute(raise_) is None, "finished: a later delivery does not act"


async def test_a_retry_with_nothing_changed_re_runs_every_guardrail(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    """An interrupted attempt whose plan was never applied (Meta still shows the starting budget) is decided
    again, not finished from its plan: a plan that the limits no longer allow is refused."""
    adset = sandbox.state["adsets_by_name"][ADSET]
    current = await budget(sandbox, adset)
    too_far = current * 3  # a stale plan: +200 %, above the step and above 2x the budget leadwire first saw
    message = command("set_budget", object_id=adset, level="adset", amount_minor=too_far, force=True,
                      reason="operator asked")
    cmd = message.payload.root
    await db.execute(
        "insert into campaign_commands (command_id, message_id, kind, object_id, level, requested_by, payload, "
        "status, plan, applying_at) values ($1, $2, 'set_budget', $3, 'adset', 'test', '{}'::jsonb, "
        "'applying', $4::jsonb, now())",
        cmd.command_id, message.message_id, adset, {"daily_budget": too_far, "from": current},
    )
    await sandbox.reset_calls()

    result = await worker.execute(message)

    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "hard_max_budget"), result.detail
    assert await budget(sandbox, adset) == current
    assert await writes_to(sandbox, adset) == []


async def test_an_interrupted_pause_of_an_object_changed_elsewhere_is_abandoned(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool
) -> None:
    adset = sandbox.state["adsets_by_name"][ADSET]
    message = command("pause", object_id=adset, level="adset")
    cmd = message.payload.root
    # An attempt planned ACTIVE -> PAUSED and did not finish; meanwhile someone archived the ad set.
    await db.execute(
        "insert into campaign_commands (command_id, message_id, kind, object_id, level, requested_by, payload, "
        "status, plan, applying_at) values ($1, $2, 'pause', $3, 'adset', 'test', '{}'::jsonb, "
        "'applying', $4::jsonb, now())",
        cmd.command_id, message.message_id, adset, {"status": "PAUSED", "from": "ACTIVE"},
    )
    await sandbox.edit_object(adset, status="ARCHIVED")
    await sandbox.reset_calls()

    result = await worker.execute(message)

    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "changed_elsewhere"), result.detail
    assert await writes_to(sandbox, adset) == []
