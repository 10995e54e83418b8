"""Campaign objects over raw HTTP: Meta's validation, money as minor-unit strings, statuses, limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fixtures.sandbox import SandboxHandle

CAMPAIGN = {
    "name": "c",
    "objective": "OUTCOME_LEADS",
    "special_ad_categories": "[]",
    "is_adset_budget_sharing_enabled": "false",
    "status": "PAUSED",
}


async def _adset(sandbox: SandboxHandle, campaign_id: str, **extra: Any) -> tuple[int, Any]:
    params = {
        "name": "s",
        "campaign_id": campaign_id,
        "daily_budget": "2000",
        "billing_event": "IMPRESSIONS",
        "optimization_goal": "LEAD_GENERATION",
        "targeting": json.dumps({"geo_locations": {"countries": ["US"]}}),
        "promoted_object": json.dumps({"page_id": sandbox.state["page_id"]}),
        "status": "ACTIVE",
        **extra,
    }
    status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/adsets", **params)
    return status, body


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"objective": "LEAD_GENERATION"}, "objective"),
        ({"special_ad_categories": None}, "special_ad_categories"),
        ({"is_adset_budget_sharing_enabled": None}, "is_adset_budget_sharing_enabled"),
        ({"status": "ARCHIVED"}, "status"),
        ({"daily_budget": "12.50", "is_adset_budget_sharing_enabled": None}, "daily_budget"),
        ({"special_ad_categories": '["HOUSING"]'}, "special_ad_category_country"),
    ],
)
async def test_campaign_create_validation(sandbox: SandboxHandle, override: dict, needle: str) -> None:
    params = {**CAMPAIGN, **override}
    status, _, body = await sandbox.graph("POST", f"{sandbox.account_id}/campaigns", **params)
    assert status == 400
    assert body["error"]["code"] == 100
    assert needle in json.dumps(body["error"])


async def test_campaign_json_body_and_read_back(sandbox: SandboxHandle) -> None:
    status, _, body = await sandbox.graph(
        "POST",
        f"{sandbox.account_id}/campaigns",
        json_body={
            "name": "CBO",
            "objective": "OUTCOME_LEADS",
            "special_ad_categories": ["NONE"],
            "daily_budget": 5000,
            "status": "ACTIVE",
        },
    )
    assert status == 200
    status, _, read = await sandbox.graph("GET", body["id"], fields="name,daily_budget,effective_status,objective")
    assert read == {
        "name": "CBO",
        "daily_budget": "5000",
        "effective_status": "ACTIVE",
        "objective": "OUTCOME_LEADS",
        "id": body["id"],
    }


async def test_effective_status_and_filters(sandbox: SandboxHandle) -> None:
    status, _, body = await sandbox.graph(
        "GET", f"{sandbox.account_id}/adsets", fields="name,effective_status", effective_status='["CAMPAIGN_PAUSED"]'
    )
    assert status == 200
    assert {a["effective_status"] for a in body["data"]} == {"CAMPAIGN_PAUSED"}
    assert len(body["data"]) == 2
    campaign = sandbox.state["accounts"][sandbox.account_id]["campaigns"][0]
    filtering = json.dumps([{"field": "campaign.id", "operator": "IN", "value": [campaign]}])
    _, _, body = await sandbox.graph("GET", f"{sandbox.account_id}/ads", fields="campaign_id", filtering=filtering)
    assert body["data"]
    assert {a["campaign_id"] for a in body["data"]} == {campaign}
    _, _, edge = await sandbox.graph("GET", f"{campaign}/adsets", fields="name")
    assert len(edge["data"]) == 4


async def test_adset_budget_rules_and_budget_change_limit(sandbox: SandboxHandle) -> None:
    _, _, camp = await sandbox.graph("POST", f"{sandbox.account_id}/campaigns", **CAMPAIGN)
    status, body = await _adset(sandbox, camp["id"], daily_budget="")
    assert status == 400
    status, body = await _adset(sandbox, camp["id"])
    assert status == 200
    adset = body["id"]
    for amount in (2100, 2200, 2300, 2400):
        status, _, body = await sandbox.graph("POST", adset, daily_budget=str(amount))
        assert (status, body) == (200, {"success": True})
    status, _, body = await sandbox.graph("POST", adset, daily_budget="2500")
    assert status == 400
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (613, 1487632)
    status, _, body = await sandbox.graph("POST", adset, name="renamed")  # non-budget edits still fine
    assert status == 200
    _, _, read = await sandbox.graph("GET", adset, fields="daily_budget,name")
    assert read["daily_budget"] == "2400"


async def test_a_refused_budget_change_blocks_budget_changes_for_an_hour(sandbox: SandboxHandle) -> None:
    """Meta: the 5th budget change within an hour is refused and budget changes stay blocked for an hour from
    then, edits in Ads Manager included; the sandbox's clock measures the hour."""
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    start = (await sandbox.set_clock("2026-11-20T15:00:00+00:00", frozen=True))["epoch"]

    async def at(minutes: float) -> None:
        instant = datetime.fromtimestamp(start + minutes * 60, UTC).isoformat()
        await sandbox.control("POST", "clock", {"now": instant, "frozen": True})

    for amount in (2100, 2200, 2300, 2400):
        status, _, body = await sandbox.graph("POST", adset, daily_budget=str(amount))
        assert status == 200, body
    await at(30)
    status, _, body = await sandbox.graph("POST", adset, daily_budget="2500")
    assert (body["error"]["code"], body["error"]["error_subcode"]) == (613, 1487632)

    # From minute 60 the rolling window has room again, but the block runs an hour from the refusal (minute 90),
    # and a refusal during the block does not extend it.
    await at(61)
    status, _, body = await sandbox.graph("POST", adset, daily_budget="2500")
    assert status == 400
    assert body["error"]["error_subcode"] == 1487632
    await at(89)
    with pytest.raises(AssertionError, match="4 times per hour"):
        await sandbox.edit_object(adset, daily_budget=2000)
    await at(91)
    await sandbox.edit_object(adset, daily_budget=2000)
    _, _, read = await sandbox.graph("GET", adset, fields="daily_budget")
    assert read["daily_budget"] == "2000"


