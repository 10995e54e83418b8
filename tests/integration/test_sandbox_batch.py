"""Graph batch over raw HTTP: order, per-item errors and headers, JSON-string bodies, limits, references."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from tests.fixtures.sandbox import SandboxHandle


async def _batch(sandbox: SandboxHandle, ops: list[dict], path: str = "", **extra: str) -> tuple[int, object]:
    data = {"batch": json.dumps(ops), "access_token": sandbox.token, **extra}
    async with sandbox.session.post(f"{sandbox.graph_url}/{path}", data=data) as resp:
        return resp.status, await resp.json()


async def test_batch_items_in_order_with_json_string_bodies(sandbox: SandboxHandle) -> None:
    acc = sandbox.account_id
    ops = [
        {"method": "GET", "relative_url": f"{acc}?fields=name"},
        {"method": "GET", "relative_url": "v26.0/404404404"},
        {
            "method": "POST",
            "relative_url": f"{acc}/campaigns",
            "body": urlencode(
                {
                    "name": "b",
                    "objective": "OUTCOME_LEADS",
                    "special_ad_categories": "[]",
                    "is_adset_budget_sharing_enabled": "false",
                }
            ),
        },
        {"method": "GET", "relative_url": f"/v26.0/{acc}/insights?date_preset=yesterday"},
    ]
    status, items = await _batch(sandbox, ops)
    assert status == 200
    assert [i["code"] for i in items] == [200, 400, 200, 200]
    assert isinstance(items[0]["body"], str)
    assert json.loads(items[0]["body"])["name"] == "Leadwire Demo (USD)"
    assert json.loads(items[1]["body"])["error"]["error_subcode"] == 33
    headers = {h["name"]: h["value"] for h in items[3]["headers"]}
    assert json.loads(headers["X-Business-Use-Case-Usage"])["1000000001"][0]["type"] == "ads_insights"
    assert "X-FB-Ads-Insights-Throttle" in headers
    calls = await sandbox.calls()
    assert calls["total"] == 4
    assert calls["by_scope"]["buc:1000000001:ads_management"] == 2


async def test_batch_max_50(sandbox: SandboxHandle) -> None:
    ops = [{"method": "GET", "relative_url": sandbox.account_id}] * 51
    status, body = await _batch(sandbox, ops)
    assert status == 400
    assert "Maximum batch size is 50" in body["error"]["message"]


async def test_batch_items_count_against_limits(sandbox: SandboxHandle) -> None:
    await sandbox.limits(buc={"ads_management": {"budget": 3, "window_seconds": 60}})
    ops = [{"method": "GET", "relative_url": sandbox.account_id}] * 5
    _, items = await _batch(sandbox, ops)
    assert [i["code"] for i in items] == [200, 200, 200, 400, 400]
    assert json.loads(items[3]["body"])["error"]["code"] == 80004


async def test_batch_null_items_and_headers_off(sandbox: SandboxHandle) -> None:
    await sandbox.faults(batch_null_rate=0.5)
    ops = [{"method": "GET", "relative_url": sandbox.account_id}] * 20
    _, items = await _batch(sandbox, ops, include_headers="false")
    assert None in items
    assert any(i is not None for i in items)
    assert all("headers" not in i for i in items if i is not None)


async def test_batch_jsonpath_reference(sandbox: SandboxHandle) -> None:
    acc = sandbox.account_id
    ops = [
        {
            "method": "POST",
            "name": "camp",
            "relative_url": f"{acc}/campaigns",
            "body": urlencode(
                {
                    "name": "ref",
                    "objective": "OUTCOME_LEADS",
                    "special_ad_categories": "[]",
                    "is_adset_budget_sharing_enabled": "false",
                }
            ),
        },
        {"method": "GET", "relative_url": "{result=camp:$.id}?fields=name"},
    ]
    _, items = await _batch(sandbox, ops)
    assert json.loads(items[1]["body"])["name"] == "ref"


async def test_unversioned_batch_items_fail_like_marketing_calls(sandbox: SandboxHandle) -> None:
    data = {
        "batch": json.dumps(
            [
                {"method": "GET", "relative_url": sandbox.account_id},
                {"method": "GET", "relative_url": f"v26.0/{sandbox.account_id}"},
            ]
        ),
        "access_token": sandbox.token,
    }
    async with sandbox.session.post(f"{sandbox.url}/", data=data) as resp:
        items = await resp.json()
    assert [i["code"] for i in items] == [400, 200]
