"""An interrupted rotate_creative (the reserve activated, the ad not yet paused) is finished by its retry, and
abandoned when the ad set changed elsewhere meanwhile; the executor's worker against PostgreSQL and the sandbox."""

from __future__ import annotations

import asyncpg

from contracts.messages import CampaignCommandMessage
from services.campaign_executor.worker import Worker
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_executor_rechecks import command, worker, writes_to  # noqa: F401

ADSET = "Prospecting - Interests"


async def interrupted(db: asyncpg.Pool, sandbox: SandboxHandle) -> tuple[CampaignCommandMessage, str, str]:
    """A rotation of the ad set's first ad for its second, whose first attempt committed its plan and activated the
    reserve (the process died before the pause)."""
    adset = sandbox.state["adsets_by_name"][ADSET]
    status, _, body = await sandbox.graph("GET", f"{adset}/ads", fields="id")
    assert status == 200, body
    ad, reserve = sorted((a["id"] for a in body["data"]), key=int)[:2]
    await sandbox.edit_object(reserve, name="[reserve] 1 video B", status="ACTIVE")
    message = command("rotate_creative", object_id=ad, reserve_ad_id=reserve, adset_id=adset)
    await db.execute(
        "insert into campaign_commands (command_id, message_id, kind, object_id, level, requested_by, payload, "
        "status, plan, applying_at) values ($1, $2, 'rotate_creative', $3, 'ad', 'test', '{}'::jsonb, "
        "'applying', $4::jsonb, now())",
        message.payload.root.command_id, message.message_id, ad,
        {"ad": "PAUSED", "reserve": "ACTIVE", "from": {"ad": "ACTIVE", "reserve": "PAUSED"}},
    )
    await sandbox.reset_calls()
    return message, ad, reserve


async def status_of(sandbox: SandboxHandle, object_id: str) -> str:
    status, _, body = await sandbox.graph("GET", object_id, fields="status")
    assert status == 200, body
    return str(body["status"])


async def test_the_retry_of_an_interrupted_rotation_pauses_the_ad_once(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool  # noqa: F811
) -> None:
    message, ad, reserve = await interrupted(db, sandbox)

    result = await worker.execute(message)

    assert result is not None
    assert result.status == "ok", result.detail
    assert (await status_of(sandbox, ad), await status_of(sandbox, reserve)) == ("PAUSED", "ACTIVE")
    assert await writes_to(sandbox, reserve) == [], "the reserve is not activated twice"
    assert len(await writes_to(sandbox, ad)) == 1


async def test_an_interrupted_rotation_whose_reserve_was_archived_meanwhile_is_abandoned(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool  # noqa: F811
) -> None:
    message, ad, reserve = await interrupted(db, sandbox)
    await sandbox.edit_object(reserve, status="ARCHIVED")
    await sandbox.reset_calls()

    result = await worker.execute(message)

    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "not_in_adset"), result.detail
    assert await status_of(sandbox, ad) == "ACTIVE", "the ad set keeps its active ad"
    assert await writes_to(sandbox, ad) == []