async def test_cbo_campaign_rejects_adset_budget(sandbox: SandboxHandle) -> None:
    cbo = sandbox.state["accounts"][sandbox.account_id]["campaigns"][1]
    status, _ = await _adset(sandbox, cbo)
    assert status == 400
    status, _body = await _adset(sandbox, cbo, daily_budget="")
    assert status == 200


async def test_delete_and_deleted_objects_cannot_change(sandbox: SandboxHandle) -> None:
    _, _, camp = await sandbox.graph("POST", f"{sandbox.account_id}/campaigns", **CAMPAIGN)
    status, _, body = await sandbox.graph("DELETE", camp["id"])
    assert (status, body) == (200, {"success": True})
    status, _, body = await sandbox.graph("POST", camp["id"], status="ACTIVE")
    assert status == 400
    assert body["error"]["code"] == 100
    _, _, listed = await sandbox.graph("GET", f"{sandbox.account_id}/campaigns")
    assert camp["id"] not in {c["id"] for c in listed["data"]}
    _, _, read = await sandbox.graph("GET", camp["id"], fields="status,effective_status")
    assert read["effective_status"] == "DELETED"


async def test_pausing_adset_pauses_its_ads(sandbox: SandboxHandle) -> None:
    adset = sandbox.state["adsets_by_name"]["Prospecting - Lookalike"]
    await sandbox.graph("POST", adset, status="PAUSED")
    _, _, ads = await sandbox.graph("GET", f"{adset}/ads", fields="effective_status")
    assert {a["effective_status"] for a in ads["data"]} == {"ADSET_PAUSED"}


async def test_jpy_account_budgets_are_whole_yen(sandbox: SandboxHandle) -> None:
    jpy = sandbox.state["jpy_account"]
    _, _, body = await sandbox.graph("GET", f"{jpy}/adsets", fields="daily_budget")
    assert body["data"][0]["daily_budget"] == "8000"
    _, _, acc = await sandbox.graph("GET", jpy, fields="currency,timezone_name")
    assert acc["currency"] == "JPY"


async def test_ad_and_creative_and_image(sandbox: SandboxHandle) -> None:
    acc = sandbox.account_id
    status, _, img = await sandbox.graph("POST", f"{acc}/adimages", bytes="aGVsbG8=")
    assert status == 200
    assert len(img["images"]["bytes"]["hash"]) == 32
    status, _, _body = await sandbox.graph("POST", f"{acc}/adcreatives", name="x")
    assert status == 400
    spec = {"page_id": sandbox.state["page_id"], "link_data": {"link": "https://example.com", "message": "m"}}
    _, _, creative = await sandbox.graph("POST", f"{acc}/adcreatives", name="x", object_story_spec=json.dumps(spec))
    adset = sandbox.state["adsets_by_name"]["Prospecting - Broad"]
    status, _, ad = await sandbox.graph(
        "POST", f"{acc}/ads", name="a", adset_id=adset, creative=json.dumps({"creative_id": creative["id"]})
    )
    assert status == 200
    _, _, read = await sandbox.graph("GET", ad["id"], fields="creative,adset_id,campaign_id,effective_status")
    assert read["creative"] == {"id": creative["id"]}
    assert read["effective_status"] == "PENDING_REVIEW", "a new ad goes through Meta's review first"


async def test_unknown_edge(sandbox: SandboxHandle) -> None:
    status, _, body = await sandbox.graph("GET", f"{sandbox.account_id}/bogus")
    assert status == 400
    assert body["error"]["code"] == 100
