"""rotate_creative against Meta's ad review (issue 20): a reserve that is in review, disapproved or has issues is
not ready (activating it would not bring delivery back), so the executor refuses with `reserve_not_ready` and
changes nothing; once Meta approves it, the same rotation goes through and the reserve delivers. The executor's
worker against PostgreSQL and the sandbox, whose review state is set through its control API."""

from __future__ import annotations

import asyncpg
import pytest

from services.campaign_executor.worker import Worker
from tests.fixtures.sandbox import SandboxHandle
from tests.integration.test_executor_rechecks import command, worker, writes_to  # noqa: F401
from tests.integration.test_rotation_rechecks import ADSET, status_of


async def ads_of_adset(sandbox: SandboxHandle) -> tuple[str, str, str]:
    """The ad set, its first ad (ACTIVE) and its second, made a PAUSED reserve in Ads Manager."""
    adset = sandbox.state["adsets_by_name"][ADSET]
    status, _, body = await sandbox.graph("GET", f"{adset}/ads", fields="id")
    assert status == 200, body
    ad, reserve = sorted((a["id"] for a in body["data"]), key=int)[:2]
    await sandbox.edit_object(reserve, name="[reserve] 1 video B", status="PAUSED")
    return adset, ad, reserve


@pytest.mark.parametrize("review", ["PENDING_REVIEW", "DISAPPROVED", "WITH_ISSUES"])
async def test_a_reserve_meta_has_not_approved_is_not_ready_and_nothing_changes(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool, review: str  # noqa: F811
) -> None:
    adset, ad, reserve = await ads_of_adset(sandbox)
    shown = await sandbox.review(reserve, review)
    assert (shown["effective_status"], shown["configured_status"]) == (review, "PAUSED")
    await sandbox.reset_calls()

    result = await worker.execute(command("rotate_creative", object_id=ad, reserve_ad_id=reserve, adset_id=adset))

    assert result is not None
    assert (result.status, result.guardrail) == ("refused", "reserve_not_ready"), result.detail
    assert review in result.detail
    assert (await status_of(sandbox, ad), await status_of(sandbox, reserve)) == ("ACTIVE", "PAUSED")
    assert await writes_to(sandbox, ad) == await writes_to(sandbox, reserve) == [], "nothing written to Meta"


async def test_once_approved_the_reserve_is_rotated_in_and_delivers(
    worker: Worker, sandbox: SandboxHandle, db: asyncpg.Pool  # noqa: F811
) -> None:
    await sandbox.set_clock("2026-11-20T15:00:00+00:00", frozen=True)
    adset, ad, reserve = await ads_of_adset(sandbox)
    await sandbox.review(reserve, "DISAPPROVED", ad_review_feedback={"global": {"Misleading claims": "Fix it"}})
    _, _, shown = await sandbox.graph("GET", reserve, fields="effective_status,ad_review_feedback")
    assert shown["ad_review_feedback"] == {"global": {"Misleading claims": "Fix it"}}
    refused = await worker.execute(command("rotate_creative", object_id=ad, reserve_ad_id=reserve, adset_id=adset))
    assert refused is not None
    assert refused.guardrail == "reserve_not_ready"

    await sandbox.review(reserve, "APPROVED")
    done = await worker.execute(command("rotate_creative", object_id=ad, reserve_ad_id=reserve, adset_id=adset))

    assert done is not None
    assert done.status == "ok", done.detail
    assert (await status_of(sandbox, ad), await status_of(sandbox, reserve)) == ("PAUSED", "ACTIVE")
    assert await impressions_at(sandbox, reserve, "16:00") < await impressions_at(sandbox, reserve, "21:00"), \
        "the approved reserve delivers once active"


async def impressions_at(sandbox: SandboxHandle, ad: str, hour: str) -> int:
    await sandbox.set_clock(f"2026-11-20T{hour}:00+00:00", frozen=True)
    _, _, insights = await sandbox.graph("GET", f"{ad}/insights", fields="impressions", date_preset="today")
    return int(insights["data"][0]["impressions"]) if insights["data"] else 0
